"""The runner: same scenario and seed give the same bytes; models have independent random streams;
the header carries config, seed, origin and inventory; nothing is written when a run fails."""

import pytest

from sim import runner, scenario
from traces.event import SCAN
from traces.io import open_reader
from traces.projection import project

SMALL_DAY = [
    "arrivals.attendees=3000",
    "event.presold=3000",
    "gate.lanes=8",
    "sales.buyers=60",
    "webhook_burst.events=20",
    "dashboard.viewers=3",
]


def events_of(sc, seed):
    out = []
    runner.run(sc, seed, out.extend)
    return out


@pytest.fixture(scope="module")
def small_day():
    return scenario.load("event-day", SMALL_DAY)


@pytest.mark.parametrize("suffix", [".parquet", ".grt"])
def test_same_seed_same_bytes_other_seed_other_trace(tmp_path, small_day, suffix):
    a, b, c = (tmp_path / f"{n}{suffix}" for n in "abc")
    runner.simulate(small_day, 42, a)
    runner.simulate(small_day, 42, b)
    runner.simulate(small_day, 43, c)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_header_carries_config_seed_origin_inventory(tmp_path, small_day):
    path = tmp_path / "day.parquet"
    n = runner.simulate(small_day, 5, path)
    with open_reader(path) as r:
        h = r.header
        events = list(r)
    assert len(events) == n
    assert h.seed == 5 and h.source == "simulate"
    assert scenario.parse(h.scenario) == small_day  # the full config, loadable again
    assert h.scenario["thresholds"]["http_req_failed"] == ["rate==0"]
    assert h.origin_unix_us == 1_781_352_000_000_000  # 2026-06-13T12:00:00Z
    assert h.inventory == scenario.inventory(small_day)
    assert h.expected == project(events)  # the expected end state is a fold over the events
    assert h.expected["admitted"] > 0 and h.expected["orders"] > 0


def test_adding_a_model_leaves_the_others_streams_alone():
    base = scenario.load("event-day", SMALL_DAY)
    data = base.to_dict()
    del data["dashboard"], data["sales"]
    fewer = scenario.parse(data)
    scans = [
        [(e.t_us, e.actor, e.payload, e.expect) for e in events_of(sc, 9) if e.kind == SCAN]
        for sc in (base, fewer)
    ]
    assert scans[0] == scans[1] and scans[0]


def test_progress_reaches_one(small_day):
    seen = []
    runner.run(small_day, 1, lambda evs: None, progress=seen.append)
    assert seen[-1] == 1.0 and seen == sorted(seen) and len(seen) > 10


def test_a_failed_run_leaves_no_file(tmp_path, small_day, monkeypatch):
    path = tmp_path / "day.parquet"

    def boom(*a, **k):
        raise RuntimeError("model failure")

    monkeypatch.setattr(runner, "build", boom)
    with pytest.raises(RuntimeError):
        runner.simulate(small_day, 1, path)
    assert list(tmp_path.iterdir()) == []


def test_the_builtins_simulate(tmp_path):
    for name in ["purchase-load", "scanner-burst", "dashboard-load", "webhook-burst"]:
        sc = scenario.load(name)
        events = events_of(sc, 0)
        assert events, name
    burst = events_of(scenario.load("scanner-burst"), 0)
    scans = [e for e in burst if e.kind == SCAN]
    assert (
        len(scans) == 20 and len({e.t_us for e in scans}) == 2
    )  # two waves of 10 simultaneous scans
    assert {e.expect for e in scans} >= {"valid", "already_scanned", "invalid"}
    webhooks = [e for e in events_of(scenario.load("webhook-burst"), 0) if e.kind == "webhook"]
    assert len(webhooks) == 50 and webhooks[-1].t_us - webhooks[0].t_us <= 10_000_000


def test_progress_does_not_change_the_trace(small_day):
    with_bar, without = [], []
    runner.run(small_day, 4, with_bar.extend, progress=lambda f: None)
    runner.run(small_day, 4, without.extend)
    assert with_bar == without
