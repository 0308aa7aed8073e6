"""A Stripe API subset: PaymentIntents (create, confirm, retrieve) and refunds, with the events they emit.

Form decoding and the PaymentIntent state machine are plain functions; the jobs run on the
database writer so a confirm is atomic. The events a call produces are handed to the
webhook deliverer (staging.delivery) after commit.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from staging.errors import StripeApiError
from staging.schema import now_iso

API_VERSION = "2025-01-27.acacia"
PM_SUCCEEDS = "pm_card_visa"
PM_DECLINES = "pm_card_chargeDeclined"
KNOWN_PMS = frozenset({PM_SUCCEEDS, PM_DECLINES, "pm_card_mastercard", "pm_card_amex"})
CREATE_PARAMS = frozenset(
    {
        "amount",
        "currency",
        "metadata",
        "payment_method",
        "payment_method_types",
        "confirm",
        "description",
        "automatic_payment_methods",
        "customer",
        "receipt_email",
        "capture_method",
        "expand",
        "return_url",
        "statement_descriptor",
        "statement_descriptor_suffix",
        "setup_future_usage",
        "off_session",
    }
)
CONFIRM_PARAMS = frozenset(
    {"payment_method", "return_url", "expand", "receipt_email", "off_session"}
)
_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def _rand(prefix: str, n: int = 24) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(n))


def decode_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's bracket notation (`metadata[event_id]=1`, `expand[]=x`, `a[0][b]=c`) as nested dicts/lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        m = _KEY.match(key)
        if not m:
            raise StripeApiError(400, f"Invalid parameter name: {key!r}")
        path = [m.group(1)] + re.findall(r"\[([^\[\]]*)\]", m.group(2))
        node: Any = root
        for i, part in enumerate(path):
            last = i == len(path) - 1
            nxt = path[i + 1] if not last else None
            if isinstance(node, list):
                if part == "" or part.isdigit():
                    idx = len(node) if part == "" else int(part)
                    while len(node) <= idx:
                        node.append(None)
                    if last:
                        node[idx] = value
                    else:
                        if node[idx] is None:
                            node[idx] = [] if nxt in ("",) or (nxt or "").isdigit() else {}
                        node = node[idx]
                    continue
                raise StripeApiError(400, f"Invalid array index in parameter {key!r}")
            if last:
                node[part] = value
            else:
                if part not in node or not isinstance(node[part], dict | list):
                    node[part] = [] if nxt == "" or (nxt or "").isdigit() else {}
                node = node[part]
    return root


def _amount(v: Any) -> int:
    if not isinstance(v, str) or not v.isdigit():
        raise StripeApiError(
            400, f"Invalid integer: {v}", param="amount", code="parameter_invalid_integer"
        )
    n = int(v)
    if n < 1 or n > 99_999_999:
        raise StripeApiError(
            400,
            "Amount must be between 1 and 99999999 in the smallest currency unit.",
            param="amount",
            code="amount_too_small" if n < 1 else "amount_too_large",
        )
    return n


def validate_create(params: dict[str, Any]) -> dict[str, Any]:
    """A checked PaymentIntent-create request; StripeApiError naming the parameter otherwise."""
    unknown = sorted(set(params) - CREATE_PARAMS)
    if unknown:
        raise StripeApiError(
            400,
            f"Received unknown parameter: {unknown[0]}",
            param=unknown[0],
            code="parameter_unknown",
        )
    if "amount" not in params:
        raise StripeApiError(
            400, "Missing required param: amount.", param="amount", code="parameter_missing"
        )
    if "currency" not in params:
        raise StripeApiError(
            400, "Missing required param: currency.", param="currency", code="parameter_missing"
        )
    cur = params["currency"]
    if not isinstance(cur, str) or not re.fullmatch(r"[a-zA-Z]{3}", cur):
        raise StripeApiError(
            400, f"Invalid currency: {cur}", param="currency", code="parameter_invalid"
        )
    md = params.get("metadata", {})
    if md == "":
        md = {}
    if not isinstance(md, dict) or not all(isinstance(v, str) for v in md.values()):
        raise StripeApiError(
            400, "Invalid metadata: expected metadata[key]=value pairs", param="metadata"
        )
    pm = params.get("payment_method")
    if pm is not None and not isinstance(pm, str):
        raise StripeApiError(400, "Invalid payment_method", param="payment_method")
    return {
        "amount": _amount(params["amount"]),
        "currency": cur.lower(),
        "metadata": md,
        "payment_method": pm,
        "description": params.get("description"),
        "confirm": params.get("confirm") == "true",
    }


def new_payment_intent(req: dict[str, Any]) -> dict[str, Any]:
    """A fresh PaymentIntent object (status requires_payment_method or requires_confirmation)."""
    pi_id = _rand("pi_")
    return {
        "id": pi_id,
        "object": "payment_intent",
        "amount": req["amount"],
        "amount_capturable": 0,
        "amount_received": 0,
        "capture_method": "automatic",
        "client_secret": f"{pi_id}_secret_{_rand('', 25)}",
        "confirmation_method": "automatic",
        "created": int(time.time()),
        "currency": req["currency"],
        "description": req["description"],
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": req["metadata"],
        "payment_method": req["payment_method"],
        "payment_method_types": ["card"],
        "status": "requires_confirmation" if req["payment_method"] else "requires_payment_method",
    }


def stripe_event(
    type_: str, obj: dict[str, Any], previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A Stripe event object as Stripe delivers it."""
    data: dict[str, Any] = {"object": obj}
    if previous:
        data["previous_attributes"] = previous
    return {
        "id": _rand("evt_"),
        "object": "event",
        "api_version": API_VERSION,
        "created": int(time.time()),
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
    }


def _charge(pi: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "id": _rand("ch_"),
        "object": "charge",
        "amount": pi["amount"],
        "amount_captured": pi["amount"] if status == "succeeded" else 0,
        "amount_refunded": 0,
        "created": int(time.time()),
        "currency": pi["currency"],
        "livemode": False,
        "metadata": pi["metadata"],
        "paid": status == "succeeded",
        "payment_intent": pi["id"],
        "payment_method": pi["payment_method"],
        "refunded": False,
        "status": status,
    }


def _load(conn: sqlite3.Connection, pi_id: str) -> dict[str, Any]:
    row = conn.execute("SELECT object FROM payment_intents WHERE id = ?", (pi_id,)).fetchone()
    if row is None:
        raise StripeApiError(
            404, f"No such payment_intent: '{pi_id}'", param="intent", code="resource_missing"
        )
    return json.loads(row[0])


def _store(conn: sqlite3.Connection, pi: dict[str, Any], run_id: str | None, new: bool) -> None:
    if new:
        conn.execute(
            "INSERT INTO payment_intents(id, object, created_at, run_id) VALUES (?,?,?,?)",
            (pi["id"], json.dumps(pi), now_iso(), run_id),
        )
    else:
        conn.execute(
            "UPDATE payment_intents SET object = ? WHERE id = ?", (json.dumps(pi), pi["id"])
        )


def create_job(
    conn: sqlite3.Connection, changes: list[Any], req: dict[str, Any], run_id: str | None
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """Create (and, with confirm=true, confirm) a PaymentIntent: (object, events, decline error or None)."""
    pi = new_payment_intent(req)
    if run_id and "gaterush_run" not in pi["metadata"]:
        pi["metadata"]["gaterush_run"] = run_id
    events = [stripe_event("payment_intent.created", dict(pi))]
    _store(conn, pi, run_id, new=True)
    if req["confirm"]:
        pi, more, err = confirm_job(conn, changes, pi["id"], None, run_id)
        events.extend(more)
        return pi, events, err
    return pi, events, None


def confirm_job(
    conn: sqlite3.Connection,
    changes: list[Any],
    pi_id: str,
    payment_method: str | None,
    run_id: str | None,
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """Confirm a PaymentIntent: (object, events to deliver, the card_error body on a decline or None)."""
    pi = _load(conn, pi_id)
    if pi["status"] not in ("requires_payment_method", "requires_confirmation"):
        raise StripeApiError(
            400,
            f"This PaymentIntent's status is {pi['status']}, so it cannot be confirmed.",
            code="payment_intent_unexpected_state",
            payment_intent=pi,
        )
    pm = payment_method or pi.get("payment_method")
    if not pm:
        raise StripeApiError(
            400,
            "You cannot confirm this PaymentIntent because it's missing a payment method.",
            code="payment_intent_unexpected_state",
            param="payment_method",
        )
    if pm not in KNOWN_PMS:
        raise StripeApiError(
            400, f"No such PaymentMethod: '{pm}'", param="payment_method", code="resource_missing"
        )
    pi["payment_method"] = pm
    if pm == PM_DECLINES:
        charge = _charge(pi, "failed")
        err = {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "generic_decline",
            "message": "Your card was declined.",
            "charge": charge["id"],
            "payment_method": {"id": pm},
        }
        pi.update(
            status="requires_payment_method", latest_charge=charge["id"], last_payment_error=err
        )
        _store(conn, pi, run_id, new=False)
        events = [
            stripe_event("charge.failed", charge),
            stripe_event("payment_intent.payment_failed", dict(pi)),
        ]
        return pi, events, {"error": {**err, "payment_intent": pi}}
    charge = _charge(pi, "succeeded")
    pi.update(
        status="succeeded",
        amount_received=pi["amount"],
        latest_charge=charge["id"],
        last_payment_error=None,
    )
    _store(conn, pi, run_id, new=False)
    events = [
        stripe_event("charge.succeeded", charge),
        stripe_event("payment_intent.succeeded", dict(pi)),
    ]
    return pi, events, None


def public(pi: dict[str, Any]) -> dict[str, Any]:
    """A PaymentIntent as the API shows it (without the stand-in's own bookkeeping keys)."""
    return {k: v for k, v in pi.items() if not k.startswith("_")}


def retrieve(conn: sqlite3.Connection, pi_id: str) -> dict[str, Any]:
    """A stored PaymentIntent, or StripeApiError 404."""
    return _load(conn, pi_id)


def refund_job(
    conn: sqlite3.Connection, changes: list[Any], params: dict[str, Any], run_id: str | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Refund a succeeded PaymentIntent in full: (refund object, [charge.refunded])."""
    pi_id = params.get("payment_intent")
    if not isinstance(pi_id, str) or not pi_id:
        raise StripeApiError(
            400,
            "Missing required param: payment_intent.",
            param="payment_intent",
            code="parameter_missing",
        )
    pi = _load(conn, pi_id)
    if pi["status"] != "succeeded":
        raise StripeApiError(
            400,
            f"This PaymentIntent ({pi_id}) does not have a successful charge to refund.",
            code="charge_not_refundable",
        )
    if pi.get("_refunded"):
        raise StripeApiError(
            400,
            f"Charge {pi['latest_charge']} has already been refunded.",
            code="charge_already_refunded",
        )
    pi["_refunded"] = True
    _store(conn, pi, run_id, new=False)
    refund = {
        "id": _rand("re_"),
        "object": "refund",
        "amount": pi["amount"],
        "charge": pi["latest_charge"],
        "created": int(time.time()),
        "currency": pi["currency"],
        "metadata": {},
        "payment_intent": pi_id,
        "status": "succeeded",
    }
    charge = {
        **_charge(pi, "succeeded"),
        "id": pi["latest_charge"],
        "amount_refunded": pi["amount"],
        "refunded": True,
    }
    return refund, [
        stripe_event("charge.refunded", charge, {"amount_refunded": 0, "refunded": False})
    ]
