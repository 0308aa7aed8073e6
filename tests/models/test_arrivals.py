"""Arrival profiles: the generated counts per interval match the integrated rate (chi-square), the
stadium shape puts its shares where it says, and groups have the asked-for sizes."""

import numpy as np
import pytest
import simpy
from scipy import stats

from models.arrivals import ArrivalParams, arrivals
from models.rate_profiles import RateProfile, constant, stadium, thinned
from models.sink import ListSink
from traces.event import ARRIVE


def chi_square_p(times: np.ndarray, profile: RateProfile, bins: int) -> float:
    edges = np.linspace(profile.start, profile.end, bins + 1)
    observed, _ = np.histogram(times, edges)
    expected = np.array(
        [profile.integral(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    )
    keep = expected > 5
    # Poisson counts: sum (O - E)^2 / E is chi-square with (bins) degrees of freedom
    chi2 = float((((observed - expected) ** 2) / expected)[keep].sum())
    return float(stats.chi2.sf(chi2, keep.sum()))


def test_stadium_shares_are_exact():
    p = stadium(50_000, start_s=14_400, late_share=0.6, after_share=0.05)
    assert p.total() == pytest.approx(50_000)
    assert p.integral(14_400 - 3600, 14_400) == pytest.approx(0.6 * 50_000)
    assert p.integral(14_400, p.end) == pytest.approx(0.05 * 50_000)
    assert p.start == 14_400 - 120 * 60  # gates 90 min + early 30 min before the start
    peak_t = p.times[int(np.argmax(p.rates))]
    assert peak_t == 14_400 - 15 * 60  # the peak is before the start


def test_stadium_rejects_impossible_shares():
    with pytest.raises(ValueError, match="late_share"):
        stadium(1000, 10_000, late_share=0.9, after_share=0.2)


def test_integral_of_linear_and_step_profiles():
    lin = RateProfile((0.0, 10.0, 20.0), (0.0, 2.0, 0.0), "linear")
    assert lin.total() == pytest.approx(20.0)
    assert lin.integral(0, 5) == pytest.approx(2.5)
    step = RateProfile((0.0, 10.0, 20.0), (1.0, 3.0, 0.0), "step")
    assert step.integral(5, 15) == pytest.approx(5 + 15)


@pytest.mark.parametrize(
    "profile",
    [
        stadium(40_000, start_s=9000),
        constant(5.0, 100.0, 3600.0),
        RateProfile((0.0, 600.0, 1200.0, 1800.0), (2.0, 10.0, 1.0, 0.0), "step"),
    ],
)
def test_thinning_counts_per_interval_match_the_rate(profile):
    t = np.fromiter(thinned(profile, np.random.default_rng(11)), float)
    assert np.all(np.diff(t) >= 0)
    assert abs(len(t) - profile.total()) < 4 * np.sqrt(profile.total())  # z-score of the total
    assert chi_square_p(t, profile, bins=40) > 0.001


def test_arrival_model_groups_and_profile():
    env = simpy.Environment()
    sink = ListSink(env)
    groups = []
    prof = stadium(30_000, start_s=9000)
    params = ArrivalParams(profile=prof, group_weights=(0.5, 0.3, 0.2))
    env.process(arrivals(env, params, np.random.default_rng(3), sink.emit, groups.append))
    env.run()
    sink.flush()
    sizes = np.array([len(g) for g in groups])
    assert sizes.mean() == pytest.approx(params.mean_group, rel=0.03)
    assert set(sizes.tolist()) == {1, 2, 3}
    arrive = [e for e in sink.events if e.kind == ARRIVE]
    assert len(arrive) == sizes.sum()
    assert len({e.actor for e in arrive}) == len(arrive)  # one actor per attendee
    # group arrival times follow the group rate
    group_t = np.array(sorted({e.t_us for e in arrive})) / 1e6
    assert chi_square_p(group_t, params.group_profile(), bins=30) > 0.001


def test_burst_arrives_at_once():
    env = simpy.Environment()
    sink = ListSink(env)
    groups = []
    params = ArrivalParams(burst=10, burst_at=(1.0, 6.0))
    env.process(arrivals(env, params, np.random.default_rng(0), sink.emit, groups.append))
    env.run()
    sink.flush()
    assert [len(g) for g in groups] == [10, 10]
    assert sorted({e.t_us for e in sink.events}) == [1_000_000, 6_000_000]
