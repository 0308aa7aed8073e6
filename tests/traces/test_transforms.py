"""Properties of the trace transforms: slice, speed, amplify, merge, filter (anonymize: test_transforms_anonymize)."""

from __future__ import annotations

from collections import defaultdict
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import headers, traces
from traces import event as ev
from traces import transforms as tf
from traces.event import Event, TraceError, pack_payload
from traces.header import Inventory, TraceHeader, VenueEvent
from traces.projection import Projection, project

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(result: tuple[TraceHeader, Any]) -> tuple[TraceHeader, list[Event]]:
    header, events = result
    return header, list(events)


def is_sorted(events: list[Event]) -> bool:
    keys = [(e.t_us, e.seq) for e in events]
    return keys == sorted(keys)


# --- parse helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "us"),
    [
        ("90s", 90_000_000),
        ("5m", 300_000_000),
        ("1h30m", 5_400_000_000),
        ("250ms", 250_000),
        ("12.5", 12_500_000),
        ("7us", 7),
    ],
)
def test_parse_duration(text: str, us: int) -> None:
    assert tf.parse_duration(text) == us


@pytest.mark.parametrize("text", ["", "abc", "5 parsecs", "-3s", "m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        tf.parse_duration(text)


@pytest.mark.parametrize(
    ("text", "f"),
    [("2", Fraction(2)), ("0.5", Fraction(1, 2)), ("3x", Fraction(3)), ("1/3", Fraction(1, 3))],
)
def test_parse_factor(text: str, f: Fraction) -> None:
    assert tf.parse_factor(text) == f


@pytest.mark.parametrize("text", ["0", "-2", "fast", "1/0"])
def test_parse_factor_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="speed factor"):
        tf.parse_factor(text)


# --- slice and merge of the pieces -----------------------------------------------------------


@FAST
@given(
    trace=traces(max_size=50, day=True),
    header=headers(),
    cuts=st.lists(st.integers(-(10**6), 5 * 10**7), max_size=4),
    rebase=st.booleans(),
)
def test_slice_then_merge_pieces_gives_back_the_trace(
    trace: list[Event], header: TraceHeader, cuts: list[int], rebase: bool
) -> None:
    bounds = [None, *sorted(set(cuts)), None]
    pieces = []
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        h, evs = run(tf.slice_trace(header, trace, lo, hi, rebase=rebase))
        assert all(e.t_us >= 0 for e in evs) or not rebase or lo is None
        pieces.append((h, evs))
    assert sum(len(p) for _, p in pieces) == len(trace)
    merged_header, merged = run(tf.merge([(h, lambda p=p: p) for h, p in pieces], pieces=True))
    assert merged == trace
    assert merged_header.origin_unix_us == header.origin_unix_us
    assert merged_header.inventory == tf._united_inventory([header])


def test_slice_rebases_and_moves_origin() -> None:
    trace = [Event(t, i, "x", "a", None, b"") for i, t in enumerate([0, 10, 20, 30, 40])]
    h, evs = run(tf.slice_trace(TraceHeader(origin_unix_us=1000), trace, 10, 30))
    assert [e.t_us for e in evs] == [0, 10] and [e.seq for e in evs] == [1, 2]
    assert h.origin_unix_us == 1010 and h.source == "transform:slice"
    h, evs = run(tf.slice_trace(TraceHeader(origin_unix_us=1000), trace, 10, 30, rebase=False))
    assert [e.t_us for e in evs] == [10, 20] and h.origin_unix_us == 1000


def test_slice_stops_reading_after_the_window() -> None:
    def endless():
        t = 0
        while True:
            yield Event(t, t, "x", "a", None, b"")
            t += 1

    _, evs = tf.slice_trace(TraceHeader(), endless(), 5, 8)
    assert [e.t_us for e in evs] == [0, 1, 2]


def test_slice_rejects_reversed_window_and_unsorted_input() -> None:
    with pytest.raises(ValueError, match="before"):
        tf.slice_trace(TraceHeader(), [], 10, 5)
    bad = [Event(5, 0, "x", "a", None, b""), Event(1, 1, "x", "a", None, b"")]
    with pytest.raises(TraceError, match="not sorted"):
        run(tf.slice_trace(TraceHeader(), bad, None, None))


def test_merge_pieces_refuses_conflicting_events() -> None:
    a = [Event(1, 1, "x", "a", None, b"")]
    b = [Event(1, 1, "y", "a", None, b"")]
    with pytest.raises(TraceError, match="two different events"):
        run(tf.merge([(TraceHeader(), lambda: a), (TraceHeader(), lambda: b)], pieces=True))


# --- speed -----------------------------------------------------------------------------------

factors = st.fractions(min_value=Fraction(1, 50), max_value=50, max_denominator=64).filter(
    lambda f: f > 0
)


@FAST
@given(trace=traces(max_size=40, day=True), f=factors)
def test_speed_then_inverse_gives_back_the_trace_within_rounding(
    trace: list[Event], f: Fraction
) -> None:
    trace = [e._replace(t_us=abs(e.t_us) % 10**13) for e in trace]
    trace.sort(key=lambda e: (e.t_us, e.seq))
    _, fast = run(tf.speed(TraceHeader(), trace, f))
    assert is_sorted(fast)
    _, back = run(tf.speed(TraceHeader(), fast, 1 / f))
    assert is_sorted(back)
    bound = Fraction(1) if f <= 1 else (f + 1) / 2
    by_seq = {e.seq: e for e in back}
    assert len(by_seq) == len(trace)
    for a in trace:  # events that rounded to one microsecond may swap, by seq: compare by seq
        b = by_seq[a.seq]
        assert abs(a.t_us - b.t_us) <= bound
        assert a._replace(t_us=0) == b._replace(t_us=0)


def test_speed_rounds_half_up() -> None:
    trace = [Event(t, t, "x", "a", None, b"") for t in (0, 1, 2, 3, 5)]
    _, out = run(tf.speed(TraceHeader(), trace, 2))
    assert [e.t_us for e in out] == [0, 1, 1, 2, 3]


# --- amplify ---------------------------------------------------------------------------------

INVENTORY = Inventory(
    events=(VenueEvent(1, "Final", 100, 5, 2500), VenueEvent(2, "Cup", 100, 3, 1000))
)


def scaled(d: Any, n: int) -> Any:
    if isinstance(d, dict):
        return {k: scaled(v, n) for k, v in d.items()}
    return d * n


def one_holder_per_ticket(trace: list[Event]) -> list[Event]:
    """As in a real crowd: a ticket code is presented by one attendee (its scans share an actor)."""
    out = []
    for e in trace:
        if e.kind == ev.SCAN:
            e = e._replace(actor=f"attendee:{e.data()['ticket_code']}")
        out.append(e)
    return out


@FAST
@given(
    trace=traces(max_size=40, day=True),
    n=st.integers(1, 4),
    jitter=st.sampled_from([0, 1, 1000, 10**6]),
    seed=st.integers(0, 3),
)
def test_amplify_multiplies_every_count_by_n(
    trace: list[Event], n: int, jitter: int, seed: int
) -> None:
    trace = one_holder_per_ticket(trace)
    header = TraceHeader(inventory=INVENTORY)
    new_header, out = run(tf.amplify(header, trace, n, jitter_us=jitter, seed=seed))
    assert len(out) == n * len(trace)
    assert project(out) == scaled(project(trace), n)
    p, q = Projection(), Projection()
    p.add_many(trace)
    q.add_many(out)
    assert q.sorted_counts() == scaled(p.sorted_counts(), n)
    assert q.sorted_targets() == scaled(p.sorted_targets(), n)
    assert [v.presold for v in new_header.inventory.events] == [5 * n, 3 * n]
    check_amplified(trace, out, n, jitter)


def check_amplified(trace: list[Event], out: list[Event], n: int, jitter: int) -> None:
    assert is_sorted(out)
    seqs = [e.seq for e in out]
    assert len(set(seqs)) == len(seqs)
    position = {e.seq: i for i, e in enumerate(out)}
    by_seq = {e.seq: e for e in trace}
    per_actor: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(out):
        src = by_seq[e.seq // n]
        # within the jitter, plus a microsecond per tie an order-keeping move pushed on
        assert -jitter <= e.t_us - src.t_us <= jitter + len(trace) or (
            src.t_us >= 0 and e.t_us == 0
        )
        if e.after is not None:
            assert position[e.after] < i  # what an event waits for comes first
        per_actor[e.actor].append(e.seq // n)
    orig_actor: dict[str, list[int]] = defaultdict(list)
    for e in trace:
        orig_actor[e.actor].append(e.seq)
    for actor, order in per_actor.items():
        if actor != "stripe":
            assert order == orig_actor[actor.split("~")[0]]  # each clone keeps its actor's order


def test_amplify_gives_clones_fresh_codes_and_ids() -> None:
    scan = {"ticket_code": "T1-0000002", "event_id": 1, "gate": "A", "lane": 0, "direction": "in"}
    bad = {**scan, "ticket_code": "T1-0000009"}  # past the 5 pre-sold: invalid
    hook = {
        "id": "evt_1",
        "object": "event",
        "type": "payment_intent.succeeded",
        "data": {
            "object": {
                "id": "pi_sim_1",
                "amount": 5000,
                "metadata": {
                    "buyer": "a@example.com",
                    "order_ref": "o1",
                    "event_id": "1",
                    "quantity": "2",
                },
            }
        },
    }
    trace = [
        Event(0, 0, ev.SCAN, "attendee:1", ev.TARGET_SCAN, pack_payload(scan), None, ev.VALID),
        Event(1, 1, ev.SCAN, "attendee:2", ev.TARGET_SCAN, pack_payload(bad), None, ev.INVALID),
        Event(
            2, 2, ev.WEBHOOK, "stripe", ev.TARGET_WEBHOOK, pack_payload(hook), None, ev.PROCESSED
        ),
        Event(
            3,
            3,
            ev.SCAN,
            "attendee:3",
            ev.TARGET_SCAN,
            pack_payload({**scan, "ticket_code": "Opi_sim_1-0"}),
            None,
            ev.VALID,
        ),
    ]
    h, out = run(tf.amplify(TraceHeader(inventory=INVENTORY), trace, 3, jitter_us=0))
    codes = [e.data()["ticket_code"] for e in out if e.seq // 3 == 0]
    assert sorted(codes) == ["T1-0000002", "T1-0000007", "T1-0000012"]  # one per copy, all pre-sold
    invalid = [e.data()["ticket_code"] for e in out if e.seq // 3 == 1]
    assert all(int(c.split("-")[1]) >= 15 for c in invalid) and len(set(invalid)) == 3
    hooks = [e.data() for e in out if e.kind == ev.WEBHOOK]
    assert {x["id"] for x in hooks} == {"evt_1", "evt_1c1", "evt_1c2"}
    assert {x["data"]["object"]["id"] for x in hooks} == {"pi_sim_1", "pi_sim_1c1", "pi_sim_1c2"}
    assert {x["data"]["object"]["metadata"]["buyer"] for x in hooks} == {
        "a@example.com",
        "a+c1@example.com",
        "a+c2@example.com",
    }
    assert {e.actor for e in out if e.kind == ev.WEBHOOK} == {"stripe"}
    order_codes = {e.data()["ticket_code"] for e in out if e.seq // 3 == 3}
    assert order_codes == {
        "Opi_sim_1-0",
        "Opi_sim_1c1-0",
        "Opi_sim_1c2-0",
    }  # match the cloned webhooks


def test_amplify_jitter_is_seeded_and_spreads_clones() -> None:
    trace = [Event(10**9, i, ev.ARRIVE, f"attendee:{i}", None, b"") for i in range(50)]
    _, a = run(tf.amplify(TraceHeader(), trace, 3, jitter_us=10**7, seed=1))
    _, b = run(tf.amplify(TraceHeader(), trace, 3, jitter_us=10**7, seed=1))
    _, c = run(tf.amplify(TraceHeader(), trace, 3, jitter_us=10**7, seed=2))
    assert a == b and a != c
    clone_times = {e.t_us for e in a if e.seq % 3}
    assert len(clone_times) > 90  # not in lockstep: 100 clones at ~100 distinct times


def test_amplify_memory_is_bounded_by_the_window() -> None:
    """A long trace streams through: the re-sort buffer never holds more than the window."""
    held = []

    def source():
        for i in range(20_000):
            yield Event(i * 1000, i, ev.ARRIVE, f"attendee:{i % 500}", None, b"")

    _, out = tf.amplify(TraceHeader(), source(), 2, jitter_us=5000)
    count = 0
    for e in out:
        count += 1
        held.append(e.t_us)
    assert count == 40_000
    # the generator's heap is local; bounded memory shows as ordered output produced while reading
    assert held == sorted(held)


def test_amplify_rejects_bad_n() -> None:
    with pytest.raises(ValueError, match="N must be"):
        tf.amplify(TraceHeader(), [], 0)


# --- merge of different traces ---------------------------------------------------------------


@FAST
@given(a=traces(max_size=30, day=True), b=traces(max_size=30, day=True))
def test_merge_renumbers_seq_and_keeps_each_input(a: list[Event], b: list[Event]) -> None:
    h, out = run(tf.merge([(TraceHeader(), lambda: a), (TraceHeader(), lambda: b)]))
    assert [e.seq for e in out] == list(range(len(a) + len(b)))
    assert is_sorted(out)
    for e in out:
        if e.after is not None:
            assert e.after < e.seq
    # every input comes back, in its order, once the renames are undone
    from_b = [e for e in out if e.actor.endswith("#2")]
    assert all(e.actor[:-2] in {x.actor for x in a} for e in from_b)
    assert sorted((e.t_us, e.kind, e.payload) for e in out) == sorted(
        (e.t_us, e.kind, e.payload) for e in a + b
    )
    assert project(out)["scans"] == {
        k: project(a)["scans"].get(k, 0) + project(b)["scans"].get(k, 0)
        for k in set(project(a)["scans"]) | set(project(b)["scans"])
    }


def test_merge_keeps_colliding_actors_distinct_and_after_links() -> None:
    a = [
        Event(0, 5, ev.CHECKOUT, "buyer:1", ev.TARGET_PI_CREATE, b""),
        Event(10, 6, ev.CONFIRM, "buyer:1", ev.TARGET_PI_CONFIRM, b"", 5),
    ]
    b = [
        Event(3, 5, ev.CHECKOUT, "buyer:1", ev.TARGET_PI_CREATE, b""),
        Event(4, 9, ev.CONFIRM, "buyer:1", ev.TARGET_PI_CONFIRM, b"", 5),
    ]
    inv_a = Inventory(events=(VenueEvent(1, "x", 10, 4, 100),))
    inv_b = Inventory(events=(VenueEvent(1, "x", 20, 9, 100), VenueEvent(2, "y", 5, 5, 100)))
    h, out = run(
        tf.merge(
            [(TraceHeader(inventory=inv_a), lambda: a), (TraceHeader(inventory=inv_b), lambda: b)]
        )
    )
    assert [(e.t_us, e.seq, e.actor, e.after) for e in out] == [
        (0, 0, "buyer:1", None),
        (3, 1, "buyer:1#2", None),
        (4, 2, "buyer:1#2", 1),
        (10, 3, "buyer:1", 0),
    ]
    assert [(v.id, v.presold) for v in h.inventory.events] == [(1, 9), (2, 5)]


def test_merge_keeps_every_inputs_thresholds() -> None:
    # the first input's thresholds alone would let the others' scenarios pass unjudged
    scan = {"name": "scanner-burst", "thresholds": {"http_req_failed": ["rate==0"]}}
    dash = {
        "name": "dashboard-load",
        "thresholds": {"dashboard_load": ["p(95)<3000"], "http_req_failed": "rate==0"},
    }
    hooks = {"name": "webhook-burst", "thresholds": {"checks{target:fn:stripe-webhook}": "rate==1"}}
    h, _ = run(tf.merge([(TraceHeader(scenario=sc), list) for sc in (scan, dash, hooks)]))
    assert h.scenario["thresholds"] == {
        "http_req_failed": ["rate==0"],
        "dashboard_load": ["p(95)<3000"],
        "checks{target:fn:stripe-webhook}": ["rate==1"],
    }


def test_merge_refuses_mixed_reentry_rules() -> None:
    with pytest.raises(ValueError, match="allow_reentry"):
        tf.merge(
            [(TraceHeader(inventory=Inventory(allow_reentry=True)), list), (TraceHeader(), list)]
        )


# --- filter ----------------------------------------------------------------------------------


@FAST
@given(
    trace=traces(max_size=40, day=True),
    kinds=st.sets(
        st.sampled_from([ev.SCAN, ev.WEBHOOK, ev.VIEW, ev.ARRIVE]), min_size=1, max_size=3
    ),
)
def test_filter_and_its_inverse_partition_the_trace(trace: list[Event], kinds: set[str]) -> None:
    _, kept = run(tf.filter_trace(TraceHeader(), trace, kinds=sorted(kinds)))
    _, rest = run(tf.filter_trace(TraceHeader(), trace, kinds=sorted(kinds), invert=True))
    assert all(e.kind in kinds for e in kept) and all(e.kind not in kinds for e in rest)
    _, back = run(
        tf.merge([(TraceHeader(), lambda: kept), (TraceHeader(), lambda: rest)], pieces=True)
    )
    assert back == trace


def test_filter_by_target_glob_actor_and_no_target() -> None:
    trace = [
        Event(0, 0, ev.SCAN, "attendee:1", ev.TARGET_SCAN, b""),
        Event(1, 1, ev.VIEW, "viewer:1", ev.TARGET_REST_EVENTS, b""),
        Event(2, 2, ev.ARRIVE, "attendee:2", None, b""),
        Event(3, 3, ev.VIEW, "viewer:2", ev.TARGET_REVENUE, b""),
    ]
    pick = lambda **kw: [e.seq for e in run(tf.filter_trace(TraceHeader(), trace, **kw))[1]]  # noqa: E731
    assert pick(targets=["rpc:*"]) == [0, 3]
    assert pick(targets=["-"]) == [2]
    assert pick(actors=["attendee:*"]) == [0, 2]
    assert pick(actors=["viewer:*"], targets=["rest:*"]) == [1]
