"""Predicted result rows: queueing theory, the replay row shape, errors, dashboard loads, gate waits."""

from __future__ import annotations

import msgspec.structs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from judge import metrics
from judge.resultlog import SCHEMA
from models import queueing
from models.capacity import Backend, CapacityParams, predict
from models.distributions import Dist
from sim import predict as pr
from sim import runner, scenario
from sim.scenario import ScenarioError
from traces.event import Event

BURST = """
[scenario]
name = "burst"
[event]
presold = 5000
capacity = 5000
[arrivals]
profile = "burst"
attendees = {n}
waves = 1
start_s = 1.0
[gate]
lanes = {lanes}
queue = "shared"
service = {service}
departures = false
[gate.tickets]
valid = 1.0
screenshot = 0.0
invalid = 0.0
wrong_event = 0.0
[capacity.default]
workers = {workers}
service = 0.01
{extra}
"""


def burst(tmp_path, n=10, lanes=10, service=0.5, workers=4, extra="") -> scenario.Scenario:
    p = tmp_path / "burst.toml"
    p.write_text(BURST.format(n=n, lanes=lanes, service=service, workers=workers, extra=extra))
    return scenario.load(str(p))


def poisson_events(n: int, lam: float, seed: int, target: str = "rpc:x") -> list[Event]:
    t = np.cumsum(np.random.default_rng(seed).exponential(1 / lam, n)) * 1e6
    return [
        Event(int(x), i, "scan", f"a:{i}", target, b"\x80", None, None)
        for i, x in enumerate(t.tolist())
    ]


def batch_se(x: np.ndarray, stat, batches: int = 40) -> float:
    """Standard error of stat(x) by batch means (waits of a queue are correlated)."""
    vals = np.array([stat(b) for b in np.array_split(x, batches)])
    return float(vals.std(ddof=1) / np.sqrt(batches))


@pytest.mark.parametrize(("c", "lam", "mu"), [(4, 3.0, 1.0), (1, 0.7, 1.0), (8, 60.0, 10.0)])
def test_capacity_model_in_mmc_matches_erlang_c(c, lam, mu):
    """Mean and p95 queueing wait of the capacity model (M/M/c) agree with Erlang C within 4 standard errors."""
    n = 120_000
    params = CapacityParams(default=Backend(c, Dist("exponential", 1 / mu), None))
    ps = list(predict(poisson_events(n, lam, seed=c), params, np.random.default_rng(7)))
    wait = (np.array([p.start_us - p.scheduled_us for p in ps]) / 1e6)[
        n // 10 :
    ]  # drop the warm-up
    mean_theory = queueing.mean_wait(c, lam, mu)
    p95_theory = queueing.wait_quantile(c, lam, mu, 0.95)
    assert abs(wait.mean() - mean_theory) < 4 * batch_se(wait, np.mean) + 1e-3
    p95 = lambda x: np.percentile(x, 95)  # noqa: E731
    assert abs(p95(wait) - p95_theory) < 4 * batch_se(wait, p95) + 1e-3
    assert abs((wait > 0).mean() - queueing.erlang_c(c, lam, mu)) < 4 * batch_se(wait > 0, np.mean)


def test_predicted_sojourn_in_mmc_is_wait_plus_service():
    """Through the row layer: http_req_duration's mean is Erlang C's wait plus the service mean."""
    c, lam, mu = 2, 1.5, 1.0
    params = CapacityParams(default=Backend(c, Dist("exponential", 1 / mu), None))
    pred = pr.predict_events(poisson_events(80_000, lam, seed=3), params, np.random.default_rng(1))
    m = metrics.from_table(pred.table)
    dur = m.get("http_req_duration").values[8000:] / 1e3
    theory = queueing.mean_wait(c, lam, mu) + 1 / mu
    assert abs(dur.mean() - theory) < 4 * batch_se(dur, np.mean)


def test_rows_have_the_replay_result_schema(tmp_path):
    sc = scenario.load(
        "event-day", ["arrivals.attendees=2000", "sales.buyers=200", "webhook_burst.events=50"]
    )
    pred = pr.predict_scenario(sc, 3)
    assert pred.table.schema.names == SCHEMA.names
    assert [f.type for f in pred.table.schema] == [f.type for f in SCHEMA]
    kinds = set(pred.table["target"].to_pylist())
    assert {"rpc:scan_ticket_atomic", "fn:stripe-webhook", "dashboard"} <= kinds
    assert not any(t.startswith("realtime:") for t in kinds)
    # the same thresholds judge it as a replay: the scenario's own set holds on the default backend
    _, j = pr.judge_prediction(pred.table, {k: list(v) for k, v in sc.thresholds.items()})
    assert [c.name for c in j.verdicts] and j.ok


def test_same_scenario_and_seed_same_prediction():
    sc = scenario.load("purchase-load")
    a, b = pr.predict_scenario(sc, 5), pr.predict_scenario(sc, 5)
    assert a.table.equals(b.table) and np.array_equal(a.gate_wait_s, b.gate_wait_s)
    assert not a.table.equals(pr.predict_scenario(sc, 6).table)


def test_dependent_requests_are_sent_after_their_dependency_completes():
    sc = scenario.load("purchase-load")
    t = pr.predict_scenario(sc, 1).table.to_pylist()
    done = {r["seq"]: r["done_us"] for r in t}
    evs = {e.seq: e for e in runner.events(sc, 1)}
    confirms = [r for r in t if r["kind"] == "confirm"]
    assert confirms
    for r in confirms:
        e = evs[r["seq"]]
        assert r["scheduled_us"] == e.t_us  # as replay logs it: the open-loop schedule
        assert r["sent_us"] == max(e.t_us, done[e.after])


def test_pool_exhaustion_and_slow_responses_are_timeouts(tmp_path):
    extra = '[capacity.targets."rpc:scan_ticket_atomic"]\nworkers = 1\nservice = 0.1\ntimeout_s = 0.25\n'
    sc = burst(tmp_path, n=10, extra=extra)
    t = pr.predict_scenario(sc, 0).table.to_pylist()
    scans = sorted((r for r in t if r["kind"] == "scan"), key=lambda r: r["seq"])
    # one worker, 0.1 s each, all sent at once: the first two finish in time; the third would
    # finish at 0.3 s (too slow); the rest wait >= 0.25 s for the worker (pool exhausted)
    assert [r["status"] for r in scans[:2]] == [200, 200]
    assert scans[2]["status"] == 0 and "too slow" in scans[2]["error"]
    assert all(r["status"] == 0 and "pool exhausted" in r["error"] for r in scans[3:])
    assert all(r["done_us"] - r["sent_us"] == 250_000 for r in scans[2:])
    _, j = pr.judge_prediction(pr.predict_scenario(sc, 0).table, {"http_req_failed": ["rate==0"]})
    assert not j.ok and j.verdicts[0].observed == pytest.approx(0.8)


def test_one_dashboard_load_row_per_load():
    sc = scenario.load("dashboard-load")
    pred = pr.predict_scenario(sc, 2)
    t = pred.table.to_pylist()
    views = [r for r in t if r["kind"] == "view" and r["metric"] is None]
    loads = [r for r in t if r["metric"] == "dashboard_load"]
    assert len(views) == 3 * len(loads) > 0
    by_actor_first = {}
    for r in views:
        by_actor_first.setdefault(r["actor"], r["seq"])
    firsts = {r["actor"]: r for r in loads if r["seq"] == by_actor_first[r["actor"]]}
    assert set(firsts) == set(by_actor_first)  # every viewer's first load starts at its first view
    for r in loads:
        assert r["done_us"] >= r["sent_us"] == r["scheduled_us"]


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 60), lanes=st.integers(1, 12), service=st.sampled_from([0.5, 1.0, 2.0]))
def test_gate_waits_of_a_burst_are_exact(tmp_path_factory, n, lanes, service):
    """N at once at L lanes of fixed service s: the k-th scanned waits (k // L) * s."""
    sc = burst(tmp_path_factory.mktemp("b"), n=n, lanes=lanes, service=service)
    waits = np.sort(pr.gate_waits(sc, 0))
    expected = (np.arange(n) // lanes) * service
    assert np.allclose(waits, expected, atol=1e-6)


def test_gate_waits_count_from_the_gate_opening():
    sc = scenario.load("event-day", ["arrivals.attendees=3000", "gate.lanes=400"])
    sc = msgspec.structs.replace(sc, gate=msgspec.structs.replace(sc.gate, open_spread_s=0.0))
    waits = pr.gate_waits(sc, 1)
    # with lanes to spare nobody queues once the gate is open, although many came before it
    assert len(waits) >= 2900 and np.percentile(waits, 99) < 30


def test_with_values_names_a_bad_key():
    data = scenario.load("scanner-burst").to_dict()
    assert pr.with_values(data, {"gate.lanes": 3}).gate.lanes == 3
    sc = pr.with_values(data, {'capacity.targets."rpc:scan_ticket_atomic".workers': 2})
    assert sc.capacity.targets["rpc:scan_ticket_atomic"].workers == 2
    with pytest.raises(ScenarioError, match="gate.lanse"):
        pr.with_values(data, {"gate.lanse": 3})
    with pytest.raises(ScenarioError, match="gate.lanes"):
        pr.with_values(data, {"gate.lanes": 0})
    assert pr.key_path('capacity.targets."rpc:x".workers') == (
        "capacity",
        "targets",
        "rpc:x",
        "workers",
    )


def test_summarize_figures():
    pred = pr.predict_scenario(scenario.load("scanner-burst"), 0)
    f = pr.summarize(pred)
    assert f["attendees_scanned"] == 20 and f["requests"] == len(pred.table)
    assert f["http_req_failed_rate"] == 0 and f["p95_ms{rpc:scan_ticket_atomic}"] > 0
    assert f["gate_wait_p95_s"] >= f["gate_wait_p50_s"] >= 0
