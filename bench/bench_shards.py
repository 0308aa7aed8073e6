"""Replay shards on a Dask cluster of this machine (a scheduler and 2 workers on loopback).

Prints, against the same minimal loopback target (tests/replay/loopback_server.py, first-byte
kernel stamps):
- the wall-clock offsets measured between the client and each local worker, and between the two
  workers (the same host: the truth is 0, so the figures are the method's error), with their
  uncertainty (half the best round trip);
- the error the receiver saw at 1,000 requests/s through the cluster (2 workers; an event-day
  trace, one request in ten a Stripe webhook signed at send time): arrival minus schedule, centred
  on the median, p50/p99/p99.9 of its size, each shard's median (how well the shards agreed on the
  start), the offsets that replay measured; beside it one replay process on the same trace in the
  same run, and the replay issue's single-process limits (p99 <= 0.5 ms, p99.9 <= 2 ms);
- the highest open-loop rate 1 and 2 Dask workers sustain (p99 schedule_lag <= 10 ms, every
  request answered; a ladder of rates, up to the first miss, a second try after a miss), and their
  ratio.

    python -m bench shards                            # a few minutes
    GATERUSH_BENCH_SHARD_S=4 python -m bench shards   # longer traces per step (default 2 s; 10 s at 1,000/s)

Timing figures are only as good as the machine is quiet: each timed run waits for a quiet machine
first (bench.bench_replay.quiet) and the bench says how many had to start on a noisy one.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import senders
from bench.bench_replay import QUIET, lag_stats, machine_state, make_trace, quiet
from judge.resultlog import read_results
from replay.clocksync import ClockOffset, measure_offset
from replay.engine import ReplayConfig, run_replay
from replay.scheduler import shard_of
from tests.replay.dask_cluster import DaskCluster
from tests.replay.loopback_server import LoopbackServer
from traces.event import unpack_payload
from traces.io import open_reader

LADDER = (500, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000, 16000, 24000, 32000, 48000)
LIMITS_MS = {99: 0.5, 99.9: 2.0}  # the replay issue's single-process limits at 1,000/s


def run(trace: Path, url: str, scheduler: str, workers: int, out: Path):
    """One replay through the cluster (the client holds no key: the workers have theirs)."""
    cfg = ReplayConfig(trace=str(trace), out=str(out), target=url, workers=workers, scheduler=scheduler,
                       progress=False)  # fmt: skip
    run_replay(cfg, {}, progress=None)
    return read_results(out)


def sustained(
    tmp: Path, url: str, scheduler: str, workers: int, seconds: float
) -> tuple[int, list[str]]:
    """The highest rate of LADDER held with p99 schedule_lag <= 10 ms and no error (up to the first miss)."""
    log: list[str] = []
    held = 0
    for rate in LADDER:
        trace = tmp / f"s_{workers}_{rate}.grt"
        n = make_trace(trace, rate, seconds, seed=rate)
        for attempt in (1, 2):  # a second try after a miss: the machine is shared
            quiet()
            _, table = run(trace, url, scheduler, workers, tmp / "s.grr")
            p50, p99, _ = lag_stats(table)
            errors = int(np.sum(np.asarray(table.column("status").to_numpy()) != 200))
            good = p99 <= 10 and errors == 0 and table.num_rows == n
            log.append(f"    {rate:>6}/s  try {attempt}  schedule_lag p50 {p50:7.2f} ms  p99 {p99:8.2f} ms  "
                       f"errors {errors}  rows {table.num_rows}/{n}  {'ok' if good else 'FAIL'}")  # fmt: skip
            if good:
                break
        trace.unlink()
        if not good:
            break
        held = rate
    return held, log


def offsets(address: str, rounds: int = 5) -> list[str]:
    """Each worker's offset and uncertainty, `rounds` times (as replay measures before a start),
    and the offset between the two workers that follows."""
    from distributed import Client  # noqa: PLC0415

    lines = []
    got: dict[str, list[ClockOffset]] = {}
    with Client(address, timeout="30s") as c:
        for _ in range(rounds):
            for addr in sorted(c.scheduler_info()["workers"]):
                probe = lambda a=addr: c.run(time.time, workers=[a])[a]  # noqa: E731
                got.setdefault(addr, []).append(measure_offset(probe))
    for addr, g in got.items():
        off = [x.offset_s * 1e3 for x in g]
        unc = [x.uncertainty_s * 1e3 for x in g]
        lines.append(f"    client -> worker {addr}: offset {min(off):+.3f} .. {max(off):+.3f} ms, "
                     f"uncertainty {min(unc):.3f} .. {max(unc):.3f} ms ({rounds} measurements of 8 probes)")  # fmt: skip
    if len(got) == 2:
        a, b = got.values()
        between = [(y.offset_s - x.offset_s) * 1e3 for x, y in zip(a, b, strict=True)]
        unc = [(x.uncertainty_s + y.uncertainty_s) * 1e3 for x, y in zip(a, b, strict=True)]
        lines.append(f"    worker -> worker: offset {min(between):+.3f} .. {max(between):+.3f} ms, "
                     f"uncertainty {min(unc):.3f} .. {max(unc):.3f} ms (the two measurements' sum)")  # fmt: skip
    return lines


def _shard_of_keys(trace: Path, workers: int) -> dict[str, int]:
    """The loopback server's key of each request (ticket code or Stripe event id) -> its shard."""
    out = {}
    with open_reader(trace) as r:
        for ev in r:
            if ev.target is not None:
                p = unpack_payload(ev.payload)
                out[str(p.get("ticket_code") or p.get("id"))] = shard_of(ev.actor, workers)
    return out


def pct(err_ms: np.ndarray, q: float) -> float:
    """A percentile of |error| in ms."""
    return float(np.percentile(np.abs(err_ms), q)) if len(err_ms) else float("inf")


def receiver_error(tmp: Path, server: LoopbackServer, scheduler: str, rate: float, seconds: float) -> list[str]:  # fmt: skip
    """Arrival minus schedule at `rate`/s through 2 Dask workers, and one process on the same trace."""
    trace = tmp / "e.grt"
    keys = senders.event_day(trace, rate, seconds, seed=11)
    shards = _shard_of_keys(trace, 2)
    quiet()
    server.set_recording(True)
    header, _ = run(trace, server.url, scheduler, 2, tmp / "e.grr")
    stamps = {k: t for t, k in server.stamps(clear=True)}
    server.set_recording(False)
    got = sorted((k for k in keys if k in stamps), key=keys.get)
    raw = np.array([(stamps[k] - keys[k] / 1e6) * 1e3 for k in got])
    med = float(np.median(raw)) if len(raw) else 0.0
    err = raw - med
    per_shard = {
        s: float(np.median(err[[shards[k] == s for k in got]])) if got else float("nan")
        for s in (0, 1)
    }
    held = all(pct(err, q) <= lim for q, lim in LIMITS_MS.items())
    lines = [
        f"    2 Dask workers {rate:>7,.0f}/s  p50 {pct(err, 50):6.3f}  p99 {pct(err, 99):7.3f}  "
        f"p99.9 {pct(err, 99.9):7.3f}  max {pct(err, 100):8.3f} ms  got {len(got)}/{len(keys)}  "
        f"load {os.getloadavg()[0]:.2f}  {'within' if held else 'OUTSIDE'} the single-process limits",
        f"      each shard's median against the run's: shard 0 {per_shard[0]:+.3f} ms, "
        f"shard 1 {per_shard[1]:+.3f} ms (how well the shards agreed on the start)",
        "      offsets replay measured: "
        + ", ".join(
            f"shard {c['shard']} {c['offset_us'] / 1e3:+.3f} ± {c['uncertainty_us'] / 1e3:.3f} ms"
            for c in header.clocks
        ),  # fmt: skip
    ]
    trace.unlink()
    quiet()
    one = senders.gaterush(tmp, server, rate, seconds, seed=11)  # the same trace, one process
    lines.append("    one process     " + one.line())
    lines.append("    limits (one process, the replay issue): " + ", ".join(f"p{q:g} <= {v:g} ms" for q, v in LIMITS_MS.items()))  # fmt: skip
    return lines


def main() -> None:
    seconds = float(os.environ.get("GATERUSH_BENCH_SHARD_S", "2"))
    tmp = Path(tempfile.mkdtemp(prefix="gaterush-bench-shards-"))
    print(f"machine: {os.cpu_count()} cores; now: {machine_state()}")
    with LoopbackServer(record=False) as server, DaskCluster(tmp, 2, env=senders.ENV) as dc:
        print(f"target: minimal loopback server {server.url}; Dask scheduler {dc.address}, "
              "2 workers (1 thread, no nanny)")  # fmt: skip
        print("\nclock offsets between the client and the local workers (the truth is 0):")
        print("\n".join(offsets(dc.address)))
        err_s = max(10.0, 5 * seconds)
        print(f"\nerror at the receiver at 1,000/s ({err_s:g} s, event-day trace; ms, first-byte kernel "
              "stamp - schedule, centred on the median):")  # fmt: skip
        print("\n".join(receiver_error(tmp, server, dc.url, 1000, err_s)))
        rates = {}
        for w in (1, 2):
            print(
                f"\nhighest open-loop rate with {w} Dask worker{'s' * (w > 1)} ({seconds:g} s traces):"
            )
            rates[w], log = sustained(tmp, server.url, dc.url, w, seconds)
            print("\n".join(log))
            top = " (the ladder's top: at least that)" if rates[w] == LADDER[-1] else ""
            print(f"  sustained: {rates[w]:,}/s{top}")
        ratio = rates[2] / rates[1] if rates[1] else float("nan")
        print(f"\n2 workers / 1 worker: {ratio:.2f}x  ({rates[2]:,}/s against {rates[1]:,}/s; "
              "the target and the client share the same cores)")  # fmt: skip
    print(
        f"machine after: {machine_state()}; timed runs started on a noisy machine: {QUIET['noisy']}"
    )
    print("command: python -m bench shards")


if __name__ == "__main__":
    main()
