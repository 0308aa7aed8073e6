"""Scenario files: built-ins load, every kind of mistake names its dotted key, --set overrides."""

import pytest

from sim import scenario
from sim.scenario import ScenarioError
from traces.header import Inventory

BUILTINS = ["dashboard-load", "event-day", "purchase-load", "scanner-burst", "webhook-burst"]


def test_the_five_builtins():
    assert scenario.builtin_names() == BUILTINS
    for name in BUILTINS:
        sc = scenario.load(name)
        assert sc.name == name and sc.scenario.description
        assert sc.thresholds, f"{name} stores its default thresholds"


def test_builtin_thresholds_are_k6_grammar():
    sc = scenario.load("scanner-burst")
    assert sc.thresholds == {
        "http_req_failed": ("rate==0",),
        "http_req_duration{target:rpc:scan_ticket_atomic}": ("p(95)<200",),
    }


def test_to_dict_parses_back_to_the_same_scenario():
    for name in BUILTINS:
        sc = scenario.load(name)
        assert scenario.parse(sc.to_dict()) == sc


@pytest.mark.parametrize(
    "override, message",
    [
        ("gate.lanes=0", "gate.lanes: expected an integer >= 1, got 0"),
        ("gate.lanes=2.5", "gate.lanes: expected an integer >= 1, got 2.5"),
        ("gate.lanes='many'", "gate.lanes: expected an integer >= 1, got 'many'"),
        ("gate.lanez=3", "gate.lanez: unknown key (did you mean 'lanes'?)"),
        ("gate.queue=fifo", "gate.queue: expected one of shortest, shared, got 'fifo'"),
        (
            "gate.service.dist=gauss",
            "gate.service.dist: expected one of exponential, lognormal, fixed, uniform",
        ),
        ("gate.service.low=1", "gate.service.low: unknown key for a lognormal distribution"),
        ("gate.rescan_prob=1.5", "gate.rescan_prob: expected a number >= 0 and <= 1, got 1.5"),
        ("gate.tickets.valid=-1", "gate.tickets.valid: expected a number >= 0, got -1"),
        ("event.allow_reentry=1", "event.allow_reentry: expected true or false, got 1"),
        ("event.other_event_id=1", "event.other_event_id: expected an id other than event.id"),
        ("arrivals.late_share=0.99", "arrivals.late_share: late_share + after_share must be <= 1"),
        (
            "arrivals.group_sizes=[0, 0]",
            "arrivals.group_sizes: expected at least one positive weight",
        ),
        (
            "sales.delivery.fail_window=[10, 5]",
            "sales.delivery.fail_window: expected [start, end] with end > start",
        ),
        ("dashboard=3", "dashboard: expected a table, got 3"),
        ("bogus.x=1", "bogus: unknown key"),
        ("event.start_s=3600", "event.start_s: expected a number >= 7200 with a stadium crowd"),
        (
            "arrivals.gates_open_min=20",
            "arrivals.gates_open_min: gates_open_min + early_min must exceed 60",
        ),
        ("scenario.origin=yesterday", "scenario.origin: expected an RFC 3339 time"),
        ("capacity.default.workers=0", "capacity.default.workers: expected an integer >= 1, got 0"),
        (
            'thresholds.http_req_failed=["rate=0"]',
            'thresholds."http_req_failed": expected k6 threshold expressions',
        ),
    ],
)
def test_errors_name_the_key(override, message):
    with pytest.raises(ScenarioError) as err:
        scenario.load("event-day", [override])
    assert str(err.value).startswith(message)


def test_set_overrides_use_toml_values_and_bare_words():
    sc = scenario.load(
        "event-day",
        [
            "gate.lanes=12",
            "gate.queue=shared",
            "gate.service.mean=4",
            'thresholds."http_req_duration{target:fn:stripe-webhook}"=["p(99)<800"]',
        ],
    )
    assert sc.gate.lanes == 12 and sc.gate.queue == "shared"
    assert (
        sc.gate.service.mean == 4.0 and sc.gate.service.dist == "lognormal"
    )  # merged into the table
    assert sc.thresholds["http_req_duration{target:fn:stripe-webhook}"] == ("p(99)<800",)
    assert sc.thresholds["http_req_failed"] == ("rate==0",)  # the others kept


@pytest.mark.parametrize("bad", ["gate.lanes", "=3", "gate..lanes=3"])
def test_malformed_set(bad):
    with pytest.raises(ScenarioError, match="--set"):
        scenario.load("event-day", [bad])


def test_setting_into_a_value_that_is_not_a_table():
    with pytest.raises(ScenarioError, match="gate.lanes: is not a table"):
        scenario.load("event-day", ["gate.lanes.x=1"])


def test_a_file_and_its_errors(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('[scenario]\nname = "mine"\n[dashboard]\nviewers = 3\n')
    assert scenario.load(str(f)).dashboard.viewers == 3
    f.write_text("[dashboard\n")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        scenario.load(str(f))
    f.write_text('[scenario]\nname = "empty"\n')
    with pytest.raises(ScenarioError, match="runs no model"):
        scenario.load(str(f))
    with pytest.raises(ScenarioError, match="unknown scenario 'no-such'"):
        scenario.load("no-such")


def test_inventory_holds_the_events_to_seed():
    inv = scenario.inventory(scenario.load("event-day"))
    assert isinstance(inv, Inventory) and inv.allow_reentry
    main, other = inv.events
    assert (main.id, main.presold, main.capacity) == (1, 102_000, 110_000)
    assert other.id == 2 and other.presold > 0
    assert scenario.inventory_for("scanner-burst").events[0].presold == 100


def test_capacity_params_from_the_scenario():
    sc = scenario.load(
        "event-day",
        [
            "capacity.default.workers=4",
            'capacity.targets."rpc:scan_ticket_atomic".workers=16',
            'capacity.targets."rpc:scan_ticket_atomic".timeout_s=2.5',
        ],
    )
    p = scenario.capacity_params(sc)
    assert p.backend("rpc:scan_ticket_atomic").workers == 16
    assert p.backend("rpc:scan_ticket_atomic").timeout_s == 2.5
    assert p.backend("rest:events").workers == 4
