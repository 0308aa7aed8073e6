"""Calibration: it recovers a known backend, and the fitted model predicts a real replay at another load."""

from __future__ import annotations

import functools
import tomllib

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from judge.resultlog import read_results
from models.capacity import Backend
from models.distributions import Dist
from replay.engine import ReplayConfig, run_replay
from sim import calibrate as cal
from sim import predict as pr
from sim import runner, scenario
from sim.scenario import ScenarioError
from staging.knobs import knobs_from_dict
from staging.process import standin_in_process
from tests.sim.study_hooks import cli


def synthetic(
    phases: list[tuple[float, float]], workers: int, service: Dist, seed: int = 1
) -> pa.Table:
    """Result rows of Poisson requests (rate, seconds per phase) served by the capacity model itself."""
    rng = np.random.default_rng(seed)
    sent, t0 = [], 0.0
    for rate, secs in phases:
        n = rng.poisson(rate * secs)
        sent.append(t0 + np.sort(rng.uniform(0, secs, n)))
        t0 += secs
    sent_us = (np.concatenate(sent) * 1e6).astype(np.int64)
    done_us = sent_us + (
        cal.predicted_durations(sent_us, Backend(workers, service, None), seed + 1) * 1e6
    ).astype(np.int64)
    n = len(sent_us)
    return pa.table(
        {
            "target": ["rpc:x"] * n,
            "sent_us": sent_us,
            "done_us": done_us,
            "error": pa.nulls(n, pa.string()),
            "metric": pa.nulls(n, pa.string()),
        }
    )


@settings(max_examples=6, deadline=None)
@given(
    workers=st.integers(1, 8), mean_ms=st.sampled_from([5.0, 20.0, 80.0]), seed=st.integers(0, 99)
)
def test_recovers_a_known_backend(workers, mean_ms, seed):
    """A quiet phase then one at 95% of capacity: the capacity (workers / service mean) within 10%.

    The queueing pins the capacity; how it splits into workers and service time is pinned less
    well as the workers grow (8 workers of 5 ms and 9 of 5.6 ms queue alike): exact up to 2 (3
    workers were fitted as 4 in 3 of 75 seeds tried, the capacity still within 10%).
    (At 90% of capacity for half as long, 8 workers are sometimes fitted 13% over: too little queueing.)
    """
    s = mean_ms / 1e3
    svc = Dist("lognormal", s, s * 0.4)
    cap = workers / s
    table = synthetic([(0.1 * cap, 600 / cap), (0.95 * cap, 3000 / cap)], workers, svc, seed)
    (f,) = cal.calibrate(table)
    assert f.saturated and abs(f.workers - workers) <= (0 if workers <= 2 else max(1, workers // 4))
    assert f.workers / f.service.expected == pytest.approx(cap, rel=0.10)


def test_a_load_that_never_queued_gives_a_lower_bound():
    svc = Dist("exponential", 0.01)
    (f,) = cal.calibrate(synthetic([(5.0, 60.0)], 16, svc))
    assert not f.saturated and f.workers <= f.max_in_flight + 1
    assert "lower bound" in cal.describe(f)


def test_too_few_requests_is_an_error():
    with pytest.raises(ScenarioError, match="rpc:x"):
        cal.calibrate(synthetic([(1.0, 5.0)], 1, Dist("fixed", 0.01)), ["rpc:x"])


def test_backend_toml_is_accepted_by_scenarios(tmp_path):
    fits = cal.calibrate(
        synthetic([(20.0, 20.0), (180.0, 10.0)], 4, Dist("lognormal", 0.02, 0.008))
    )
    text = cal.backend_toml(fits, "run.parquet")
    cap = tomllib.loads(text)["capacity"]
    data = cal.with_backend(scenario.load("scanner-burst").to_dict(), cap)
    sc = pr.with_values(data, {})
    b = sc.capacity.targets["rpc:x"]
    assert b.workers == fits[0].workers and b.service.dist == fits[0].service.dist
    p = tmp_path / "backend.toml"
    p.write_text(text)
    assert cal.load_backend(p) == cap
    p.write_text("[capacty]\n")
    with pytest.raises(ScenarioError, match="capacity"):
        cal.load_backend(p)


# --- end to end: a replay against the stand-in with added latency and a worker pool -------------

TRACE = """
[scenario]
name = "calibration"
[event]
presold = 4000
capacity = 4000
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
# The stand-in scans 4 at a time, each taking ~40 ms more than it would (about 95 scans/s at most).
KNOBS = {
    "seed": 1,
    "endpoints": {"rpc:scan_ticket_atomic": {"workers": 4, "latency": "lognormal:40ms,0.25"}},
}
SCAN = "rpc:scan_ticket_atomic"


def replay(tmp_path, name: str, table: str) -> tuple[scenario.Scenario, pa.Table]:
    """Simulate a scan trace and replay it at a fresh stand-in on loopback; (scenario, results)."""
    src = tmp_path / f"{name}.toml"
    src.write_text(TRACE.format(table=table))
    sc = scenario.load(str(src))
    trace, out = tmp_path / f"{name}.parquet", tmp_path / f"{name}-results.parquet"
    runner.simulate(sc, 1, trace)
    start = functools.partial(
        standin_in_process, host="127.0.0.1", deliver_webhooks=False, knobs=knobs_from_dict(KNOBS)
    )
    cfg = ReplayConfig(trace=str(trace), out=str(out), target="local", progress=False)
    run_replay(cfg, env={}, start_local=start, progress=None)
    return sc, read_results(out)[1]


@pytest.mark.slow
def test_calibrated_model_predicts_a_replay_at_another_load(tmp_path):
    """Fit on 12/s then 85/s; predict the replay of a 70/s trace: p95 within 20% of the measurement."""
    _, fit_results = replay(tmp_path, "fit", "[[0, 0], [0.5, 12], [4.5, 85], [8.5, 0], [9, 0]]")
    (fit,) = cal.calibrate(fit_results, [SCAN])
    assert fit.workers == 4 and fit.saturated
    sc, measured = replay(tmp_path, "check", "[[0, 0], [0.5, 70], [6.5, 0], [7, 0]]")
    sent, done = cal.request_times(measured, SCAN)
    assert len(sent) > 300
    measured_p95 = float(np.percentile((done - sent) / 1e3, 95))
    # the trace's own events through the calibrated capacity model (no network), as `whatif` runs it
    cap = tomllib.loads(cal.backend_toml([fit]))["capacity"]
    calibrated = pr.with_values(cal.with_backend(sc.to_dict(), cap), {})
    p95s = []
    for k in range(8):  # the model's p95 averaged over its own service draws
        t = pr.predict_scenario(calibrated, 1, capacity_seed=k).table
        p95s.append(np.percentile((t["done_us"].to_numpy() - t["sent_us"].to_numpy()) / 1e3, 95))
    predicted_p95 = float(np.mean(p95s))
    assert predicted_p95 == pytest.approx(measured_p95, rel=0.20)
    # and the command line does the same fit from the result file
    res = tmp_path / "fit-results.parquet"
    out = tmp_path / "backend.toml"
    r = CliRunner().invoke(
        cli(),
        ["calibrate", str(res), "-o", str(out), "--check", str(tmp_path / "check-results.parquet")],
    )
    assert r.exit_code == 0, r.output
    assert "4 workers (saturated)" in r.output and "% at p95" in r.output
    assert tomllib.loads(out.read_text())["capacity"]["targets"][SCAN]["workers"] == 4


def test_cli_bad_results_file_is_invalid_input(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    r = CliRunner().invoke(cli(), ["calibrate", str(bad), "-o", str(tmp_path / "b.toml")])
    assert r.exit_code == 104 and "bad.parquet" in r.output and "Traceback" not in r.output
