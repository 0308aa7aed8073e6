"""A Stripe API subset for a ticketing checkout: PaymentIntents (create, retrieve, update, confirm,
cancel, list), Refunds and Customers (create, retrieve), `expand`, Stripe's test payment methods
for success, declines and 3-D Secure, and the events each state change emits.

Form decoding and the state machine are plain functions; the jobs run on the database writer so
a confirm is atomic. The events a call produces go to the webhook deliverer (staging.delivery)
after commit. References: https://docs.stripe.com/api/payment_intents,
https://docs.stripe.com/testing (test payment methods), https://docs.stripe.com/error-codes.
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
from staging.runid import RUN_METADATA
from staging.schema import now_iso

API_VERSION = "2025-01-27.acacia"
PM_SUCCEEDS = "pm_card_visa"
PM_DECLINES = "pm_card_chargeDeclined"
MAX_LIST_INDEX = 100  # `expand[200000000]=x` is refused, not padded
MAX_KEY_DEPTH = 5
MAX_PARAMS = 1000

# Stripe's test PaymentMethods (https://docs.stripe.com/testing): brand, last4, and what a charge
# does: None succeeds, "3ds" needs authentication, else (error code, decline_code, message).
_DECLINED = "Your card was declined."
_DECLINES = {
    "ChargeDeclined": ("0002", ("card_declined", "generic_decline", _DECLINED)),
    "ChargeDeclinedInsufficientFunds": (
        "9995",
        ("card_declined", "insufficient_funds", "Your card has insufficient funds."),
    ),
    "ChargeDeclinedLostCard": ("9987", ("card_declined", "lost_card", _DECLINED)),
    "ChargeDeclinedStolenCard": ("9979", ("card_declined", "stolen_card", _DECLINED)),
    "ChargeDeclinedFraudulent": ("0019", ("card_declined", "fraudulent", _DECLINED)),
    "ChargeDeclinedVelocityLimitExceeded": (
        "6975",
        ("card_declined", "card_velocity_exceeded", _DECLINED),
    ),
    "ChargeDeclinedExpiredCard": (
        "0069",
        ("expired_card", "expired_card", "Your card has expired."),
    ),
    "ChargeDeclinedIncorrectCvc": (
        "0127",
        ("incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect."),
    ),
    "ChargeDeclinedProcessingError": (
        "0119",
        (
            "processing_error",
            "processing_error",
            "An error occurred while processing your card. Try again in a little bit.",
        ),
    ),
}
TEST_CARDS: dict[str, tuple[str, str, Any]] = {
    "pm_card_visa": ("visa", "4242", None),
    "pm_card_visa_debit": ("visa", "5556", None),
    "pm_card_mastercard": ("mastercard", "4444", None),
    "pm_card_mastercard_debit": ("mastercard", "8210", None),
    "pm_card_mastercard_prepaid": ("mastercard", "5100", None),
    "pm_card_amex": ("amex", "8431", None),
    "pm_card_discover": ("discover", "1117", None),
    "pm_card_diners": ("diners", "0004", None),
    "pm_card_jcb": ("jcb", "0505", None),
    "pm_card_unionpay": ("unionpay", "0005", None),
    "pm_card_threeDSecureOptional": ("visa", "3055", None),
    "pm_card_authenticationRequiredOnSetup": ("visa", "3155", None),
    "pm_card_authenticationRequired": ("visa", "3184", "3ds"),
    "pm_card_threeDSecure2Required": ("visa", "3220", "3ds"),
    "pm_card_threeDSecureRequired": ("visa", "3063", "3ds"),
    **{f"pm_card_{k[0].lower()}{k[1:]}": ("visa", v[0], v[1]) for k, v in _DECLINES.items()},
    **{f"pm_card_visa_{k[0].lower()}{k[1:]}": ("visa", v[0], v[1]) for k, v in _DECLINES.items()},
}
KNOWN_PMS = frozenset(TEST_CARDS)

_COMMON = {"expand"}
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
        "return_url",
        "statement_descriptor",
        "statement_descriptor_suffix",
        "setup_future_usage",
        "off_session",
        *_COMMON,
    }
)
UPDATE_PARAMS = frozenset(
    {
        "amount",
        "currency",
        "metadata",
        "description",
        "payment_method",
        "customer",
        "receipt_email",
        "setup_future_usage",
        "statement_descriptor",
        *_COMMON,
    }
)
CONFIRM_PARAMS = frozenset(
    {
        "payment_method",
        "return_url",
        "receipt_email",
        "off_session",
        "setup_future_usage",
        "use_stripe_sdk",
        "client_secret",
        "payment_method_types",
        *_COMMON,
    }
)
CANCEL_PARAMS = frozenset({"cancellation_reason", *_COMMON})
LIST_PARAMS = frozenset(
    {"limit", "starting_after", "ending_before", "customer", "created", *_COMMON}
)
RETRIEVE_PARAMS = frozenset({"client_secret", *_COMMON})
REFUND_PARAMS = frozenset(
    {"payment_intent", "charge", "amount", "reason", "metadata", "instructions_email", *_COMMON}
)
CUSTOMER_PARAMS = frozenset(
    {"email", "name", "description", "phone", "metadata", "payment_method", *_COMMON}
)
CANCEL_REASONS = ("duplicate", "fraudulent", "requested_by_customer", "abandoned")
CANCELABLE = (
    "requires_payment_method",
    "requires_capture",
    "requires_confirmation",
    "requires_action",
    "processing",
)
CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")
_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")
_EXPANDABLE = frozenset({"latest_charge", "customer", "payment_method", "payment_intent", "charge"})


def _rand(prefix: str, n: int = 24) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(n))


def decode_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's bracket notation (`metadata[event_id]=1`, `expand[]=x`, `expand[0]=x`, `a[0][b]=c`)
    as nested dicts and lists. List indices must come in order (as every Stripe client sends
    them) and stay under MAX_LIST_INDEX, so no request can make the decoder pad a huge list."""
    root: dict[str, Any] = {}
    for n, (key, value) in enumerate(pairs):
        if n >= MAX_PARAMS:
            raise StripeApiError(400, f"Too many parameters: the limit is {MAX_PARAMS}")
        m = _KEY.match(key)
        if not m:
            raise StripeApiError(400, f"Invalid parameter name: {key[:60]!r}")
        path = [m.group(1), *_PART.findall(m.group(2))]
        if len(path) > MAX_KEY_DEPTH + 1:
            raise StripeApiError(
                400, f"Parameter {key[:60]!r} nests deeper than {MAX_KEY_DEPTH} levels"
            )
        node: Any = root
        for i, part in enumerate(path):
            last = i == len(path) - 1
            nxt = path[i + 1] if not last else None
            if isinstance(node, list):
                idx = len(node) if part == "" else _index(part, key)
                if idx > len(node) or idx >= MAX_LIST_INDEX:
                    raise StripeApiError(
                        400,
                        f"Invalid array index in parameter {key[:60]!r}: indices count up from 0, below {MAX_LIST_INDEX}",
                        param=m.group(1),
                    )
                if idx == len(node):
                    node.append(None)
                if last:
                    node[idx] = value
                    break
                if not isinstance(node[idx], dict | list):
                    node[idx] = [] if nxt == "" or (nxt or "").isdigit() else {}
                node = node[idx]
                continue
            if last:
                node[part] = value
            else:
                if part not in node or not isinstance(node[part], dict | list):
                    node[part] = [] if nxt == "" or (nxt or "").isdigit() else {}
                node = node[part]
    return root


def _index(part: str, key: str) -> int:
    if not (part.isascii() and part.isdigit() and len(part) <= 6):
        raise StripeApiError(400, f"Invalid array index in parameter {key[:60]!r}")
    return int(part)


def check_params(params: dict[str, Any], allowed: frozenset[str]) -> None:
    """StripeApiError `parameter_unknown` naming the first parameter not in `allowed`."""
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise StripeApiError(
            400,
            f"Received unknown parameter: {unknown[0][:60]}",
            param=unknown[0][:60],
            code="parameter_unknown",
        )


def _int_param(v: Any, name: str, lo: int, hi: int) -> int:
    if not isinstance(v, str) or not (v.isascii() and v.isdigit()) or len(v) > 12:
        raise StripeApiError(
            400, f"Invalid integer: {str(v)[:40]}", param=name, code="parameter_invalid_integer"
        )
    n = int(v)
    if not lo <= n <= hi:
        raise StripeApiError(
            400,
            f"Invalid {name}: must be between {lo} and {hi}",
            param=name,
            code="parameter_invalid_integer",
        )
    return n


def _amount(v: Any) -> int:
    if not isinstance(v, str) or not (v.isascii() and v.isdigit()) or len(v) > 12:
        raise StripeApiError(
            400, f"Invalid integer: {str(v)[:40]}", param="amount", code="parameter_invalid_integer"
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


def _bool(v: Any, name: str) -> bool:
    if v in (None, "false"):
        return False
    if v == "true":
        return True
    raise StripeApiError(
        400, f"Invalid boolean: {str(v)[:40]}", param=name, code="parameter_invalid_boolean"
    )


def _str(v: Any, name: str, required: bool = False) -> str | None:
    if v is None or v == "":
        if required:
            raise StripeApiError(
                400, f"Missing required param: {name}.", param=name, code="parameter_missing"
            )
        return None
    if not isinstance(v, str):
        raise StripeApiError(
            400, f"Invalid {name}: expected a string", param=name, code="parameter_invalid"
        )
    return v


def _metadata(v: Any) -> dict[str, str]:
    if v is None or v == "":
        return {}
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise StripeApiError(
            400, "Invalid metadata: expected metadata[key]=value pairs", param="metadata"
        )
    if len(v) > 50:
        raise StripeApiError(400, "Invalid metadata: at most 50 keys", param="metadata")
    return v


def expand_paths(params: dict[str, Any], prefix: str = "") -> list[str]:
    """The `expand[]` paths of a request (with `data.` stripped for lists); unknown ones refused."""
    raw = params.get("expand") or []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise StripeApiError(400, "Invalid expand: expected expand[]=path", param="expand")
    out = []
    for p in raw:
        if not isinstance(p, str):
            raise StripeApiError(400, "Invalid expand: expected expand[]=path", param="expand")
        path = p[len(prefix) :] if prefix and p.startswith(prefix) else p
        if path not in _EXPANDABLE:
            raise StripeApiError(
                400, f"This property cannot be expanded ({p[:60]}).", param="expand"
            )
        out.append(path)
    return out


def validate_create(params: dict[str, Any]) -> dict[str, Any]:
    """A checked PaymentIntent-create request; StripeApiError naming the parameter otherwise."""
    check_params(params, CREATE_PARAMS)
    if "amount" not in params:
        raise StripeApiError(
            400, "Missing required param: amount.", param="amount", code="parameter_missing"
        )
    if "currency" not in params:
        raise StripeApiError(
            400, "Missing required param: currency.", param="currency", code="parameter_missing"
        )
    return {
        "amount": _amount(params["amount"]),
        "currency": _currency(params["currency"]),
        "metadata": _metadata(params.get("metadata")),
        "payment_method": _str(params.get("payment_method"), "payment_method"),
        "description": _str(params.get("description"), "description"),
        "customer": _str(params.get("customer"), "customer"),
        "receipt_email": _str(params.get("receipt_email"), "receipt_email"),
        "return_url": _str(params.get("return_url"), "return_url"),
        "off_session": _bool(params.get("off_session"), "off_session"),
        "confirm": _bool(params.get("confirm"), "confirm"),
        "expand": expand_paths(params),
    }


def _currency(cur: Any) -> str:
    if not isinstance(cur, str) or not re.fullmatch(r"[a-zA-Z]{3}", cur):
        raise StripeApiError(
            400, f"Invalid currency: {str(cur)[:20]}", param="currency", code="parameter_invalid"
        )
    return cur.lower()


def new_payment_intent(req: dict[str, Any]) -> dict[str, Any]:
    """A fresh PaymentIntent object (status requires_payment_method or requires_confirmation)."""
    pi_id = _rand("pi_")
    return {
        "id": pi_id,
        "object": "payment_intent",
        "amount": req["amount"],
        "amount_capturable": 0,
        "amount_received": 0,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic",
        "client_secret": f"{pi_id}_secret_{_rand('', 25)}",
        "confirmation_method": "automatic",
        "created": int(time.time()),
        "currency": req["currency"],
        "customer": req.get("customer"),
        "description": req["description"],
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": req["metadata"],
        "next_action": None,
        "payment_method": req["payment_method"],
        "payment_method_types": ["card"],
        "receipt_email": req.get("receipt_email"),
        "status": "requires_confirmation" if req["payment_method"] else "requires_payment_method",
    }


def stripe_event(
    type_: str, obj: dict[str, Any], previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A Stripe event object as Stripe delivers it."""
    data: dict[str, Any] = {"object": public(obj)}
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


def payment_method_object(pm: str) -> dict[str, Any]:
    """The PaymentMethod object of a test payment method."""
    brand, last4, _ = TEST_CARDS[pm]
    return {
        "id": pm,
        "object": "payment_method",
        "type": "card",
        "card": {
            "brand": brand,
            "last4": last4,
            "exp_month": 12,
            "exp_year": 2034,
            "funding": "credit",
        },
        "created": 0,
        "customer": None,
        "livemode": False,
        "metadata": {},
    }


def _charge(
    pi: dict[str, Any], status: str, failure: tuple[str, str, str] | None = None
) -> dict[str, Any]:
    return {
        "id": _rand("ch_"),
        "object": "charge",
        "amount": pi["amount"],
        "amount_captured": pi["amount"] if status == "succeeded" else 0,
        "amount_refunded": 0,
        "captured": status == "succeeded",
        "created": int(time.time()),
        "currency": pi["currency"],
        "customer": pi.get("customer"),
        "failure_code": failure[0] if failure else None,
        "failure_message": failure[2] if failure else None,
        "livemode": False,
        "metadata": pi["metadata"],
        "outcome": {
            "network_status": "declined_by_network" if failure else "approved_by_network",
            "reason": failure[1] if failure else None,
            "type": "issuer_declined" if failure else "authorized",
        },
        "paid": status == "succeeded",
        "payment_intent": pi["id"],
        "payment_method": pi["payment_method"],
        "refunded": False,
        "status": status,
    }


def _missing(kind: str, oid: str, param: str = "id") -> StripeApiError:
    return StripeApiError(
        404, f"No such {kind}: '{oid[:80]}'", param=param, code="resource_missing"
    )


def _load(conn: sqlite3.Connection, pi_id: str) -> dict[str, Any]:
    row = conn.execute("SELECT object FROM payment_intents WHERE id = ?", (pi_id,)).fetchone()
    if row is None:
        raise _missing("payment_intent", pi_id, "intent")
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


def _load_object(
    conn: sqlite3.Connection, kind: str, oid: Any, param: str = "id"
) -> dict[str, Any]:
    row = None
    if isinstance(oid, str):
        row = conn.execute(
            "SELECT object FROM stripe_objects WHERE id = ? AND type = ?", (oid, kind)
        ).fetchone()
    if row is None:
        raise _missing(kind, str(oid), param)
    return json.loads(row[0])


def _save_object(conn: sqlite3.Connection, obj: dict[str, Any], run_id: str | None) -> None:
    conn.execute(
        "INSERT INTO stripe_objects(id, type, object, created_at, run_id) VALUES (?,?,?,?,?)"
        " ON CONFLICT(id) DO UPDATE SET object = excluded.object",
        (obj["id"], obj["object"], json.dumps(obj), now_iso(), run_id),
    )


def _pi_run(conn: sqlite3.Connection, pi_id: str) -> str | None:
    row = conn.execute("SELECT run_id FROM payment_intents WHERE id = ?", (pi_id,)).fetchone()
    return row[0] if row else None


def expand(conn: sqlite3.Connection, obj: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """`obj` with each expandable id replaced by its object (a missing one stays an id)."""
    out = public(obj)
    for p in paths:
        v = out.get(p)
        if not isinstance(v, str):
            continue
        if p == "payment_method":
            out[p] = payment_method_object(v) if v in TEST_CARDS else v
        elif p == "payment_intent":
            row = conn.execute("SELECT object FROM payment_intents WHERE id = ?", (v,)).fetchone()
            if row is not None:
                out[p] = public(json.loads(row[0]))
        else:
            row = conn.execute("SELECT object FROM stripe_objects WHERE id = ?", (v,)).fetchone()
            if row is not None:
                out[p] = json.loads(row[0])
    return out


def create_job(
    conn: sqlite3.Connection, changes: list[Any], req: dict[str, Any], run_id: str | None
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """Create (and, with confirm=true, confirm) a PaymentIntent: (object, events, decline error or None)."""
    if req.get("customer"):
        _load_object(conn, "customer", req["customer"], "customer")
    if req["payment_method"] and req["payment_method"] not in KNOWN_PMS:
        raise _pm_missing(req["payment_method"])
    pi = new_payment_intent(req)
    if run_id and RUN_METADATA not in pi["metadata"]:
        pi["metadata"][RUN_METADATA] = run_id
    events = [stripe_event("payment_intent.created", pi)]
    _store(conn, pi, run_id, new=True)
    if req["confirm"]:
        pi, more, err = confirm_job(conn, changes, pi["id"], req, run_id)
        events.extend(more)
        return pi, events, err
    return expand(conn, pi, req["expand"]), events, None


def _pm_missing(pm: str) -> StripeApiError:
    return StripeApiError(
        400, f"No such PaymentMethod: '{pm[:80]}'", param="payment_method", code="resource_missing"
    )


def validate_confirm(params: dict[str, Any]) -> dict[str, Any]:
    """A checked confirm request."""
    check_params(params, CONFIRM_PARAMS)
    return {
        "payment_method": _str(params.get("payment_method"), "payment_method"),
        "return_url": _str(params.get("return_url"), "return_url"),
        "off_session": _bool(params.get("off_session"), "off_session"),
        "expand": expand_paths(params),
    }


def confirm_job(
    conn: sqlite3.Connection,
    changes: list[Any],
    pi_id: str,
    req: dict[str, Any],
    run_id: str | None,
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """Confirm a PaymentIntent: (object, events to deliver, the card_error body on a decline or None)."""
    pi = _load(conn, pi_id)
    if pi["status"] not in CONFIRMABLE:
        raise StripeApiError(
            400,
            f"This PaymentIntent's status is {pi['status']}, so it cannot be confirmed.",
            code="payment_intent_unexpected_state",
            payment_intent=public(pi),
        )
    pm = req.get("payment_method") or pi.get("payment_method")
    if not pm:
        raise StripeApiError(
            400,
            "You cannot confirm this PaymentIntent because it's missing a payment method. "
            "To confirm a payment with a test card, use pm_card_visa.",
            code="payment_intent_unexpected_state",
            param="payment_method",
        )
    if pm not in KNOWN_PMS:
        raise _pm_missing(pm)
    pi["payment_method"] = pm
    outcome = TEST_CARDS[pm][2]
    if outcome == "3ds" and req.get("off_session"):
        outcome = (
            "authentication_required",
            "authentication_required",
            "Your card was declined. This transaction requires authentication.",
        )
    if outcome == "3ds":
        ret = req.get("return_url")
        pi.update(
            status="requires_action",
            next_action=(
                {
                    "type": "redirect_to_url",
                    "redirect_to_url": {
                        "url": f"https://hooks.stripe.com/3d_secure_2/hosted?payment_intent={pi['id']}",
                        "return_url": ret,
                    },
                }
                if ret
                else {
                    "type": "use_stripe_sdk",
                    "use_stripe_sdk": {"type": "three_d_secure_redirect"},
                }
            ),
        )
        _store(conn, pi, run_id, new=False)
        return (
            expand(conn, pi, req.get("expand", [])),
            [stripe_event("payment_intent.requires_action", pi)],
            None,
        )
    if outcome is not None:
        code, decline, message = outcome
        charge = _charge(pi, "failed", outcome)
        _save_object(conn, charge, _pi_run(conn, pi["id"]))
        err = {
            "type": "card_error",
            "code": code,
            "decline_code": decline,
            "message": message,
            "charge": charge["id"],
            "doc_url": f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}",
            "payment_method": payment_method_object(pm),
        }
        if code == "incorrect_cvc":
            err["param"] = "cvc"
        pi.update(
            status="requires_payment_method",
            latest_charge=charge["id"],
            last_payment_error=err,
            next_action=None,
        )
        _store(conn, pi, run_id, new=False)
        events = [
            stripe_event("charge.failed", charge),
            stripe_event("payment_intent.payment_failed", pi),
        ]
        return pi, events, {"error": {**err, "payment_intent": public(pi)}}
    charge = _charge(pi, "succeeded")
    _save_object(conn, charge, _pi_run(conn, pi["id"]))
    pi.update(
        status="succeeded",
        amount_received=pi["amount"],
        latest_charge=charge["id"],
        last_payment_error=None,
        next_action=None,
    )
    _store(conn, pi, run_id, new=False)
    events = [
        stripe_event("charge.succeeded", charge),
        stripe_event("payment_intent.succeeded", pi),
    ]
    return expand(conn, pi, req.get("expand", [])), events, None


def update_job(
    conn: sqlite3.Connection, changes: list[Any], pi_id: str, params: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """Update a PaymentIntent's amount, currency, metadata (merged; "" deletes a key), description..."""
    check_params(params, UPDATE_PARAMS)
    paths = expand_paths(params)
    pi = _load(conn, pi_id)
    money = {"amount", "currency", "payment_method", "customer"} & set(params)
    if money and pi["status"] in ("succeeded", "canceled", "processing"):
        raise StripeApiError(
            400,
            f"You cannot update this PaymentIntent because it has a status of {pi['status']}.",
            code="payment_intent_unexpected_state",
            payment_intent=public(pi),
        )
    if "amount" in params:
        pi["amount"] = _amount(params["amount"])
    if "currency" in params:
        pi["currency"] = _currency(params["currency"])
    if "metadata" in params:
        md = dict(pi.get("metadata") or {})
        raw = params["metadata"]
        if raw == "":
            md = {}
        else:
            for k, v in _metadata(raw).items():
                if v == "":
                    md.pop(k, None)
                else:
                    md[k] = v
        pi["metadata"] = md
    for k in ("description", "receipt_email"):
        if k in params:
            pi[k] = _str(params[k], k)
    if "payment_method" in params:
        pm = _str(params["payment_method"], "payment_method")
        if pm and pm not in KNOWN_PMS:
            raise _pm_missing(pm)
        pi["payment_method"] = pm
        if pm and pi["status"] == "requires_payment_method":
            pi["status"] = "requires_confirmation"
    if "customer" in params:
        cus = _str(params["customer"], "customer")
        if cus:
            _load_object(conn, "customer", cus, "customer")
        pi["customer"] = cus
    _store(conn, pi, None, new=False)
    return expand(conn, pi, paths), [], None


def cancel_job(
    conn: sqlite3.Connection, changes: list[Any], pi_id: str, params: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """Cancel a PaymentIntent that has not succeeded: status canceled, then payment_intent.canceled."""
    check_params(params, CANCEL_PARAMS)
    paths = expand_paths(params)
    reason = params.get("cancellation_reason")
    if reason is not None and reason not in CANCEL_REASONS:
        raise StripeApiError(
            400,
            f"Invalid cancellation_reason: must be one of {', '.join(CANCEL_REASONS)}",
            param="cancellation_reason",
            code="parameter_invalid",
        )
    pi = _load(conn, pi_id)
    if pi["status"] not in CANCELABLE:
        raise StripeApiError(
            400,
            f"You cannot cancel this PaymentIntent because it has a status of {pi['status']}. Only a "
            f"PaymentIntent with one of the following statuses may be canceled: {', '.join(CANCELABLE)}.",
            code="payment_intent_unexpected_state",
            payment_intent=public(pi),
        )
    pi.update(
        status="canceled",
        canceled_at=int(time.time()),
        cancellation_reason=reason,
        next_action=None,
    )
    _store(conn, pi, None, new=False)
    return expand(conn, pi, paths), [stripe_event("payment_intent.canceled", pi)], None


def public(pi: dict[str, Any]) -> dict[str, Any]:
    """A Stripe object as the API shows it (without the stand-in's own bookkeeping keys)."""
    return {k: v for k, v in pi.items() if not k.startswith("_")}


def retrieve(
    conn: sqlite3.Connection, pi_id: str, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A stored PaymentIntent (expanded as asked), or StripeApiError 404."""
    params = params or {}
    check_params(params, RETRIEVE_PARAMS)
    return expand(conn, _load(conn, pi_id), expand_paths(params))


def list_payment_intents(conn: sqlite3.Connection, params: dict[str, Any]) -> dict[str, Any]:
    """GET /v1/payment_intents: newest first, `limit` (1..100, 10), `starting_after`, `ending_before`."""
    check_params(params, LIST_PARAMS)
    paths = expand_paths(params, "data.")
    limit = _int_param(params["limit"], "limit", 1, 100) if "limit" in params else 10
    after, before = params.get("starting_after"), params.get("ending_before")
    where, args = [], []
    for name, cursor, op in (("starting_after", after, "<"), ("ending_before", before, ">")):
        if cursor is not None:
            row = None
            if isinstance(cursor, str):
                row = conn.execute(
                    "SELECT rowid FROM payment_intents WHERE id = ?", (cursor,)
                ).fetchone()
            if row is None:
                raise _missing("payment_intent", str(cursor), name)
            where.append(f"rowid {op} ?")
            args.append(row[0])
    if "customer" in params:
        where.append("json_extract(object, '$.customer') = ?")
        args.append(_str(params["customer"], "customer"))
    sql = "SELECT object FROM payment_intents" + (" WHERE " + " AND ".join(where) if where else "")
    asc = before is not None and after is None
    sql += f" ORDER BY rowid {'ASC' if asc else 'DESC'} LIMIT ?"
    rows = [json.loads(r[0]) for r in conn.execute(sql, [*args, limit + 1])]
    has_more = len(rows) > limit
    rows = rows[:limit]
    if asc:
        rows.reverse()
    return {
        "object": "list",
        "data": [expand(conn, r, paths) for r in rows],
        "has_more": has_more,
        "url": "/v1/payment_intents",
    }


def refund_job(
    conn: sqlite3.Connection, changes: list[Any], params: dict[str, Any], run_id: str | None
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """Refund a succeeded PaymentIntent (or its charge), in full or in part: the refund object, then
    `refund.created` and `charge.refunded`."""
    check_params(params, REFUND_PARAMS)
    paths = expand_paths(params)
    pi_id = params.get("payment_intent")
    if pi_id is None and isinstance(params.get("charge"), str):
        ch = _load_object(conn, "charge", params["charge"], "charge")
        pi_id = ch.get("payment_intent")
    if not isinstance(pi_id, str) or not pi_id:
        raise StripeApiError(
            400,
            "One of the following params should be provided for this request: payment_intent or charge.",
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
    done = int(pi.get("_refunded_amount", pi["amount"] if pi.get("_refunded") else 0))
    left = pi["amount"] - done
    if left <= 0:
        raise StripeApiError(
            400,
            f"Charge {pi['latest_charge']} has already been refunded.",
            code="charge_already_refunded",
        )
    amount = _int_param(params["amount"], "amount", 1, left) if "amount" in params else left
    run = run_id or _pi_run(conn, pi_id)
    pi["_refunded_amount"] = done + amount
    pi["_refunded"] = done + amount >= pi["amount"]
    _store(conn, pi, run, new=False)
    refund = {
        "id": _rand("re_"),
        "object": "refund",
        "amount": amount,
        "charge": pi["latest_charge"],
        "created": int(time.time()),
        "currency": pi["currency"],
        "metadata": _metadata(params.get("metadata")),
        "payment_intent": pi_id,
        "reason": params.get("reason"),
        "status": "succeeded",
    }
    _save_object(conn, refund, run)
    charge = {
        **_charge(pi, "succeeded"),
        "id": pi["latest_charge"],
        "amount_refunded": done + amount,
        "refunded": bool(pi["_refunded"]),
    }
    _save_object(conn, charge, run)
    events = [
        stripe_event("refund.created", refund),
        stripe_event("charge.refunded", charge, {"amount_refunded": done, "refunded": False}),
    ]
    return expand(conn, refund, paths), events, None


def retrieve_object(
    conn: sqlite3.Connection, kind: str, oid: str, params: dict[str, Any]
) -> dict[str, Any]:
    """A stored refund or customer."""
    check_params(params, _COMMON)
    expand_paths(params)
    return _load_object(conn, kind, oid)


def customer_job(
    conn: sqlite3.Connection, changes: list[Any], params: dict[str, Any], run_id: str | None
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """Create a Customer, then customer.created."""
    check_params(params, CUSTOMER_PARAMS)
    expand_paths(params)
    cus = {
        "id": _rand("cus_", 14),
        "object": "customer",
        "created": int(time.time()),
        "description": _str(params.get("description"), "description"),
        "email": _str(params.get("email"), "email"),
        "livemode": False,
        "metadata": _metadata(params.get("metadata")),
        "name": _str(params.get("name"), "name"),
        "phone": _str(params.get("phone"), "phone"),
    }
    _save_object(conn, cus, run_id)
    return cus, [stripe_event("customer.created", cus)], None
