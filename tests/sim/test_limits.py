"""Limits: sizes above a sane maximum and times past a year are refused at validation, naming the
dotted key, the limit and how to raise it; a huge run's memory is estimated before it starts."""

from __future__ import annotations

import pytest

from sim import cli as sim_cli
from sim import scenario
from sim.scenario import ScenarioError
from traces.limits import ALLOW_HUGE_ENV, MAX_LANES, MAX_PEOPLE, MAX_SECONDS, MAX_TICKETS


@pytest.mark.parametrize("key,value,limit", [
    ("arrivals.attendees", 1_000_000_000, MAX_PEOPLE),
    ("gate.lanes", 1_000_000_000, MAX_LANES),
    ("event.presold", 1_000_000_000, MAX_TICKETS),
    ("sales.buyers", MAX_PEOPLE + 1, MAX_PEOPLE),
])  # fmt: skip
def test_sizes_above_their_limit_name_it_and_how_to_raise_it(
    key: str, value: int, limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ALLOW_HUGE_ENV, raising=False)
    with pytest.raises(ScenarioError) as e:
        scenario.load("event-day", [f"{key}={value}"])
    assert str(e.value).startswith(f"{key}: ") and f"{limit:,}" in str(e.value)
    assert ALLOW_HUGE_ENV in str(e.value)
    scenario.load("event-day", [f"{key}={limit}"])  # the limit itself is allowed
    monkeypatch.setenv(ALLOW_HUGE_ENV, "1")
    assert scenario.load("event-day", [f"{key}={value}"])  # lifted on purpose


@pytest.mark.parametrize("setting,key", [
    ("arrivals.start_s=1e300", "arrivals.start_s"),
    ("arrivals.wave_gap_s=inf", "arrivals.wave_gap_s"),
    ("arrivals.duration_s=nan", "arrivals.duration_s"),
    ("gate.service=1e300", "gate.service"),
    ('gate.service={dist="lognormal",mean=1e12,sd=1}', "gate.service.mean"),
    (f"event.length_s={MAX_SECONDS + 1}", "event.length_s"),
    ("arrivals.peak_min=-inf", "arrivals.peak_min"),
])  # fmt: skip
def test_times_must_be_finite_and_at_most_a_year(setting: str, key: str, monkeypatch) -> None:
    monkeypatch.setenv(ALLOW_HUGE_ENV, "1")  # times keep their limit even then
    with pytest.raises(ScenarioError) as e:
        scenario.load("event-day", [setting])
    assert str(e.value).startswith(f"{key}: ")


def test_memory_estimate_grows_with_the_crowd_and_refuses_beyond_free_memory(monkeypatch) -> None:
    small = scenario.load("scanner-burst")
    big = scenario.load("event-day", ["arrivals.attendees=5000000", "event.presold=10000000",
                                      "event.capacity=10000000"])  # fmt: skip
    assert sim_cli.memory_estimate(big) > sim_cli.memory_estimate(small)
    assert sim_cli.check_memory(small) is None
    monkeypatch.delenv(ALLOW_HUGE_ENV, raising=False)
    monkeypatch.setattr(sim_cli, "available_memory", lambda: 1 << 30)
    with pytest.raises(sim_cli.InvalidInput, match="GB of memory, 1.0 GB are available"):
        sim_cli.check_memory(big)
    monkeypatch.setenv(ALLOW_HUGE_ENV, "1")
    assert "GB of memory" in sim_cli.check_memory(big)
