"""What-if study speed and calibration accuracy.

0. What-if search on a scenario whose failure boundary is known (tests/sim/test_whatif.py).
1. Predictions per second: the `event-day` scenario at 10,000 attendees simulated in memory, every
   request through the backend capacity model, judged by the scenario's thresholds.
2. A 100-point sweep (gate.lanes x arrivals.peak_min on that scenario): wall time on 1 process and on
   2, and the ratio.
3. Calibration: fit the capacity model on a replay against the stand-in (4 workers, ~40 ms added
   latency on the scan RPC) at 12 then 85 scans/s, then predict replays at 2 other loads.

Run: python -m bench study    (GATERUSH_BENCH_SKIP_CALIBRATION=1 skips part 3)
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
import tomllib

import numpy as np
import pyarrow as pa

from judge.resultlog import read_results
from replay.engine import ReplayConfig, run_replay
from sim import calibrate as cal
from sim import predict as pr
from sim import runner, scenario
from sim import sweep as sw
from sim import whatif as wi
from staging.knobs import knobs_from_dict
from staging.process import standin_in_process

SETS = ["arrivals.attendees=10000", "event.presold=12000", "event.capacity=12000"]


def predictions_per_second(n: int = 10) -> None:
    sc = scenario.load("event-day", SETS)
    pr.evaluate(sc, 0)  # warm up imports and caches
    t0 = time.perf_counter()
    events = requests = 0
    for seed in range(n):
        pred = pr.predict_scenario(sc, seed)
        pr.judge_prediction(pred.table, {k: list(v) for k, v in sc.thresholds.items()})
        events += pred.events
        requests += pred.table.num_rows
    dt = time.perf_counter() - t0
    print(
        f"event-day at 10,000 attendees: {n} predictions in {dt:.2f} s = {n / dt:.2f} simulations/s"
    )
    print(f"  ({events // n:,} events and {requests // n:,} predicted request rows each; "
          f"{events / dt:,.0f} events/s simulated, predicted and judged)")  # fmt: skip
    print(
        f"  command: gaterush whatif event-day --set {' --set '.join(SETS)} --vary gate.lanes=20..120"
    )


def sweep_ratio() -> None:
    data = scenario.load("event-day", SETS).to_dict()
    axes = sw.parse_grid(
        data,
        [
            "gate.lanes=20,30,40,50,60,70,80,90,100,110",
            "arrivals.peak_min=5,10,15,20,25,30,35,40,45,50",
        ],
    )
    assert len(sw.points(axes)) == 100
    _, one = sw.sweep(data, axes, processes=1)
    _, two = sw.sweep(data, axes, processes=2)
    print(f"100-point sweep: 1 process {one:.1f} s, 2 processes {two:.1f} s: ratio {one / two:.2f}x "
          f"({os.cpu_count()} CPUs, shared)")  # fmt: skip
    print("  command: gaterush sweep event-day --set arrivals.attendees=10000 ... "
          "--grid gate.lanes=20..110:10 --grid arrivals.peak_min=5..50:5 -o s.parquet --processes 2")  # fmt: skip


TRACE = """
[scenario]
name = "calibration"
[event]
presold = 6000
capacity = 6000
[arrivals]
profile = "table"
table = {table}
[gate]
lanes = 600
queue = "shared"
service = 0.001
departures = false
[gate.tickets]
valid = 1.0
screenshot = 0.0
invalid = 0.0
wrong_event = 0.0
"""
KNOBS = {
    "seed": 1,
    "endpoints": {"rpc:scan_ticket_atomic": {"workers": 4, "latency": "lognormal:40ms,0.25"}},
}
SCAN = "rpc:scan_ticket_atomic"


def _replay(tmp: str, name: str, table: str) -> tuple[scenario.Scenario, pa.Table]:
    src = os.path.join(tmp, f"{name}.toml")
    with open(src, "w") as f:
        f.write(TRACE.format(table=table))
    sc = scenario.load(src)
    trace, out = os.path.join(tmp, f"{name}.parquet"), os.path.join(tmp, f"{name}-results.parquet")
    runner.simulate(sc, 1, trace)
    start = functools.partial(standin_in_process, host="127.0.0.1", deliver_webhooks=False,
                              knobs=knobs_from_dict(KNOBS))  # fmt: skip
    run_replay(ReplayConfig(trace=trace, out=out, target="local", progress=False), env={},
               start_local=start, progress=None)  # fmt: skip
    return sc, read_results(out)[1]


def calibration() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _, fit_results = _replay(tmp, "fit", "[[0, 0], [0.5, 12], [4.5, 85], [8.5, 0], [9, 0]]")
        (fit,) = cal.calibrate(fit_results, [SCAN])
        print(f"calibration on 12 then 85 scans/s: {cal.describe(fit)}")
        cap = tomllib.loads(cal.backend_toml([fit]))["capacity"]
        for rate in (50, 70, 80):
            sc, measured = _replay(tmp, f"at{rate}", f"[[0, 0], [0.5, {rate}], [6.5, 0], [7, 0]]")
            sent, done = cal.request_times(measured, SCAN)
            m95 = float(np.percentile((done - sent) / 1e3, 95))
            m50 = float(np.percentile((done - sent) / 1e3, 50))
            model = pr.with_values(cal.with_backend(sc.to_dict(), cap), {})
            p50s, p95s = [], []
            for k in range(8):
                t = pr.predict_scenario(model, 1, capacity_seed=k).table
                d = (t["done_us"].to_numpy() - t["sent_us"].to_numpy()) / 1e3
                p50s.append(np.percentile(d, 50))
                p95s.append(np.percentile(d, 95))
            p50, p95 = float(np.mean(p50s)), float(np.mean(p95s))
            print(f"  {rate} scans/s ({len(sent)} requests): measured p50 {m50:.1f} ms p95 {m95:.1f} ms; "
                  f"predicted p50 {p50:.1f} ms p95 {p95:.1f} ms ({(p95 - m95) / m95 * 100:+.1f}% at p95)")  # fmt: skip
    print(
        "  command: gaterush calibrate fit-results.parquet -o backend.toml --check at70-results.parquet"
    )


def boundary_search() -> None:
    from tests.sim.test_whatif import BOUNDARY, boundary_n  # noqa: PLC0415 - the test's scenario

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "boundary.toml")
        with open(src, "w") as f:
            f.write(BOUNDARY)
        data = scenario.load(src).to_dict()
        varies = wi.parse_varies(data, ["arrivals.attendees=1..400"])
        t0 = time.perf_counter()
        res = wi.search(data, varies, cache=None)
        dt = time.perf_counter() - t0
    print(f"whatif on a known boundary (N* = {boundary_n()} scans a second): found "
          f"{res.failing.values} in {dt:.2f} s, {res.tried} cases ({res.shrinking} shrinking)")  # fmt: skip
    print("  command: gaterush whatif boundary.toml --vary arrivals.attendees=1..400")


def main() -> None:
    boundary_search()
    predictions_per_second()
    sweep_ratio()
    if not os.environ.get("GATERUSH_BENCH_SKIP_CALIBRATION"):
        calibration()


if __name__ == "__main__":
    main()
