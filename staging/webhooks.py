"""The `stripe-webhook` edge function: signature check, idempotency, out-of-order-safe fulfilment."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import stripe

from staging.errors import FunctionError, PostgrestError
from staging.schema import now_iso
from staging.values import INT8, int_in_range, parse_json
from traces.event import DUPLICATE, PROCESSED, order_ticket_code

FULFIL_TYPES = frozenset(
    {
        "payment_intent.succeeded",
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
    }
)
REFUND_TYPES = frozenset({"charge.refunded"})


def verify_event(
    payload: bytes, signature: str | None, secret: str, tolerance: int = 300
) -> dict[str, Any]:
    """The Stripe event of a delivery whose Stripe-Signature verifies; FunctionError 400 otherwise.

    Verification is the stripe library's own (`WebhookSignature.verify_header`, the check
    `Webhook.construct_event` runs, with the same errors and tolerance); the payload is then
    parsed as plain JSON, skipping the StripeObject that construct_event builds: that object
    cost ten times the verification and is not part of what the real function does under load.
    """
    if not signature:
        raise FunctionError(400, "Missing Stripe-Signature header")
    try:
        stripe.WebhookSignature.verify_header(payload, signature, secret, tolerance)
    except stripe.SignatureVerificationError as exc:
        raise FunctionError(
            400, f"Webhook signature verification failed: {exc.user_message or exc}"
        ) from None
    except UnicodeDecodeError as exc:
        raise FunctionError(400, f"Webhook payload is not UTF-8: {exc}") from None
    try:
        d = parse_json(payload)
    except PostgrestError as exc:
        raise FunctionError(
            400, f"Webhook payload is not valid JSON: {exc.body['details'] or exc.body['message']}"
        ) from None
    if not isinstance(d, dict):
        raise FunctionError(400, "Webhook payload must be a JSON object (a Stripe event)")
    if not isinstance(d.get("id"), str) or not isinstance(d.get("type"), str):
        raise FunctionError(400, "Stripe event must have string 'id' and 'type'")
    data = d.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise FunctionError(400, f"Stripe event {d['id']}: 'data.object' must be an object")
    return d


def _payment(event: dict[str, Any]) -> dict[str, Any] | None:
    """What fulfilment needs from a paying event: pi id, amount, currency, metadata; None if not paid."""
    typ = event["type"]
    obj = event["data"]["object"]
    if typ == "payment_intent.succeeded":
        pi = obj.get("id")
        amount = obj.get("amount_received") or obj.get("amount")
    else:  # checkout.session.*
        if obj.get("payment_status") != "paid":
            return None
        pi = obj.get("payment_intent") or obj.get("id")
        amount = obj.get("amount_total")
    md = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    where = f"Stripe event {event['id']} ({typ})"
    if not isinstance(pi, str) or not pi:
        raise FunctionError(400, f"{where}: no payment intent id")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise FunctionError(
            400, f"{where}: amount must be a non-negative integer of cents, got {amount!r}"
        )
    try:
        event_id = int_in_range(md["event_id"], INT8)
        quantity = int_in_range(md.get("quantity", 1), INT8)
    except (KeyError, PostgrestError):
        raise FunctionError(
            400,
            f"{where}: metadata.event_id and metadata.quantity must be integers, "
            f"got {str(md.get('event_id'))[:40]!r} and {str(md.get('quantity'))[:40]!r}",
        ) from None
    if quantity < 1 or quantity > 1000:
        raise FunctionError(400, f"{where}: metadata.quantity must be 1..1000, got {quantity}")
    return {
        "pi": pi,
        "amount": amount,
        "currency": str(obj.get("currency") or "usd"),
        "event_id": event_id,
        "quantity": quantity,
        "buyer": _text(md.get("buyer")),
        "order_ref": _text(md.get("order_ref")),
    }


def _text(v: Any) -> str | None:
    return None if v is None else v if isinstance(v, str) else json.dumps(v)


def webhook_job(
    conn: sqlite3.Connection,
    changes: list[Any],
    event: dict[str, Any],
    run_id: str | None,
    publish: frozenset[str],
) -> str:
    """Apply one verified Stripe event exactly once; 'processed' or 'duplicate'.

    The event id row, the order and all its tickets are written in one transaction, so no
    reader ever sees an order without its tickets. A refund that arrives before its payment
    is kept in pending_refunds and applied when the payment's order is created.
    """
    now = now_iso()
    eid, typ = event["id"], event["type"]
    obj = event["data"]["object"]
    cur = conn.execute(
        "INSERT OR IGNORE INTO webhook_events(id, type, object_id, received_at, run_id) VALUES (?,?,?,?,?)",
        (eid, typ, _text(obj.get("id")), now, run_id),
    )
    if cur.rowcount == 0:
        conn.execute("UPDATE webhook_events SET deliveries = deliveries + 1 WHERE id = ?", (eid,))
        return DUPLICATE
    if typ in FULFIL_TYPES:
        pay = _payment(event)
        if pay is not None:
            _fulfil(conn, changes, pay, eid, run_id, now, publish)
    elif (
        typ in REFUND_TYPES and obj.get("refunded") is not False
    ):  # a partial refund keeps the order
        pi = obj.get("payment_intent") if obj.get("object") != "payment_intent" else obj.get("id")
        if not isinstance(pi, str) or not pi:
            raise FunctionError(400, f"Stripe event {eid} ({typ}): no payment_intent on the charge")
        if not _refund(conn, changes, pi, now, publish):
            conn.execute(
                "INSERT OR IGNORE INTO pending_refunds(payment_intent, stripe_event, received_at, run_id)"
                " VALUES (?,?,?,?)",
                (pi, eid, now, run_id),
            )
    return PROCESSED


def _fulfil(
    conn: sqlite3.Connection,
    changes: list[Any],
    pay: dict[str, Any],
    eid: str,
    run_id: str | None,
    now: str,
    publish: frozenset[str],
) -> None:
    cur = conn.execute(
        "INSERT OR IGNORE INTO orders(payment_intent, event_id, buyer, order_ref, quantity, amount_cents,"
        " currency, status, stripe_event, created_at, run_id) VALUES (?,?,?,?,?,?,?,'paid',?,?,?)",
        (
            pay["pi"],
            pay["event_id"],
            pay["buyer"],
            pay["order_ref"],
            pay["quantity"],
            pay["amount"],
            pay["currency"],
            eid,
            now,
            run_id,
        ),
    )
    if cur.rowcount == 0:  # another event of the same payment made the order already
        return
    order_id = cur.lastrowid
    codes = [order_ticket_code(pay["pi"], i) for i in range(pay["quantity"])]
    conn.executemany(
        "INSERT OR IGNORE INTO tickets(code, event_id, order_id, created_at, run_id) VALUES (?,?,?,?,?)",
        ((c, pay["event_id"], order_id, now, run_id) for c in codes),
    )
    if "orders" in publish:
        changes.append(("orders", "INSERT", _row(conn, "orders", order_id), None, now))
    if "tickets" in publish:
        for r in conn.execute("SELECT * FROM tickets WHERE order_id = ? ORDER BY id", (order_id,)):
            changes.append(("tickets", "INSERT", _ticket(r), None, now))
    if conn.execute("DELETE FROM pending_refunds WHERE payment_intent = ?", (pay["pi"],)).rowcount:
        _refund(conn, changes, pay["pi"], now, publish)


def _refund(
    conn: sqlite3.Connection, changes: list[Any], pi: str, now: str, publish: frozenset[str]
) -> bool:
    """Mark a payment's order and tickets refunded; False if no order exists yet."""
    row = conn.execute("SELECT id, status FROM orders WHERE payment_intent = ?", (pi,)).fetchone()
    if row is None:
        return False
    if row[1] != "refunded":
        conn.execute("UPDATE orders SET status='refunded', refunded_at=? WHERE id=?", (now, row[0]))
        conn.execute(
            "UPDATE tickets SET status='refunded', updated_at=? WHERE order_id=?", (now, row[0])
        )
        if "orders" in publish:
            changes.append(("orders", "UPDATE", _row(conn, "orders", row[0]), {"id": row[0]}, now))
        if "tickets" in publish:
            for r in conn.execute(
                "SELECT * FROM tickets WHERE order_id = ? ORDER BY id", (row[0],)
            ):
                changes.append(("tickets", "UPDATE", _ticket(r), {"id": r["id"]}, now))
    return True


def _row(conn: sqlite3.Connection, table: str, rowid: int) -> dict[str, Any]:
    r = conn.execute(f"SELECT * FROM {table} WHERE id = ?", (rowid,)).fetchone()
    return dict(r) if r is not None else {}


def _ticket(r: sqlite3.Row) -> dict[str, Any]:
    d = dict(r)
    d["inside"] = bool(d["inside"])
    return d


def answer(outcome: str) -> bytes:
    """The function's JSON answer for an outcome."""
    return json.dumps({"received": True, "outcome": outcome}).encode()
