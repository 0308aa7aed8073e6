"""Replay shards on a Dask cluster of this machine (a scheduler and 2 workers on loopback).

Prints: the highest open-loop rate one Dask worker and two Dask workers sustain (p99 schedule_lag
<= 10 ms, every request answered; a ladder of rates over 2 s traces, up to the first miss) against the same
minimal loopback target, their ratio, and the wall-clock offsets measured between the client and
each local worker (the same host: the truth is 0, so the figure is the method's error).

    python -m bench shards                        # about a minute
    GATERUSH_BENCH_SHARD_S=4 python -m bench shards   # longer traces per step (default 2 s)
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_replay import ENV, lag_stats, machine_state, make_trace
from judge.resultlog import read_results
from replay.clocksync import measure_offset
from replay.engine import ReplayConfig, run_replay
from tests.replay.dask_cluster import DaskCluster
from tests.replay.loopback_server import LoopbackServer


def run(trace: Path, url: str, scheduler: str, workers: int, out: Path):
    """One replay through the cluster; its result table."""
    cfg = ReplayConfig(trace=str(trace), out=str(out), target=url, workers=workers, scheduler=scheduler,
                       progress=False)  # fmt: skip
    run_replay(cfg, {}, progress=None)
    return read_results(out)


LADDER = (500, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000)


def sustained(
    tmp: Path, url: str, scheduler: str, workers: int, seconds: float
) -> tuple[int, list[str]]:
    """The highest rate of LADDER held with p99 schedule_lag <= 10 ms and no error (up to the first miss)."""
    log: list[str] = []
    held = 0
    for rate in LADDER:
        trace = tmp / f"s_{workers}_{rate}.grt"
        n = make_trace(trace, rate, seconds, seed=rate)
        _, table = run(trace, url, scheduler, workers, tmp / "s.grr")
        trace.unlink()
        p50, p99, _ = lag_stats(table)
        errors = int(np.sum(np.asarray(table.column("status").to_numpy()) != 200))
        good = p99 <= 10 and errors == 0 and table.num_rows == n
        log.append(f"    {rate:>6}/s  schedule_lag p50 {p50:7.2f} ms  p99 {p99:8.2f} ms  errors {errors}  "
                   f"rows {table.num_rows}/{n}  {'ok' if good else 'FAIL'}")  # fmt: skip
        if not good:
            break
        held = rate
    return held, log


def offsets(address: str, rounds: int = 5) -> list[str]:
    """Each worker's measured offset and uncertainty, `rounds` times (as replay measures before a start)."""
    from distributed import Client  # noqa: PLC0415

    lines = []
    with Client(address, timeout="30s") as c:
        for addr in sorted(c.scheduler_info()["workers"]):
            got = [
                measure_offset(lambda a=addr: c.run(time.time, workers=[a])[a])
                for _ in range(rounds)
            ]
            off = [g.offset_s * 1e3 for g in got]
            unc = [g.uncertainty_s * 1e3 for g in got]
            lines.append(f"    worker {addr}: offset {min(off):+.3f} .. {max(off):+.3f} ms, "
                         f"uncertainty {min(unc):.3f} .. {max(unc):.3f} ms ({rounds} measurements of 8 probes)")  # fmt: skip
    return lines


def main() -> None:
    seconds = float(os.environ.get("GATERUSH_BENCH_SHARD_S", "2"))
    tmp = Path(tempfile.mkdtemp(prefix="gaterush-bench-shards-"))
    print(f"machine: {os.cpu_count()} cores; now: {machine_state()}")
    with LoopbackServer(record=False) as server, DaskCluster(tmp, 2, env=ENV) as dc:
        print(f"target: minimal loopback server {server.url}; Dask scheduler {dc.address}, "
              "2 workers (1 thread, no nanny)")  # fmt: skip
        print("\nclock offsets, client against each local worker (the truth is 0):")
        print("\n".join(offsets(dc.address)))
        rates = {}
        for w in (1, 2):
            print(
                f"\nhighest open-loop rate with {w} Dask worker{'s' * (w > 1)} ({seconds:g} s traces):"
            )
            rates[w], log = sustained(tmp, server.url, dc.url, w, seconds)
            print("\n".join(log))
            print(f"  sustained: {rates[w]:,}/s")
        ratio = rates[2] / rates[1] if rates[1] else float("nan")
        print(f"\n2 workers / 1 worker: {ratio:.2f}x  ({rates[2]:,}/s against {rates[1]:,}/s; "
              "the target and the client share the same 2 cores)")  # fmt: skip
    print(f"machine after: {machine_state()}")
    print("command: python -m bench shards")


if __name__ == "__main__":
    main()
