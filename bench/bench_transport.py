"""The transport against the one it replaced, aiohttp and hey, on one minimal loopback target.

Prints: the highest open-loop rate one replay process sustains with p99 schedule_lag <= 10 ms with
today's transport (llhttp), with the transport it replaced (the hand parser, loaded at run time
from git: the parent of the commit that added replay/http1.py), and with aiohttp; hey's
closed-loop rate (best concurrency) on the same target; and the pool alone, closed loop (32 in
flight), in requests/s and sender CPU per request, old against new (a whole replay's CPU per
request is not shown: the scheduler spins before each deadline, so it measures the idle time).

    python -m bench transport                              # about a minute and a half
    GATERUSH_BENCH_OLD_COMMIT=<sha> python -m bench transport   # compare with another commit's
    GATERUSH_BENCH_SECONDS=4 python -m bench transport     # longer traces per step (default 2 s)

The search and the machine-quiet wait are bench_replay's; here the wait is capped at
GATERUSH_BENCH_QUIET_WAIT seconds (default 1) per run, so a shared machine does not stretch the
bench to many minutes: it says how many runs started on a noisy machine.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from unittest import mock

import uvloop

import replay.transport
from bench import bench_replay
from bench.bench_replay import (
    BODY,
    ENV,
    PATH,
    hey_rate,
    machine_state,
    sustained,
    wait_quiet,
)
from replay.http1 import Request, encode_request
from tests.replay.loopback_server import LoopbackServer

ROOT = Path(__file__).resolve().parent.parent
NOISY = {"runs": 0}


def old_commit() -> str:
    """The commit whose transport this one replaced: the parent of the one that added http1.py."""
    if os.environ.get("GATERUSH_BENCH_OLD_COMMIT"):
        return os.environ["GATERUSH_BENCH_OLD_COMMIT"]
    added = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", "replay/http1.py"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    if not added:
        raise SystemExit("bench transport: no commit adds replay/http1.py (not a git checkout?)")
    return added[-1] + "^"


def load_old_transport(commit: str, tmp: Path) -> ModuleType:
    """replay/transport.py as it was at `commit`, imported from a temporary file."""
    src = subprocess.run(["git", "show", f"{commit}:replay/transport.py"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    path = tmp / "old_transport.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("old_transport", path)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def quiet_briefly() -> None:
    """bench_replay's quiet(), with a short cap on the wait."""
    if not wait_quiet(max_wait=float(os.environ.get("GATERUSH_BENCH_QUIET_WAIT", "1"))):
        NOISY["runs"] += 1


def open_loop(
    tmp: Path, url: str, transport: str, raw_class: type | None = None
) -> tuple[int, list[str]]:
    """bench_replay.sustained through the replay engine, with `raw_class` as the raw transport."""
    seconds = float(os.environ.get("GATERUSH_BENCH_SECONDS", "2"))
    with mock.patch.object(bench_replay, "quiet", quiet_briefly):
        if raw_class is None:
            return sustained(tmp, url, transport, seconds=seconds)
        with mock.patch.object(replay.transport, "RawTransport", raw_class):
            return sustained(tmp, url, transport, seconds=seconds)


def closed_loop(
    cls: type, url: str, in_flight: int = 32, seconds: float = 2.0
) -> tuple[float, float, int]:
    """(requests/s, sender CPU us per request, errors) keeping `in_flight` requests on the pool."""

    async def main() -> tuple[float, float, int]:
        tr = cls()
        await tr.start({url: in_flight})
        headers = (("apikey", ENV["SUPABASE_ANON_KEY"]), ("Content-Type", "application/json"))
        data = encode_request(
            Request(url, "POST", PATH, headers, BODY.encode()), tr.host_header(url)
        )
        count = [0, 0]
        end = time.monotonic() + seconds
        finished = asyncio.get_running_loop().create_future()
        live = [in_flight]

        def done(sent_t, done_t, status, body, nsent, nrecv, error) -> None:
            count[0] += 1
            count[1] += status != 200
            if time.monotonic() < end:
                tr.send_bytes(url, data, done)
            else:
                live[0] -= 1
                if not live[0]:
                    finished.set_result(None)

        c0, t0 = time.process_time(), time.monotonic()
        for _ in range(in_flight):
            tr.send_bytes(url, data, done)
        await finished
        c1, t1 = time.process_time(), time.monotonic()
        await tr.close()
        return count[0] / (t1 - t0), (c1 - c0) / count[0] * 1e6, count[1]

    quiet_briefly()
    return uvloop.run(main())


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="gaterush-bench-transport-"))
    try:
        commit = old_commit()
        sha = subprocess.run(["git", "rev-parse", "--short", commit], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        old = load_old_transport(commit, tmp)
        with LoopbackServer(record=False) as server:
            url = server.url
            print(f"command: {sys.executable} -m bench transport")
            print(
                f"target: minimal loopback server {url} (uvloop, one process); machine: {os.cpu_count()} cores"
            )
            print(f"old transport: replay/transport.py at {sha} (hand parser), loaded from {tmp}")
            print(f"machine now: {machine_state()}")
            print(
                "\nthe pool alone, closed loop, 32 requests in flight, 2 s (req/s, sender CPU per request):"
            )
            for name, cls in (
                ("old (hand parser)", old.RawTransport),
                ("new (llhttp)", replay.transport.RawTransport),
            ):
                rate, us, errors = closed_loop(cls, url)
                print(f"  {name:18s} {rate:8,.0f} req/s  {us:5.1f} us/req  errors {errors}")
            contenders = (
                ("new (llhttp)", "raw", None),
                (f"old ({sha}, hand parser)", "raw", old.RawTransport),
                ("aiohttp", "aiohttp", None),
            )
            print(
                "\nhighest rate one replay process sustains with p99 schedule_lag <= 10 ms (exponential gaps):"
            )
            figures = {}
            for name, transport, cls in contenders:
                rate, log = open_loop(tmp, url, transport, cls)
                print("\n".join(log))
                print(f"  {name}: {rate:,}/s")
                figures[name] = rate
            new_rate, old_rate, aio_rate = figures.values()
            hey = hey_rate(url)
            print("\nclosed-loop comparison on the same target:")
            print(
                f"  hey: {hey[0]:,.0f} req/s (best concurrency {hey[1]})"
                if hey
                else "  hey: not installed (bench/install-tools.sh)"
            )
            print()
            for label, other in (
                ("old", old_rate),
                ("aiohttp", aio_rate),
                ("hey", hey[0] if hey else 0),
            ):
                ratio = (
                    f"{new_rate / other:.2f}"
                    if other and new_rate
                    else "n/a (a rate of 0: see the machine state)"
                )
                print(f"  new / {label:7s} = {ratio}")
            print(
                f"machine now: {machine_state()}; runs started on a noisy machine: {NOISY['runs']}"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
