"""Group checks: what the target promises, whatever order duplicate deliveries and concurrent scans
arrive in (judge.checks), judged through judge.metrics as a replay's rows are."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from judge import checks
from judge import metrics as m
from tests.judge.test_metrics import row
from traces.event import Event, pack_payload

HOOK = "fn:stripe-webhook"
SCAN = "rpc:scan_ticket_atomic"


@st.composite
def deliveries(draw: st.DrawFn) -> list[tuple[str, int]]:
    """Stripe events and how many times each is delivered: [(event id, deliveries)]."""
    n = draw(st.integers(1, 8))
    return [(f"evt_{i}", draw(st.integers(1, 4))) for i in range(n)]


@st.composite
def admissions(draw: st.DrawFn) -> list[tuple[str, list[int]]]:
    """Tickets and their admissions: [(code, [scans in admission 1, scans in admission 2, ...])]."""
    n = draw(st.integers(1, 6))
    return [(f"T-{i}", draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))) for i in range(n)]


def webhook_rows(
    events: list[tuple[str, int]], arrival: st.DataObject, twice: str | None = None
) -> list[tuple]:
    """Rows of a replay of these deliveries: expected in trace order (first processed), answered
    in a random arrival order by a target that processes the first arrival of each event; the
    event `twice` is processed by its first two arrivals (a target that is not idempotent)."""
    rows, seq = [], 0
    for ev_id, k in events:
        seqs = list(range(seq, seq + k))
        seq += k
        order = arrival.draw(st.permutations(seqs))
        wins = set(order[:2] if ev_id == twice and k > 1 else order[:1])
        for s in seqs:
            expect = "processed" if s == seqs[0] else "duplicate"
            outcome = "processed" if s in wins else "duplicate"
            rows.append(row(s, target=HOOK, kind="webhook", scheduled_us=s * 10, outcome=outcome,
                            expect=expect, group=f"evt:{ev_id}"))  # fmt: skip
    return rows


def scan_rows(
    tickets: list[tuple[str, list[int]]], arrival: st.DataObject, twice: str | None = None
) -> list[tuple]:
    """Rows of scans of tickets, admission after admission with an exit between: within an
    admission the scans race (random arrival order) and the first to arrive is admitted; the
    ticket `twice` is admitted by two scans of its first admission (a target that double-admits)."""
    rows, seq = [], 0
    for code, sizes in tickets:
        group = f"ticket:1/{code}"
        for a, k in enumerate(sizes):
            seqs = list(range(seq, seq + k))
            seq += k
            order = arrival.draw(st.permutations(seqs))
            wins = set(order[:2] if code == twice and a == 0 and k > 1 else order[:1])
            for s in seqs:
                rows.append(row(s, target=SCAN, scheduled_us=s * 10,
                                outcome="valid" if s in wins else "already_scanned",
                                expect="valid" if s == seqs[0] else "already_scanned", group=group))  # fmt: skip
            if a < len(sizes) - 1:  # out through the gate: the next admission may enter again
                rows.append(row(seq, target=SCAN, scheduled_us=seq * 10, outcome="exited",
                                expect="exited", group=group))  # fmt: skip
                seq += 1
    return rows


def check_counts(rows: list[tuple]) -> dict[str, tuple[int, int]]:
    mt = m.from_table(m.table_from_rows(rows))
    return {name: (p, f) for name, p, f in mt.checks}


@settings(max_examples=150, deadline=None)
@given(events=deliveries(), arrival=st.data())
def test_duplicate_deliveries_pass_in_any_arrival_order(events, arrival) -> None:
    counts = check_counts(webhook_rows(events, arrival))
    assert counts == {f"{HOOK} {checks.WEBHOOK_CHECK}": (len(events), 0)}


@settings(max_examples=150, deadline=None)
@given(events=deliveries().filter(lambda e: any(k > 1 for _, k in e)), arrival=st.data())
def test_an_event_processed_twice_fails_its_group(events, arrival) -> None:
    twice = next(ev_id for ev_id, k in events if k > 1)
    counts = check_counts(webhook_rows(events, arrival, twice=twice))
    assert counts == {f"{HOOK} {checks.WEBHOOK_CHECK}": (len(events) - 1, 1)}
    mt = m.from_table(m.table_from_rows(webhook_rows(events, arrival, twice=twice)))
    assert [g.group for g in mt.failed_groups] == [f"evt:{twice}"]
    assert mt.failed_group_count == 1


@settings(max_examples=150, deadline=None)
@given(tickets=admissions(), arrival=st.data())
def test_concurrent_scans_and_reentries_pass_in_any_arrival_order(tickets, arrival) -> None:
    counts = check_counts(scan_rows(tickets, arrival))
    entries = sum(len(sizes) for _, sizes in tickets)
    exits = entries - len(tickets)
    want = {f"{SCAN} {checks.TICKET_CHECK}": (entries, 0)}
    if exits:
        want[f"{SCAN} is exited"] = (exits, 0)
    assert counts == want


@settings(max_examples=150, deadline=None)
@given(tickets=admissions().filter(lambda t: any(s[0] > 1 for _, s in t)), arrival=st.data())
def test_a_ticket_admitted_twice_fails_its_entry(tickets, arrival) -> None:
    twice = next(code for code, sizes in tickets if sizes[0] > 1)
    counts = check_counts(scan_rows(tickets, arrival, twice=twice))
    entries = sum(len(sizes) for _, sizes in tickets)
    assert counts[f"{SCAN} {checks.TICKET_CHECK}"] == (entries - 1, 1)


def test_a_lost_delivery_fails_its_group_and_per_request_checks_stay() -> None:
    rows = [
        row(0, target=HOOK, kind="webhook", outcome="processed", expect="processed", group="evt:a"),
        row(
            1,
            target=HOOK,
            kind="webhook",
            status=0,
            error="connection closed",
            outcome=None,
            expect="duplicate",
            group="evt:a",
        ),  # fmt: skip
        row(2, target=SCAN, outcome="invalid", expect="invalid", group="ticket:1/NOPE"),
        row(3, target=SCAN, outcome="valid", expect="valid"),  # no group: a per-request check
    ]
    counts = check_counts(rows)
    assert counts == {
        f"{HOOK} {checks.WEBHOOK_CHECK}": (0, 1),
        f"{SCAN} is invalid": (1, 0),
        f"{SCAN} is valid": (1, 0),
    }


def test_group_of_reads_the_stripe_event_id_and_the_ticket() -> None:
    hook = Event(0, 1, "webhook", "stripe", HOOK, pack_payload({"id": "evt_9", "object": "event"}),
                 expect="duplicate")  # fmt: skip
    scan = Event(0, 2, "scan", "attendee:1", SCAN,
                 pack_payload({"ticket_code": "T1-7", "event_id": 1}), expect="valid")  # fmt: skip
    view = Event(0, 3, "view", "viewer:1", "rest:events", pack_payload({}), expect="ok")
    assert checks.group_of(hook) == "evt:evt_9"
    assert checks.group_of(scan) == "ticket:1/T1-7"
    assert checks.group_of(view) is None
