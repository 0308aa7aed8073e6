"""Bad input gets a clear JSON error, leaves state intact, and the next good request is served."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import stripe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.staging.conftest import admin_headers, call, headers, scan
from traces.event import ticket_code

SCAN = "/rest/v1/rpc/scan_ticket_atomic"


def _signed(s: Any, payload: str, ts: int | None = None) -> dict[str, str]:
    return {
        "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(
            payload, s.webhook_secret, ts
        ),
        "Content-Type": "application/json",
    }


CASES: list[tuple[str, str, str, Any, int, str]] = [
    # (name, method, path, kwargs builder, status, text the error must contain)
    (
        "malformed json",
        "POST",
        SCAN,
        lambda s: {"data": b"{not json", "headers": headers(s)},
        400,
        "invalid json",
    ),
    (
        "empty body",
        "POST",
        SCAN,
        lambda s: {"data": b"", "headers": headers(s)},
        400,
        "invalid json",
    ),
    (
        "body not an object",
        "POST",
        SCAN,
        lambda s: {"json": [1, 2], "headers": headers(s)},
        400,
        "JSON object",
    ),
    (
        "missing argument",
        "POST",
        SCAN,
        lambda s: {"json": {"p_event_id": 1}, "headers": headers(s)},
        404,
        "p_ticket_code",
    ),
    (
        "unknown argument",
        "POST",
        SCAN,
        lambda s: {
            "json": {"p_ticket_code": "x", "p_event_id": 1, "p_foo": 1},
            "headers": headers(s),
        },
        404,
        "p_foo",
    ),
    (
        "wrong-typed event id",
        "POST",
        SCAN,
        lambda s: {"json": {"p_ticket_code": "x", "p_event_id": "one"}, "headers": headers(s)},
        400,
        "p_event_id",
    ),
    (
        "wrong-typed code",
        "POST",
        SCAN,
        lambda s: {"json": {"p_ticket_code": 5, "p_event_id": 1}, "headers": headers(s)},
        400,
        "p_ticket_code",
    ),
    (
        "bad direction",
        "POST",
        SCAN,
        lambda s: {
            "json": {"p_ticket_code": "x", "p_event_id": 1, "p_direction": "up"},
            "headers": headers(s),
        },
        400,
        "p_direction",
    ),
    (
        "unknown rpc",
        "POST",
        "/rest/v1/rpc/drop_everything",
        lambda s: {"json": {}, "headers": headers(s)},
        404,
        "drop_everything",
    ),
    (
        "unknown table",
        "GET",
        "/rest/v1/users",
        lambda s: {"headers": headers(s)},
        404,
        "public.users",
    ),
    (
        "unknown column",
        "GET",
        "/rest/v1/tickets?select=secret",
        lambda s: {"headers": headers(s)},
        400,
        "tickets.secret",
    ),
    (
        "bad filter",
        "GET",
        "/rest/v1/tickets?event_id=between.1",
        lambda s: {"headers": headers(s)},
        400,
        "between",
    ),
    (
        "bad limit",
        "GET",
        "/rest/v1/tickets?limit=-3",
        lambda s: {"headers": headers(s)},
        400,
        "limit",
    ),
    (
        "oversized body",
        "POST",
        SCAN,
        lambda s: {
            "json": {"p_ticket_code": "x" * 2_000_000, "p_event_id": 1},
            "headers": headers(s),
        },
        413,
        "too large",
    ),
    (
        "no apikey",
        "POST",
        SCAN,
        lambda s: {"json": {"p_ticket_code": "x", "p_event_id": 1}},
        401,
        "API key",
    ),
    (
        "wrong apikey",
        "POST",
        SCAN,
        lambda s: {"json": {"p_ticket_code": "x", "p_event_id": 1}, "headers": {"apikey": "nope"}},
        401,
        "Invalid API key",
    ),
    (
        "another sb_ key as bearer",
        "POST",
        SCAN,
        lambda s: {
            "json": {"p_ticket_code": "x", "p_event_id": 1},
            "headers": {
                "apikey": s.publishable_key,
                "Authorization": f"Bearer {s.keys.secret_key}",
            },
        },
        401,
        "JWT",
    ),
    (
        "forged bearer",
        "POST",
        SCAN,
        lambda s: {
            "json": {"p_ticket_code": "x", "p_event_id": 1},
            "headers": {
                "apikey": s.anon_key,
                "Authorization": "Bearer " + s.anon_key[:-4] + "AAAA",
            },
        },
        401,
        "JWT",
    ),
    (
        "bad signature",
        "POST",
        "/functions/v1/stripe-webhook",
        lambda s: {
            "data": b'{"id":"evt_x","type":"payment_intent.succeeded"}',
            "headers": {"Stripe-Signature": "t=1,v1=deadbeef"},
        },
        400,
        "signature",
    ),
    (
        "stale signature",
        "POST",
        "/functions/v1/stripe-webhook",
        lambda s: {
            "data": b'{"id":"evt_y"}',
            "headers": _signed(s, '{"id":"evt_y"}', int(time.time()) - 3600),
        },
        400,
        "tolerance",
    ),
    (
        "missing signature",
        "POST",
        "/functions/v1/stripe-webhook",
        lambda s: {"data": b"{}"},
        400,
        "Stripe-Signature",
    ),
    (
        "signed but not json",
        "POST",
        "/functions/v1/stripe-webhook",
        lambda s: {"data": b"nope", "headers": _signed(s, "nope")},
        400,
        "JSON",
    ),
    (
        "signed json that is not an object",
        "POST",
        "/functions/v1/stripe-webhook",
        lambda s: {"data": b"[1]", "headers": _signed(s, "[1]")},
        400,
        "JSON object",
    ),
    (
        "signed event without data.object",
        "POST",
        "/functions/v1/stripe-webhook",
        lambda s: {
            "data": b'{"id":"evt_z","type":"payment_intent.succeeded","data":{}}',
            "headers": _signed(s, '{"id":"evt_z","type":"payment_intent.succeeded","data":{}}'),
        },
        400,
        "data.object",
    ),
    (
        "signed payment without metadata",
        "POST",
        "/functions/v1/stripe-webhook",
        lambda s: (lambda p: {"data": p.encode(), "headers": _signed(s, p)})(
            json.dumps(
                {
                    "id": "evt_nometa",
                    "type": "payment_intent.succeeded",
                    "data": {"object": {"id": "pi_nometa", "amount": 100}},
                }
            )
        ),
        400,
        "metadata.event_id",
    ),
    (
        "unknown function",
        "POST",
        "/functions/v1/other",
        lambda s: {"data": b"{}"},
        404,
        "not found",
    ),
    ("unknown route", "GET", "/nowhere", lambda s: {}, 404, "no route"),
    ("wrong method", "DELETE", SCAN, lambda s: {"headers": headers(s)}, 405, "not allowed"),
    (
        "stripe without key",
        "POST",
        "/v1/payment_intents",
        lambda s: {"data": {"amount": "100", "currency": "usd"}},
        401,
        "API key",
    ),
    (
        "stripe live key refused",
        "POST",
        "/v1/payment_intents",
        lambda s: {
            "data": {"amount": "100", "currency": "usd"},
            "headers": {"Authorization": "Bearer sk_live_abc"},
        },
        401,
        "Live keys",
    ),
    (
        "stripe unknown parameter",
        "POST",
        "/v1/payment_intents",
        lambda s: {
            "data": {"amount": "100", "currency": "usd", "colour": "red"},
            "headers": {"Authorization": f"Bearer {s.stripe_key}"},
        },
        400,
        "colour",
    ),
    (
        "stripe missing amount",
        "POST",
        "/v1/payment_intents",
        lambda s: {
            "data": {"currency": "usd"},
            "headers": {"Authorization": f"Bearer {s.stripe_key}"},
        },
        400,
        "amount",
    ),
    (
        "stripe unknown intent",
        "GET",
        "/v1/payment_intents/pi_missing",
        lambda s: {"headers": {"Authorization": f"Bearer {s.stripe_key}"}},
        404,
        "pi_missing",
    ),
    (
        "admin without service key",
        "GET",
        "/admin/v1/state",
        lambda s: {"headers": headers(s)},
        401,
        "service_role",
    ),
    (
        "bad knobs",
        "POST",
        "/admin/v1/knobs",
        lambda s: {
            "json": {"endpoints": {"rpc:scan_ticket_atomic": {"workers": -1}}},
            "headers": admin_headers(s),
        },
        400,
        "workers",
    ),
    ("realtime without key", "GET", "/realtime/v1/websocket", lambda s: {}, 401, "API key"),
]


@pytest.mark.parametrize(
    ("name", "method", "path", "build", "status", "needle"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_input_is_a_clear_json_error_then_service_goes_on(
    standin: Any, name: str, method: str, path: str, build: Any, status: int, needle: str
) -> None:
    before = standin.end_state()
    got, body, hdrs = call(method, f"{standin.url}{path}", **build(standin))
    assert got == status, body
    assert hdrs.get("Content-Type", "").startswith("application/json")
    text = json.dumps(body)
    assert isinstance(body, dict), body
    assert needle.lower() in text.lower(), body
    assert "Traceback" not in text and 'File "' not in text
    assert standin.end_state() == before  # nothing changed
    # the next good request is answered correctly
    n = 1000 + [c[0] for c in CASES].index(name)
    assert scan(standin, ticket_code(1, n % 400))["outcome"] == "valid"
    assert scan(standin, ticket_code(1, n % 400))["outcome"] == "already_scanned"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4)
    ),
    max_leaves=12,
)
scan_like = st.fixed_dictionaries(
    {},
    optional={
        "p_ticket_code": json_values,
        "p_event_id": json_values,
        "p_gate": json_values,
        "p_lane": json_values,
        "p_direction": json_values,
    },
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=8) | json_values,
        "type": st.sampled_from(
            ["payment_intent.succeeded", "checkout.session.completed", "charge.refunded", "other"]
        )
        | json_values,
        "data": st.fixed_dictionaries(
            {},
            optional={
                "object": st.fixed_dictionaries(
                    {},
                    optional={
                        "id": json_values,
                        "amount": json_values,
                        "amount_total": json_values,
                        "payment_intent": json_values,
                        "payment_status": st.just("paid") | json_values,
                        "metadata": st.fixed_dictionaries(
                            {}, optional={"event_id": json_values, "quantity": json_values}
                        )
                        | json_values,
                    },
                )
                | json_values
            },
        )
        | json_values,
    },
)


def _fine(status: int, body: Any) -> None:
    assert status in (200, 400, 401, 404, 405, 413), (status, body)
    text = json.dumps(body)
    assert "Traceback" not in text and 'File "' not in text


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    scan_body=scan_like | json_values,
    revenue_body=json_values,
    event=event_like | json_values,
    query=st.lists(
        st.tuples(
            st.sampled_from(["select", "order", "limit", "offset", "code", "event_id", "x"]),
            st.text(max_size=12),
        ),
        max_size=4,
    ),
    form=st.dictionaries(
        st.sampled_from(
            [
                "amount",
                "currency",
                "metadata[event_id]",
                "confirm",
                "payment_method",
                "expand[]",
                "x[y][0]",
            ]
        ),
        st.text(max_size=8),
        max_size=5,
    ),
)
def test_no_input_gets_a_server_error(
    standin: Any,
    scan_body: Any,
    revenue_body: Any,
    event: Any,
    query: list[tuple[str, str]],
    form: dict[str, str],
) -> None:
    _fine(*call("POST", f"{standin.url}{SCAN}", headers=headers(standin), json=scan_body)[:2])
    _fine(
        *call(
            "POST",
            f"{standin.url}/rest/v1/rpc/event_revenue",
            headers=headers(standin),
            json=revenue_body,
        )[:2]
    )
    payload = json.dumps(event)
    _fine(
        *call(
            "POST",
            f"{standin.url}/functions/v1/stripe-webhook",
            data=payload.encode(),
            headers=_signed(standin, payload),
        )[:2]
    )
    _fine(
        *call("GET", f"{standin.url}/rest/v1/tickets", params=query, headers=headers(standin))[:2]
    )
    status, body, _ = call(
        "POST",
        f"{standin.url}/v1/payment_intents",
        data=form,
        headers={"Authorization": f"Bearer {standin.stripe_key}"},
    )
    assert status in (200, 400, 402), body
