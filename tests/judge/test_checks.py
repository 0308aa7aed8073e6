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


def loop_judge_groups(table, target_of, candidates):
    """The group checks as first written, one row at a time: the oracle of judge_groups."""
    import numpy as np  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415

    n = len(table)
    grouped, lead, lead_passed = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    lead_check = np.full(n, "", dtype=object)
    has_group = pc.is_valid(table["group"]).to_numpy(zero_copy_only=False) & candidates
    idx = np.flatnonzero(has_group)
    if not len(idx):
        return checks.GroupVerdicts(grouped, lead, lead_passed, lead_check, (), 0)
    groups = pc.take(table["group"], pa.array(idx)).to_pylist()
    expects = pc.take(table["expect"], pa.array(idx)).to_pylist()
    outcomes = pc.take(table["outcome"], pa.array(idx)).to_pylist()
    seqs = pc.take(table["seq"], pa.array(idx)).to_numpy(zero_copy_only=False)
    order = sorted(range(len(idx)), key=lambda i: (groups[i], int(seqs[i])))
    failed, failed_count = [], [0]

    def close(members, check):
        if not members:
            return
        want = sum(expects[i] in ("processed", "valid") for i in members)
        win = "processed" if check == checks.WEBHOOK_CHECK else "valid"
        lose = "duplicate" if check == checks.WEBHOOK_CHECK else "already_scanned"
        won = sum(outcomes[i] == win for i in members)
        lost = sum(outcomes[i] == lose for i in members)
        ok = won == want and won + lost == len(members)
        rows = idx[members]
        grouped[rows] = True
        first = rows[int(np.argmin(seqs[members]))]
        lead[first], lead_passed[first] = True, ok
        lead_check[first] = name = f"{target_of(first)} {check}"
        if not ok:
            failed_count[0] += 1
            if len(failed) < checks.MAX_LISTED:
                reqs = tuple((int(seqs[i]), expects[i], outcomes[i]) for i in members)
                failed.append(checks.FailedGroup(name, groups[members[0]], reqs))

    def kind(g):
        return checks.WEBHOOK_CHECK if (g or "").startswith("evt:") else checks.TICKET_CHECK

    members, current = [], None
    for i in order:
        g = groups[i]
        if g != current:
            close(members, kind(current))
            members, current = [], g
        if g.startswith("ticket:") and expects[i] not in ("valid", "already_scanned"):
            close(members, checks.TICKET_CHECK)
            members = []
            continue
        if g.startswith("evt:") and expects[i] not in ("processed", "duplicate"):
            continue
        members.append(i)
    close(members, kind(current))
    return checks.GroupVerdicts(
        grouped, lead, lead_passed, lead_check, tuple(failed), failed_count[0]
    )


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 30),  # seq (repeats allowed)
            st.sampled_from([None, "evt:e1", "evt:e2", "ticket:1/A", "ticket:1/B", "other"]),
            st.sampled_from(
                ["processed", "duplicate", "valid", "already_scanned", "exited", "invalid"]
            ),
            st.sampled_from([None, "processed", "duplicate", "valid", "already_scanned", "exited"]),
            st.booleans(),  # a candidate row
            st.sampled_from([HOOK, SCAN]),
        ),
        max_size=60,
    )
)
def test_columnar_group_checks_match_the_row_loop(rows):
    """judge_groups gives the verdicts of the simple loop it replaced, whatever the rows."""
    import numpy as np  # noqa: PLC0415

    table = m.table_from_rows(
        [row(s, target=t, outcome=o, expect=e, group=g) for s, g, e, o, _, t in rows]
    )
    candidates = np.array([c for *_, c, _ in rows], bool)
    target_of = table["target"].to_pylist().__getitem__
    got = checks.judge_groups(table, target_of, candidates)
    want = loop_judge_groups(table, target_of, candidates)
    for f in ("grouped", "lead", "lead_passed", "lead_check"):
        assert getattr(got, f).tolist() == getattr(want, f).tolist(), f
    assert got.failed == want.failed and got.failed_count == want.failed_count
