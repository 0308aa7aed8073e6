"""The replay engine: a trace, a target and options in; a result log and run statistics out.

The local stand-in runs in this process (a thread), so with ``--target local`` even one worker
is a separate process: the stand-in's work must not hold up the sender (one GIL each).

``run_replay`` checks the keys (a live Stripe key stops everything before the first request),
starts the local stand-in if asked, opens the trace and the result log, and runs the scheduler:
in this process for ``workers == 1``, else in ``workers`` processes that shard the actors
(``shard_of``), start at one agreed instant (CLOCK_MONOTONIC is shared by every process), and
ship their rows to this process, which alone writes the result log and the progress line.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import math
import multiprocessing
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import IO, Any, Protocol

import msgpack

from replay.builders import STRIPE_API, BuildContext, Keys, public_url
from replay.metrics import request_failed
from replay.profile import load_profile
from replay.realtime import Realtime
from replay.resultlog import DROPPED_EVENTS, ResultHeader, ResultWriter
from replay.safety import (
    check_keys,
    default_rate_caps,
    format_plan,
    is_loopback,
    make_plan,
    merge_caps,
    redact,
)
from replay.scheduler import ScheduleOptions, Scheduler, shard_of
from replay.transport import make_transport
from traces.event import TARGET_WEBHOOK, Event
from traces.io import in_order, open_reader

now = time.monotonic
START_LEAD_S = 0.3  # between agreeing on the start instant and the first deadline


class LocalTarget(Protocol):
    """What start_local's context manager yields (staging's stand-in)."""

    url: str
    anon_key: str
    webhook_secret: str
    stripe_key: str


StartLocal = Callable[..., contextlib.AbstractContextManager[LocalTarget]]


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """Everything a replay needs besides the keys (which come from the environment only)."""

    trace: str
    out: str
    target: str = "local"  # local | env ($SUPABASE_URL) | http(s)://... (a Supabase project URL)
    speed: float = 1.0
    max_in_flight: int = 10_000
    workers: int = 1
    stripe: str = "standin"  # standin | real | http(s)://... (a Stripe API stand-in)
    profile: str | None = None
    rate_caps: Mapping[str, float] = field(default_factory=dict)
    timeout: float = 60.0
    transport: str = "raw"
    run_id: str | None = None
    warm: int = 8  # keep-alive connections opened per origin before the start
    connections: int | None = None  # cap on connections per origin (None: as many as in flight)
    progress: bool = True


@dataclass(slots=True)
class ReplayResult:
    """What a finished replay produced."""

    header: ResultHeader
    out: Path
    rows: int
    sent: int
    errors: int
    dropped: int
    secrets: list[str]  # the secret values in force (to check outputs); never print them


def keys_from_env(env: Mapping[str, str]) -> Keys:
    """The keys from SUPABASE_ANON_KEY, STRIPE_TEST_SK and STRIPE_WEBHOOK_SECRET."""
    return Keys(
        anon_key=env.get("SUPABASE_ANON_KEY", ""),
        stripe_key=env.get("STRIPE_TEST_SK", ""),
        webhook_secret=env.get("STRIPE_WEBHOOK_SECRET", ""),
    )


def new_run_id() -> str:
    """A fresh run id: sortable by time, unique enough to clean up after."""
    return time.strftime("gr-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)


class Progress:
    """Counts rows as they are written and prints the live line on stderr."""

    def __init__(self, expected: int, duration_s: float, stream: IO[str] | None) -> None:
        self.expected = expected
        self.duration_s = duration_s
        self.stream = stream
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.done = self.errors = self.dropped = 0
        self.hist = [0] * 256
        self.t0 = now()
        self.last_t = self.t0
        self.last_done = 0
        self.last_print = 0.0

    def on_row(self, row: tuple) -> None:
        """Count one result row."""
        metric = row[13]
        if metric is None:
            self.done += 1
            if request_failed(row[1], row[7], row[8], row[11], row[12]):
                self.errors += 1
            d = row[6] - row[5]
            self.hist[min(255, int(math.log2(max(0, d) + 1) * 8))] += 1
        elif metric == DROPPED_EVENTS:
            self.dropped += 1

    def p95_ms(self) -> float | None:
        """Approximate p95 of http_req_duration so far (ms)."""
        total = sum(self.hist)
        if not total:
            return None
        acc = 0
        for i, c in enumerate(self.hist):
            acc += c
            if acc >= 0.95 * total:
                return (2 ** ((i + 1) / 8) - 1) / 1000
        return None

    def line(self) -> str:
        """The progress line: elapsed, sent/expected, rate, p95 so far, errors, drops."""
        t = now()
        rate = (self.done - self.last_done) / max(1e-9, t - self.last_t)
        self.last_t, self.last_done = t, self.done
        p95 = self.p95_ms()
        return (
            f"replay {t - self.t0:6.1f}s{f'/{self.duration_s:.1f}s' if self.duration_s else ''}  sent {self.done}/{self.expected}  "
            f"{rate:,.0f}/s  p95 {'-' if p95 is None else f'{p95:.1f} ms'}  errors {self.errors}  dropped {self.dropped}"
        )

    def tick(self, final: bool = False) -> None:
        """Print the line (every second on a terminal, every 10 s in a log, and at the end)."""
        if self.stream is None:
            return
        t = now()
        every = 1.0 if self.tty else 10.0
        if not final and t - self.last_print < every:
            return
        self.last_print = t
        text = self.line()
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _origins(ctx: BuildContext, targets: Mapping[str, int]) -> dict[str, int]:
    origins: dict[str, int] = {}
    for t in targets:
        kind = t.partition(":")[0]
        if kind in ("rpc", "rest", "fn"):
            origins.setdefault(ctx.supabase[0], 0)
        elif kind == "stripe":
            origins.setdefault(ctx.stripe[0], 0)
    return origins


def _install_uvloop() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass


@contextlib.contextmanager
def _quiet_gc() -> Iterator[None]:
    """Fewer, later collections while sending: a full collection is a pause of milliseconds."""
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def _events(trace: str, shard: int, workers: int) -> Iterator[Event]:
    with open_reader(trace) as r:
        for ev in in_order(r, trace):
            if ev.target is not None and (
                workers == 1
                or shard_of(ev.actor, workers) == shard
                or ev.target.startswith("realtime:")  # every worker watches: see replay.realtime
            ):
                yield ev


async def _run_one(ctx: BuildContext, opts: ScheduleOptions, cfg: ReplayConfig, origins: dict[str, int],
                   trace: str, shard: int, workers: int, sink: Callable[[tuple], None],
                   get_start: Callable[[], Any], tick: Callable[[], None] | None) -> Any:  # fmt: skip
    """Warm up, agree on the start instant, send every event of this shard; the Scheduler's stats."""
    transport = make_transport(cfg.transport, cfg.timeout, cfg.connections)
    await transport.start({o: (cfg.warm if n == 0 else n) for o, n in origins.items()})
    start = await get_start()
    sched: Scheduler | None = None

    def us(t: float) -> int:
        return round((t - start) * 1e6)

    realtime = Realtime(ctx, sink, us, lambda s: redact(s, ctx.keys.values()), shard, workers)
    sched = Scheduler(ctx, transport, sink, start, opts, realtime)

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.2)
            if tick is not None:
                tick()

    tk = asyncio.get_running_loop().create_task(ticker())
    try:
        stats = await sched.run(_events(trace, shard, workers))
    finally:
        tk.cancel()
        await realtime.close()
        await transport.close()
    return stats


def _worker_main(shard: int, workers: int, cfg: ReplayConfig, ctx: BuildContext, opts: ScheduleOptions,
                 origins: dict[str, int], conn: Connection) -> None:  # fmt: skip
    """A worker process: send one shard's events, shipping packed rows to the parent."""
    _install_uvloop()
    packer = msgpack.Packer(use_bin_type=True)
    buf = bytearray()
    count = 0

    def sink(row: tuple) -> None:
        nonlocal count
        buf.extend(packer.pack(list(row)))
        count += 1

    def ship() -> None:
        nonlocal count
        if buf:
            conn.send(("rows", bytes(buf), count))
            buf.clear()
            count = 0

    async def get_start() -> float:
        conn.send(("ready",))
        loop = asyncio.get_running_loop()
        msg = await loop.run_in_executor(None, conn.recv)
        return float(msg[1])

    async def main() -> Any:
        return await _run_one(
            ctx, opts, cfg, origins, cfg.trace, shard, workers, sink, get_start, ship
        )

    try:
        with _quiet_gc():
            stats = asyncio.run(main())
        ship()
        conn.send(("done", stats.sent, stats.errors, stats.dropped))
    except Exception as e:  # noqa: BLE001 - reported to the parent, which fails the run
        with contextlib.suppress(Exception):
            conn.send(("error", redact(f"{type(e).__name__}: {e}", ctx.keys.values())))
    finally:
        conn.close()


class ReplayError(Exception):
    """The replay could not run (a worker failed, a target is missing): the message says why."""


def run_replay(cfg: ReplayConfig, env: Mapping[str, str] | None = None, start_local: StartLocal | None = None,
               progress: IO[str] | None = sys.stderr, dry_run_out: IO[str] | None = None,
               thresholds: Mapping[str, list[str]] | None = None) -> ReplayResult | None:  # fmt: skip
    """Replay a trace at a target, writing the result log; None for a dry run (the plan is printed).

    `thresholds` (k6 mapping) replace the trace's in the result header. Raises SafetyError (live
    keys, caps) and ReplayError/ValueError/TraceError for bad input, all before anything is sent.
    """
    env = os.environ if env is None else env
    keys = keys_from_env(env)
    check_keys(keys, cfg.stripe, env)
    if cfg.workers < 1:
        raise ValueError(f"--workers: expected an integer >= 1, got {cfg.workers}")
    if cfg.stripe not in ("standin", "real") and not cfg.stripe.startswith(("http://", "https://")):
        raise ValueError(
            f"--stripe: expected standin, real or an http(s):// URL, got {cfg.stripe!r}"
        )
    if cfg.target == "env":
        if not env.get("SUPABASE_URL"):
            raise ValueError("--target env: SUPABASE_URL is not set")
        cfg = dataclasses.replace(cfg, target=env["SUPABASE_URL"])
    if cfg.target != "local" and not cfg.target.startswith(("http://", "https://")):
        raise ValueError(
            f"--target: expected local, env ($SUPABASE_URL) or an http(s):// URL, got {cfg.target!r}"
        )
    profile = load_profile(cfg.profile)
    with open_reader(cfg.trace) as r:
        theader = r.header
    targets = dict(theader.targets)
    local = cfg.target == "local"
    stripe_mode = cfg.stripe
    loopback = local or is_loopback(cfg.target)
    caps = merge_caps(default_rate_caps(targets, loopback, stripe_mode), cfg.rate_caps, stripe_mode)
    opts = ScheduleOptions(
        speed=cfg.speed,
        max_in_flight=cfg.max_in_flight,
        rate_caps={t: c / cfg.workers for t, c in caps.items()},
        drain_s=cfg.timeout + 1.0,  # the transport's own timeout fires first
    )
    if dry_run_out is not None:
        with open_reader(cfg.trace) as r:
            plan = make_plan(r, cfg.speed)
        dry_run_out.write(
            format_plan(
                plan, "local stand-in" if local else public_url(cfg.target), stripe_mode, caps
            )
            + "\n"
        )
        return None
    if not local:
        if not keys.anon_key:
            raise ValueError(
                "--target URL: set SUPABASE_ANON_KEY (the project's anon or publishable key)"
            )
        if TARGET_WEBHOOK in targets and not keys.webhook_secret:
            raise ValueError(
                f"the trace sends Stripe webhooks ({TARGET_WEBHOOK}): set STRIPE_WEBHOOK_SECRET, "
                "the endpoint's whsec_ secret, so they are signed at send time"
            )
    if not local and stripe_mode == "standin" and any(t.startswith("stripe:") for t in targets):
        base = env.get("STRIPE_API_BASE")
        if not base:
            raise ValueError(
                "the trace calls the Stripe API: with --target URL give --stripe URL (a stand-in's Stripe API), "
                "set STRIPE_API_BASE, or opt in to Stripe test mode with --stripe real"
            )
        stripe_mode = base
    if local and start_local is None:
        raise ReplayError(
            "--target local needs the stand-in, which this build does not provide; give --target URL"
        )

    with contextlib.ExitStack() as stack:
        if local:
            standin = stack.enter_context(start_local(inventory=theader.inventory))  # type: ignore[misc]
            supabase_url = standin.url
            keys = Keys(
                anon_key=standin.anon_key,
                # real Stripe test mode keeps the user's key; the stand-in's Stripe subset takes its own
                stripe_key=keys.stripe_key if stripe_mode == "real" else standin.stripe_key,
                webhook_secret=standin.webhook_secret,
            )
            stripe_url = (
                standin.url
                if stripe_mode == "standin"
                else (STRIPE_API if stripe_mode == "real" else stripe_mode)
            )
        else:
            supabase_url = cfg.target
            stripe_url = STRIPE_API if stripe_mode == "real" else stripe_mode
        run_id = cfg.run_id or new_run_id()
        ctx = BuildContext(
            supabase_url=supabase_url,
            run_id=run_id,
            keys=keys,
            stripe_url=stripe_url,
            profile=profile,
        )
        origins = _origins(ctx, targets)
        scenario = theader.scenario or {}
        expected = sum(targets.values())
        last_t_us = _last_t_us(str(cfg.trace)) or 0
        duration_s = last_t_us / 1e6 / cfg.speed
        prog = Progress(expected, duration_s, progress if cfg.progress else None)
        hdr = dict(
            run_id=run_id,
            target_url=public_url(supabase_url),
            trace_path=str(cfg.trace),
            speed=cfg.speed,
            scenario=scenario.get("name"),
            thresholds={
                k: list(v)
                for k, v in (
                    thresholds if thresholds is not None else scenario.get("thresholds") or {}
                ).items()
            },
            expected_requests=expected,
            workers=cfg.workers,
            max_in_flight=cfg.max_in_flight,
            stripe="real"
            if stripe_mode == "real"
            else ("standin" if stripe_mode == "standin" else public_url(stripe_mode)),
            trace_duration_us=last_t_us,
        )
        if cfg.workers == 1 and not local:
            writer, stats = _run_here(cfg, ctx, opts, origins, hdr, prog)
            sent, errors, dropped = stats.sent, stats.errors, stats.dropped
        else:
            writer, sent, errors, dropped = _run_workers(cfg, ctx, opts, origins, hdr, prog)
        prog.tick(final=True)
        return ReplayResult(
            writer.header, Path(cfg.out), writer.rows, sent, errors, dropped, keys.values()
        )
    return None  # pragma: no cover


def _last_t_us(trace: str) -> int | None:
    """The trace's last t_us when the file says so cheaply (Parquet column statistics), else None."""
    if not trace.endswith(".parquet"):
        return None
    try:
        import pyarrow.parquet as pq

        md = pq.ParquetFile(trace).metadata
        col = md.schema.names.index("t_us")
        maxima = [md.row_group(i).column(col).statistics for i in range(md.num_row_groups)]
        return (
            max(int(st.max) for st in maxima if st is not None and st.has_min_max)
            if maxima
            else None
        )
    except (ValueError, OSError, TypeError):
        return None


def _run_here(cfg: ReplayConfig, ctx: BuildContext, opts: ScheduleOptions, origins: dict[str, int],
              hdr: dict[str, Any], prog: Progress) -> tuple[ResultWriter, Any]:  # fmt: skip
    _install_uvloop()
    box: dict[str, Any] = {}

    def sink(row: tuple) -> None:
        box["w"].add(row)
        prog.on_row(row)

    def tick() -> None:
        box["w"].flush()
        prog.tick()

    async def get_start() -> float:
        start = now() + START_LEAD_S
        start_unix_us = time.time_ns() // 1000 + round(START_LEAD_S * 1e6)
        box["w"] = ResultWriter(cfg.out, ResultHeader(start_unix_us=start_unix_us, **hdr))
        box["start"] = start
        return start

    async def main() -> Any:
        return await _run_one(ctx, opts, cfg, origins, cfg.trace, 0, 1, sink, get_start, tick)

    try:
        with _quiet_gc():
            stats = asyncio.run(main())
    finally:
        if "w" in box:
            box["w"].close(end_us=round((now() - box["start"]) * 1e6))
    return box["w"], stats


def _run_workers(cfg: ReplayConfig, ctx: BuildContext, opts: ScheduleOptions, origins: dict[str, int],
                 hdr: dict[str, Any], prog: Progress) -> tuple[ResultWriter, int, int, int]:  # fmt: skip
    mp = multiprocessing.get_context("spawn")
    conns: list[Connection] = []
    procs = []
    for i in range(cfg.workers):
        parent, child = mp.Pipe()
        p = mp.Process(target=_worker_main, args=(i, cfg.workers, cfg, ctx, opts, origins, child), daemon=True,
                       name=f"gaterush-replay-{i}")  # fmt: skip
        p.start()
        child.close()
        conns.append(parent)
        procs.append(p)
    writer: ResultWriter | None = None
    start = 0.0
    try:
        for c, p in zip(conns, procs, strict=True):
            if not c.poll(120):
                raise ReplayError(f"worker {p.name} did not get ready in 120 s")
            msg = c.recv()
            if msg[0] != "ready":
                raise ReplayError(f"worker {p.name}: {msg[1] if len(msg) > 1 else msg}")
        start = now() + START_LEAD_S
        start_unix_us = time.time_ns() // 1000 + round(START_LEAD_S * 1e6)
        writer = ResultWriter(cfg.out, ResultHeader(start_unix_us=start_unix_us, **hdr))
        for c in conns:
            c.send(("start", start))
        sent = errors = dropped = 0
        live = set(conns)
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        while live:
            for c in wait(list(live), timeout=0.2):
                try:
                    msg = c.recv()
                except EOFError:
                    live.discard(c)
                    raise ReplayError("a replay worker died before finishing") from None
                if msg[0] == "rows":
                    writer.add_packed(msg[1], msg[2])
                    unpacker.feed(msg[1])
                    for row in unpacker:
                        prog.on_row(row)
                elif msg[0] == "done":
                    sent += msg[1]
                    errors += msg[2]
                    dropped += msg[3]
                    live.discard(c)
                elif msg[0] == "error":
                    raise ReplayError(f"replay worker failed: {msg[1]}")
            writer.flush()
            prog.tick()
        return writer, sent, errors, dropped
    finally:
        if writer is not None:
            writer.close(end_us=round((now() - start) * 1e6))
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(5)
