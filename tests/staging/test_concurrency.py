"""Concurrency with real sockets: admission at most once, webhooks exactly once, no partial order."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from typing import Any

import aiohttp
import stripe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.staging.conftest import headers, request
from traces.event import order_ticket_code, ticket_code

PRICE = 2500  # event 2's price: every order here is quantity * PRICE
_pi_numbers = itertools.count()


def test_200_concurrent_scans_of_one_ticket_admit_it_once(standin: Any) -> None:
    codes = [ticket_code(1, n) for n in (10, 11, 12)]

    async def storm() -> list[dict[str, Any]]:
        conn = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(connector=conn) as session:
            url = f"{standin.url}/rest/v1/rpc/scan_ticket_atomic"
            tasks = [
                request(
                    session,
                    "POST",
                    url,
                    headers=headers(standin),
                    json={
                        "p_ticket_code": code,
                        "p_event_id": 1,
                        "p_gate": "A",
                        "p_lane": str(i % 8),
                    },
                )
                for i in range(200)
                for code in codes
            ]
            return [body for status, body, _ in await asyncio.gather(*tasks) if status == 200]

    answers = asyncio.run(storm())
    assert len(answers) == 600
    for code in codes:
        outcomes = Counter(a["outcome"] for a in answers if a["ticket"]["code"] == code)
        assert outcomes == {"valid": 1, "already_scanned": 199}
        firsts = {a["first_scanned_at"] for a in answers if a["ticket"]["code"] == code}
        assert len(firsts) == 1 and None not in firsts  # every answer names the same first scan
    state = standin.end_state()
    assert state["scans"]["valid"] >= 3


def _pi_event(pi: str, quantity: int) -> dict[str, Any]:
    return {
        "id": f"evt_s_{pi}",
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": 1,
        "livemode": False,
        "api_version": "2025-01-27.acacia",
        "data": {
            "object": {
                "id": pi,
                "object": "payment_intent",
                "amount": quantity * PRICE,
                "currency": "usd",
                "status": "succeeded",
                "metadata": {"event_id": "2", "quantity": str(quantity), "buyer": f"b-{pi}"},
            }
        },
    }


def _session_event(pi: str, quantity: int) -> dict[str, Any]:
    return {
        "id": f"evt_c_{pi}",
        "object": "event",
        "type": "checkout.session.completed",
        "created": 1,
        "livemode": False,
        "data": {
            "object": {
                "id": f"cs_{pi}",
                "object": "checkout.session",
                "payment_intent": pi,
                "payment_status": "paid",
                "amount_total": quantity * PRICE,
                "currency": "usd",
                "metadata": {"event_id": "2", "quantity": str(quantity)},
            }
        },
    }


def _refund_event(pi: str, quantity: int) -> dict[str, Any]:
    return {
        "id": f"evt_r_{pi}",
        "object": "event",
        "type": "charge.refunded",
        "created": 1,
        "livemode": False,
        "data": {
            "object": {
                "id": f"ch_{pi}",
                "object": "charge",
                "payment_intent": pi,
                "amount": quantity * PRICE,
                "amount_refunded": quantity * PRICE,
                "refunded": True,
                "metadata": {"event_id": "2"},
            }
        },
    }


payments = st.lists(
    st.tuples(
        st.integers(1, 4), st.booleans(), st.booleans(), st.integers(0, 3)
    ),  # qty, session too, refund, dups
    min_size=20,
    max_size=60,
)


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=payments, order=st.randoms(use_true_random=False))
def test_webhook_storm_leaves_one_order_per_payment_and_no_partial_reads(
    standin: Any, plan: list[Any], order: Any
) -> None:
    deliveries: list[dict[str, Any]] = []
    expected: dict[str, tuple[int, bool]] = {}
    for qty, session_too, refunded, dups in plan:
        pi = f"pi_storm{next(_pi_numbers):06d}"
        expected[pi] = (qty, refunded)
        events = [_pi_event(pi, qty)] + ([_session_event(pi, qty)] if session_too else [])
        events += [_refund_event(pi, qty)] if refunded else []
        for ev in events:
            deliveries += [ev] * (1 + dups)
    while len(deliveries) < 500:  # top up with further duplicates up to 500 deliveries
        deliveries.append(deliveries[order.randrange(len(deliveries))])
    order.shuffle(deliveries)  # no order guarantee: refunds may come before their payment
    secret = standin.webhook_secret
    reads: list[dict[str, Any]] = []

    async def storm() -> list[tuple[int, Any, dict[str, str]]]:
        conn = aiohttp.TCPConnector(limit=128)
        async with aiohttp.ClientSession(connector=conn) as session:
            done = asyncio.Event()

            async def reader() -> None:
                while not done.is_set():
                    status, body, _ = await request(
                        session,
                        "POST",
                        f"{standin.url}/rest/v1/rpc/event_revenue",
                        headers=headers(standin),
                        json={"p_event_id": 2},
                    )
                    assert status == 200, body
                    reads.append(body)
                    await asyncio.sleep(0)

            async def deliver(ev: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
                payload = json.dumps(ev)
                sig = stripe.WebhookSignature.generate_signature_header(payload, secret)
                return await request(
                    session,
                    "POST",
                    f"{standin.url}/functions/v1/stripe-webhook",
                    data=payload.encode(),
                    headers={"Stripe-Signature": sig, "Content-Type": "application/json"},
                )

            readers = [asyncio.create_task(reader()) for _ in range(4)]
            results = await asyncio.gather(*(deliver(ev) for ev in deliveries))
            done.set()
            await asyncio.gather(*readers)
            return results

    results = asyncio.run(storm())
    assert all(status == 200 for status, _, _ in results), [r for r in results if r[0] != 200][:3]
    outcomes = Counter(body["outcome"] for _, body, _ in results)
    distinct = len({ev["id"] for ev in deliveries})
    assert outcomes == {"processed": distinct, "duplicate": len(deliveries) - distinct}
    assert reads
    for r in reads:  # an order is never visible without all its tickets
        assert r["revenue_cents"] == PRICE * r["tickets_sold"], r

    async def final() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with aiohttp.ClientSession() as session:
            pis = ",".join(expected)
            _, orders, _ = await request(
                session,
                "GET",
                f"{standin.url}/rest/v1/orders",
                params={
                    "payment_intent": f"in.({pis})",
                    "select": "id,payment_intent,quantity,status",
                },
                headers=headers(standin),
            )
            ids = ",".join(str(o["id"]) for o in orders)
            _, tickets, _ = await request(
                session,
                "GET",
                f"{standin.url}/rest/v1/tickets",
                params={"order_id": f"in.({ids})", "select": "code,order_id,status"},
                headers=headers(standin),
            )
            return orders, tickets

    orders, tickets = asyncio.run(final())
    assert sorted(o["payment_intent"] for o in orders) == sorted(
        expected
    )  # exactly one order per payment
    by_order = Counter(t["order_id"] for t in tickets)
    for o in orders:
        qty, refunded = expected[o["payment_intent"]]
        assert o["quantity"] == qty and by_order[o["id"]] == qty
        assert o["status"] == (
            "refunded" if refunded else "paid"
        )  # a refund before its payment is not lost
        codes = {t["code"] for t in tickets if t["order_id"] == o["id"]}
        assert codes == {order_ticket_code(o["payment_intent"], i) for i in range(qty)}
