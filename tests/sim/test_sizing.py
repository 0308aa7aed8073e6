"""Capacity answers: the fewest lanes (exact on bursts) and the largest crowd multiplier (known boundary)."""

from __future__ import annotations

import math
import tomllib

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import scenario
from sim import sizing as capq
from sim.scenario import ScenarioError
from tests.sim.study_hooks import cli
from tests.sim.test_whatif import BOUNDARY, boundary_n

BURST = """
[scenario]
name = "gate-burst"
[event]
presold = 5000
capacity = 5000
[arrivals]
profile = "burst"
attendees = {n}
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
"""


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 300),
    lanes=st.integers(1, 64),
    service=st.sampled_from([0.5, 1.0, 3.0]),
    target=st.sampled_from([0.0, 2.0, 10.0, 45.0]),
)
def test_fewest_lanes_is_exact_on_a_burst(n, lanes, service, target):
    """N at once, fixed service s: the last one waits ((N - 1) // L) * s, so the answer is known."""
    sc = scenario.parse(tomllib.loads(BURST.format(n=n, lanes=lanes, service=service)))
    ans = capq.fewest_lanes(sc, 0, target, quantile=100)
    expected = next(m for m in range(1, n + 2) if ((n - 1) // m) * service <= target)
    assert ans.lanes == expected
    assert ans.wait_s == pytest.approx(((n - 1) // expected) * service)
    tried = dict(ans.tried)
    assert tried[expected] <= target and (
        expected == 1 or tried.get(expected - 1, math.inf) > target
    )


def test_fewest_lanes_refuses_bad_questions():
    sc = scenario.load("scanner-burst")
    with pytest.raises(ScenarioError, match="quantile"):
        capq.fewest_lanes(sc, 0, 10, quantile=0)
    with pytest.raises(ScenarioError, match="max-wait"):
        capq.fewest_lanes(sc, 0, -1)
    with pytest.raises(ScenarioError, match="gate"):
        capq.fewest_lanes(scenario.load("purchase-load"), 0, 10)


def test_largest_multiplier_finds_the_known_boundary(tmp_path):
    """10 scans a wave; the backend holds N* - 1: the crowd multiplier is (N* - 1) / 10, to 2%."""
    p = tmp_path / "b.toml"
    p.write_text(BOUNDARY)
    sc = scenario.load(str(p))
    ans = capq.largest_multiplier(sc, 0, tolerance=0.02)
    last_ok = (boundary_n() - 1) / 10  # ceil(10 m) <= N* - 1
    assert last_ok / 1.02 - 0.1 < ans.multiplier <= last_ok
    assert last_ok - 0.1 < ans.failing_at <= ans.multiplier * 1.02 + 1e-9
    assert ans.judgement.ok and not ans.failing.ok
    assert {ok for _, ok in ans.tried} == {True, False}


def test_scaled_multiplies_the_crowd_not_the_venue():
    sc = scenario.load("event-day")
    big = capq.scaled(sc, 2.5)
    assert big.arrivals.attendees == math.ceil(sc.arrivals.attendees * 2.5)
    assert big.event.presold == math.ceil(sc.event.presold * 2.5) <= big.event.capacity
    assert big.sales.buyers == math.ceil(sc.sales.buyers * 2.5)
    assert big.webhook_burst.events == math.ceil(sc.webhook_burst.events * 2.5)
    assert big.dashboard.viewers == math.ceil(sc.dashboard.viewers * 2.5)
    assert big.gate.lanes == sc.gate.lanes and big.capacity == sc.capacity
    with pytest.raises(ScenarioError):
        capq.scaled(sc, 0)


def test_cli_answers_both_questions(tmp_path):
    p = tmp_path / "b.toml"
    p.write_text(BOUNDARY)
    r = CliRunner().invoke(cli(), ["capacity", str(p), "--max-wait", "0", "--quantile", "100"])
    assert r.exit_code == 0, r.output
    assert "lanes: 10 lanes keep" in r.output  # waves of 10: one lane each, nobody waits
    assert "crowd: the backend holds" in r.output and "✗ http_req_duration" in r.output
    # a crowd beyond the boundary: the scenario as given breaks its thresholds -> 99
    r = CliRunner().invoke(
        cli(), ["capacity", str(p), "--set", "arrivals.attendees=100", "--max-wait", "1000"]
    )
    assert r.exit_code == 99, r.output
    r = CliRunner().invoke(cli(), ["capacity", str(p), "--quantile", "0"])
    assert r.exit_code == 104 and "--quantile" in r.output
    r = CliRunner().invoke(cli(), ["capacity", str(p), "--threshold", "http_req_duration=p(95)<<1"])
    assert r.exit_code == 104 and "Traceback" not in r.output
