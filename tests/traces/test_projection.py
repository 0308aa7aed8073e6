"""The expected end state fold: per event and per batch agree, and the domain rules hold."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import traces
from traces import event as ev
from traces.event import Event, pack_payload
from traces.projection import Projection, project
from traces.schema import events_to_batch


@settings(max_examples=80, deadline=None)
@given(events=traces(max_size=60, day=True), data=st.data())
def test_batch_fold_equals_event_fold_wherever_the_batches_are_cut(events, data) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=4), label="cuts"))
    by_event, by_batch = Projection(), Projection()
    by_event.add_many(events)
    for lo, hi in zip([0, *cuts], [*cuts, len(events)], strict=True):
        by_batch.add_batch(events_to_batch(events[lo:hi]))
    assert by_batch.result() == by_event.result()
    assert by_batch.sorted_counts() == by_event.sorted_counts()
    assert by_batch.sorted_targets() == by_event.sorted_targets()
    assert by_batch.events == by_event.events == len(events)


@settings(max_examples=60, deadline=None)
@given(events=traces(max_size=60, day=True))
def test_invariants(events) -> None:
    r = project(events)
    assert r["inside"] == r["admitted"] + r["reentries"] - r["exits"]
    scans = [e for e in events if e.target == ev.TARGET_SCAN and e.expect is not None]
    assert sum(r["scans"].values()) == len(scans)
    assert r["admitted"] + r["reentries"] == r["scans"].get("valid", 0)
    assert r["webhooks_processed"] + r["webhooks_duplicate"] == r["webhooks"]
    assert r["orders"] <= r["webhooks_processed"]
    assert sum(v["admitted"] for v in r["by_event"].values()) == r["admitted"]
    assert sum(v["revenue_cents"] for v in r["by_event"].values()) == r["revenue_cents"]


def scan(seq: int, code: str, expect: str, direction: str = "in") -> Event:
    payload = pack_payload(
        {"ticket_code": code, "event_id": 1, "gate": "A", "lane": 0, "direction": direction}
    )
    return Event(seq, seq, ev.SCAN, "attendee:1", ev.TARGET_SCAN, payload, None, expect)


def webhook(seq: int, etype: str, amount: int, expect: str = ev.PROCESSED, **obj) -> Event:
    body = {
        "id": f"evt_{seq}",
        "object": "event",
        "type": etype,
        "data": {
            "object": {
                "id": "pi_1",
                "amount": amount,
                "metadata": {"event_id": "2", "quantity": "3"},
                **obj,
            }
        },
    }
    return Event(
        seq, seq, ev.WEBHOOK, "stripe", ev.TARGET_WEBHOOK, pack_payload(body), None, expect
    )


def test_admission_pass_out_and_re_entry() -> None:
    r = project(
        [
            scan(1, "T1-1", ev.VALID),
            scan(2, "T1-1", ev.ALREADY_SCANNED),  # a shared screenshot
            scan(3, "T1-1", ev.EXITED, "out"),
            scan(4, "T1-1", ev.VALID),  # re-entry
            scan(5, "T1-2", ev.VALID),
            scan(6, "nope", ev.INVALID),
        ]
    )
    assert (r["admitted"], r["reentries"], r["exits"], r["inside"]) == (2, 1, 1, 2)
    assert r["scans"] == {"already_scanned": 1, "exited": 1, "invalid": 1, "valid": 3}
    assert r["by_event"]["1"]["admitted"] == 2


def test_orders_come_from_processed_webhooks_only_and_refunds_subtract() -> None:
    r = project(
        [
            Event(
                0,
                0,
                ev.CHECKOUT,
                "buyer:1",
                ev.TARGET_PI_CREATE,
                pack_payload({"amount": 7500}),
                None,
                None,
            ),
            Event(1, 1, ev.CONFIRM, "buyer:1", ev.TARGET_PI_CONFIRM, b"", 0, ev.SUCCEEDED),
            Event(2, 2, ev.CONFIRM, "buyer:2", ev.TARGET_PI_CONFIRM, b"", None, ev.DECLINED),
            Event(3, 3, ev.ABANDON, "buyer:3", None, b"", None, None),
            webhook(4, "payment_intent.succeeded", 7500),
            webhook(5, "payment_intent.succeeded", 7500, expect=ev.DUPLICATE),
            webhook(6, "payment_intent.created", 7500),
            webhook(7, "charge.refunded", 7500, amount_refunded=2500),
        ]
    )
    assert r["checkouts"] == 1 and r["payments_succeeded"] == 1 and r["payments_declined"] == 1
    assert r["abandoned"] == 1
    assert (r["orders"], r["tickets_sold"], r["revenue_cents"]) == (1, 3, 5000)
    assert (r["refunds"], r["refunded_cents"]) == (1, 2500)
    assert (r["webhooks"], r["webhooks_processed"], r["webhooks_duplicate"]) == (4, 3, 1)
    assert r["by_event"]["2"] == {
        "admitted": 0,
        "orders": 1,
        "revenue_cents": 5000,
        "tickets_sold": 3,
    }


def test_payloads_that_are_not_what_they_should_be_are_counted_but_change_nothing() -> None:
    r = project(
        [
            Event(1, 1, ev.WEBHOOK, "stripe", ev.TARGET_WEBHOOK, b"\xc1junk", None, ev.PROCESSED),
            Event(
                2,
                2,
                ev.WEBHOOK,
                "stripe",
                ev.TARGET_WEBHOOK,
                pack_payload([1, 2]),
                None,
                ev.PROCESSED,
            ),
            Event(
                3,
                3,
                ev.SCAN,
                "a",
                ev.TARGET_SCAN,
                pack_payload({"ticket_code": [1]}),
                None,
                ev.VALID,
            ),
        ]
    )
    assert r["webhooks_processed"] == 2 and r["orders"] == 0
    assert r["admitted"] == 1


def test_empty() -> None:
    r = project([])
    assert r["scans"] == {} and r["by_event"] == {} and r["admitted"] == 0
