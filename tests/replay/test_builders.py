"""Request builders: pure, sans-IO; each target kind's request, signatures, auth, outcomes."""

from __future__ import annotations

import json
import re
import time
from urllib.parse import parse_qsl

import pytest
import stripe
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.builders import (
    RUN_HEADER,
    BuildContext,
    BuildError,
    Credentials,
    Preparer,
    build_request,
    event_payload,
    form_encode,
    host_header_for,
    parse_outcome,
    prepare_request,
    public_url,
    stripe_signature,
    supabase_auth_headers,
)
from replay.http1 import RequestError, encode_request
from replay.target_profiles import profile_from_dict
from traces.event import (
    TARGET_PI_CONFIRM,
    TARGET_PI_CREATE,
    TARGET_REST_TICKETS,
    TARGET_REVENUE,
    TARGET_SCAN,
    TARGET_WEBHOOK,
    Event,
    pack_payload,
)
from traces.importers.request import REQUEST

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.c2lnbmF0dXJl"
SECRET = "whsec_test_0123456789abcdef"
KEYS = Credentials(anon_key=JWT, stripe_key="sk_test_abc123", webhook_secret=SECRET)
CTX = BuildContext(
    "https://proj.supabase.co", "run-42", KEYS, stripe_url="http://127.0.0.1:9/stripe"
)


def ev(
    target: str, payload: dict, kind: str = "x", seq: int = 7, after: int | None = None
) -> Event:
    return Event(1000, seq, kind, "actor:1", target, pack_payload(payload), after, None)


NOW = 1_700_000_000


def headers(req) -> dict[str, str]:
    return dict(req.headers)


SCAN = {"ticket_code": "T1-0000001", "event_id": 1, "gate": "A", "lane": "2", "direction": "in"}


def test_scan_rpc_default_argument_names() -> None:
    req = build_request(CTX, ev(TARGET_SCAN, SCAN, "scan"), 0)
    assert (req.origin, req.method, req.path) == (
        "https://proj.supabase.co",
        "POST",
        "/rest/v1/rpc/scan_ticket_atomic",
    )
    assert json.loads(req.body) == {
        "p_ticket_code": "T1-0000001",
        "p_event_id": 1,
        "p_gate": "A",
        "p_lane": "2",
        "p_direction": "in",
    }
    h = headers(req)
    assert (
        h["apikey"] == JWT and h["Authorization"] == f"Bearer {JWT}" and h[RUN_HEADER] == "run-42"
    )
    assert h["Content-Type"] == "application/json"


def test_profile_renames_arguments_and_path() -> None:
    prof = profile_from_dict(
        {
            "targets": {
                TARGET_SCAN: {
                    "path": "/rest/v1/rpc/scan",
                    "args": {"gate": "gate_name"},
                    "arg_prefix": "",
                }
            }
        }
    )
    ctx = BuildContext("http://h:1/base/", "r", KEYS, profile=prof)
    req = build_request(ctx, ev(TARGET_SCAN, SCAN), 0)
    assert req.path == "/base/rest/v1/rpc/scan"
    assert json.loads(req.body) == {
        "ticket_code": "T1-0000001",
        "event_id": 1,
        "gate_name": "A",
        "lane": "2",
        "direction": "in",
    }


def test_view_rpc_sends_its_query_and_drops_load() -> None:
    req = build_request(CTX, ev(TARGET_REVENUE, {"load": 3, "query": {"event_id": 1}}, "view"), 0)
    assert json.loads(req.body) == {"p_event_id": 1}


def test_rest_get_with_postgrest_params() -> None:
    q = {"select": "code,inside", "event_id": "eq.1", "order": "code.desc", "limit": 20}
    req = build_request(CTX, ev(TARGET_REST_TICKETS, {"load": 1, "query": q}, "view"), 0)
    assert req.method == "GET" and req.body == b""
    path, _, query = req.path.partition("?")
    assert path == "/rest/v1/tickets"
    assert dict(parse_qsl(query)) == {
        "select": "code,inside",
        "event_id": "eq.1",
        "order": "code.desc",
        "limit": "20",
    }
    assert "select=code,inside" in query  # PostgREST lists stay readable


@pytest.mark.parametrize("key,expected", [
    (JWT, {"apikey": JWT, "Authorization": f"Bearer {JWT}"}),
    ("sb_publishable_abc", {"apikey": "sb_publishable_abc"}),
    ("", {}),
])  # fmt: skip
def test_auth_headers_for_both_key_kinds(key: str, expected: dict) -> None:
    assert dict(supabase_auth_headers(key)) == expected


EVENT_OBJ = {
    "id": "evt_1", "object": "event", "type": "payment_intent.succeeded", "created": 1,
    "data": {"object": {"id": "pi_1", "object": "payment_intent", "amount": 100, "currency": "usd",
                        "status": "succeeded", "metadata": {"event_id": 1, "quantity": 2}}},
    "livemode": False,
}  # fmt: skip


@settings(max_examples=25, deadline=None)
@given(st.floats(min_value=0.01, max_value=1000))
def test_webhook_signed_at_send_time_passes_stripe_verification(speed: float) -> None:
    # the trace's `created` is far in the past at any speed: only the send-time signature matters
    req = build_request(CTX, ev(TARGET_WEBHOOK, EVENT_OBJ, "webhook"), int(time.time()))
    assert req.path == "/functions/v1/stripe-webhook"
    event = stripe.Webhook.construct_event(
        req.body.decode(), headers(req)["Stripe-Signature"], SECRET
    )
    assert event["id"] == "evt_1"


def test_webhook_signed_long_ago_is_rejected_by_the_same_check() -> None:
    req = build_request(CTX, ev(TARGET_WEBHOOK, EVENT_OBJ, "webhook"), int(time.time()) - 3600)
    with pytest.raises(stripe.SignatureVerificationError, match="tolerance"):
        stripe.Webhook.construct_event(req.body.decode(), headers(req)["Stripe-Signature"], SECRET)


def test_webhook_without_secret_is_a_build_error() -> None:
    ctx = BuildContext("http://h:1", "r", Credentials(anon_key=JWT))
    with pytest.raises(BuildError, match="STRIPE_WEBHOOK_SECRET"):
        build_request(ctx, ev(TARGET_WEBHOOK, EVENT_OBJ), 0)


def test_plain_edge_function_is_not_signed() -> None:
    req = build_request(CTX, ev("fn:hello", {"a": 1}), 0)
    assert "Stripe-Signature" not in headers(req) and json.loads(req.body) == {"a": 1}


def test_payment_intent_create_carries_run_id_and_idempotency_key() -> None:
    pay = {
        "amount": 5000,
        "currency": "usd",
        "quantity": 2,
        "event_id": 1,
        "buyer": "buyer:1",
        "order_ref": "o1",
    }
    req = build_request(CTX, ev(TARGET_PI_CREATE, pay, "checkout", seq=11), 0)
    assert (req.origin, req.path) == ("http://127.0.0.1:9", "/stripe/v1/payment_intents")
    form = dict(parse_qsl(req.body.decode()))
    assert form["amount"] == "5000" and form["metadata[gaterush_run]"] == "run-42"
    assert form["metadata[order_ref]"] == "o1" and form["payment_method_types[0]"] == "card"
    h = headers(req)
    assert (
        h["Authorization"] == "Bearer sk_test_abc123"
        and h["Idempotency-Key"] == "gaterush-run-42-11"
    )


def test_confirm_uses_the_id_its_create_returned() -> None:
    e = ev(
        TARGET_PI_CONFIRM, {"payment_method": "pm_card_chargeDeclined"}, "confirm", seq=12, after=11
    )
    req = build_request(CTX, e, 0, captured={"id": "pi_ABC"})
    assert req.path == "/stripe/v1/payment_intents/pi_ABC/confirm"
    assert dict(parse_qsl(req.body.decode())) == {"payment_method": "pm_card_chargeDeclined"}
    with pytest.raises(BuildError, match="no PaymentIntent id"):
        build_request(CTX, e, 0, captured=None)


def test_form_encoding_nests_like_stripe() -> None:
    form = form_encode({"a": 1, "m": {"k": "v"}, "l": ["x", "y"], "n": None})
    assert form == [("a", 1), ("m[k]", "v"), ("l[0]", "x"), ("l[1]", "y")]


def test_malformed_events_are_build_errors() -> None:
    with pytest.raises(BuildError, match="not an HTTP target"):
        build_request(CTX, ev("realtime:tickets", {}), 0)
    with pytest.raises(BuildError, match="must be a map"):
        build_request(CTX, Event(0, 1, "scan", "a", TARGET_SCAN, pack_payload([1, 2])), 0)
    with pytest.raises(BuildError, match="no amount"):
        build_request(CTX, ev(TARGET_PI_CREATE, {"currency": "usd"}), 0)


def test_http_expectations_compare_with_the_status() -> None:
    """An event expecting http_<status> gets that outcome back, a Stripe decline included."""
    assert parse_outcome(TARGET_PI_CREATE, 402, b"{}", expect="http_402") == ("http_402", None)
    assert parse_outcome(TARGET_REST_TICKETS, 400, b"{}", expect="http_400") == ("http_400", None)
    assert parse_outcome(TARGET_REST_TICKETS, 200, b"[]", expect="http_400") == ("ok", None)


@pytest.mark.parametrize("target,status,body,outcome,captured", [
    (TARGET_SCAN, 200, b'{"outcome":"already_scanned","ticket":null}', "already_scanned", None),
    (TARGET_SCAN, 200, b'"valid"', "valid", None),
    (TARGET_SCAN, 200, b'[{"outcome":"invalid"}]', "invalid", None),
    (TARGET_SCAN, 500, b'{"outcome":"valid"}', "http_500", None),
    (TARGET_REST_TICKETS, 400, b'{"code":"PGRST100"}', "http_400", None),
    (TARGET_PI_CREATE, 402, b'{"error":{"code":"card_declined"}}', "declined", None),
    (TARGET_WEBHOOK, 200, b'{"received":true,"outcome":"duplicate"}', "duplicate", None),
    (TARGET_PI_CREATE, 200, b'{"id":"pi_9","status":"requires_payment_method"}', "ok", {"id": "pi_9"}),
    (TARGET_PI_CONFIRM, 200, b'{"id":"pi_9","status":"succeeded"}', "succeeded", None),
    (TARGET_PI_CONFIRM, 402, b'{"error":{"code":"card_declined"}}', "declined", None),
    (TARGET_REST_TICKETS, 200, b"[]", "ok", None),
    (TARGET_REST_TICKETS, 0, b"", None, None),
])  # fmt: skip
def test_parse_outcome(
    target: str, status: int, body: bytes, outcome: str | None, captured: dict | None
) -> None:
    assert parse_outcome(target, status, body) == (outcome, captured)


def test_public_url_strips_credentials_and_query() -> None:
    assert (
        public_url("https://user:pw@h.example:8443/base?apikey=SECRET")
        == "https://h.example:8443/base"
    )


def test_keys_repr_shows_no_secret() -> None:
    assert "sk_test_abc123" not in repr(KEYS) and SECRET not in repr(KEYS) and JWT not in repr(CTX)


def recorded(target: str, request: dict, **content) -> Event:
    """An event as the recorder writes it: its content and the request as sent."""
    return ev(target, {**content, REQUEST: request})


def test_recorded_rest_write_goes_back_as_it_was_sent() -> None:
    req = build_request(CTX, recorded("rest:tickets", {
        "method": "POST", "path": "/rest/v1/tickets", "query": [["select", "code"]],
        "headers": [["prefer", "return=representation"], ["content-type", "application/json"]],
        "encoding": "json", "body": [{"code": "X1", "event_id": 1}],
    }), NOW)  # fmt: skip
    h = dict(req.headers)
    assert req.method == "POST" and req.path == "/rest/v1/tickets?select=code"
    assert json.loads(req.body) == [{"code": "X1", "event_id": 1}]
    assert h["prefer"] == "return=representation" and h["apikey"] == JWT
    assert "Accept" not in h  # not recorded: not sent


def test_recorded_head_with_count_and_single_keep_their_method_and_headers() -> None:
    req = build_request(CTX, recorded(TARGET_REST_TICKETS, {
        "method": "HEAD", "path": "/rest/v1/tickets", "query": [["event_id", "eq.1"]],
        "headers": [["prefer", "count=exact"], ["accept", "application/vnd.pgrst.object+json"]],
    }), NOW)  # fmt: skip
    assert req.method == "HEAD" and req.body == b""
    assert ("prefer", "count=exact") in req.headers
    assert ("accept", "application/vnd.pgrst.object+json") in req.headers


@pytest.mark.parametrize(
    ("target", "method", "path", "params"),
    [
        ("stripe:payment_intents.retrieve", "GET", "/v1/payment_intents/pi_1", None),
        ("stripe:payment_intents.list", "GET", "/v1/payment_intents", [["limit", "3"]]),
        ("stripe:payment_intents.cancel", "POST", "/v1/payment_intents/pi_1/cancel", {}),
        ("stripe:refunds.create", "POST", "/v1/refunds", {"payment_intent": "pi_1"}),
        ("stripe:customers.create", "POST", "/v1/customers", {"email": "a@example.com"}),
    ],
)
def test_any_recorded_stripe_call_replays(target, method, path, params) -> None:
    request = {"method": method, "path": path, "query": [], "headers": []}
    if isinstance(params, dict):
        request.update(encoding="form", body=params)
    elif params:
        request["query"] = params
    req = build_request(CTX, recorded(target, request), NOW)
    assert req.method == method and req.origin == "http://127.0.0.1:9"
    sent = dict(parse_qsl(req.body.decode())) if req.body else {}
    if method == "POST" and path.count("/") == 2:  # a create carries the run id
        assert sent.pop("metadata[gaterush_run]") == "run-42"
    assert sent == (params if isinstance(params, dict) else {})
    if params and not isinstance(params, dict):
        assert req.path.endswith("?limit=3")
    assert ("Authorization", "Bearer sk_test_abc123") in req.headers


def test_a_modelled_stripe_call_of_any_resource_replays() -> None:
    payload = {"payment_intent": "pi_9", "amount": 5}
    req = build_request(CTX, ev("stripe:refunds.create", payload), NOW)
    assert req.path == "/stripe/v1/refunds"
    assert dict(parse_qsl(req.body.decode())) == {
        "payment_intent": "pi_9",
        "amount": "5",
        "metadata[gaterush_run]": "run-42",
    }
    cancel = build_request(
        CTX, ev("stripe:payment_intents.cancel", {"payment_intent": "pi_9"}), NOW
    )
    assert cancel.path == "/stripe/v1/payment_intents/pi_9/cancel" and cancel.method == "POST"


def test_a_recorded_call_uses_the_id_its_creator_returned_this_time() -> None:
    e = recorded("stripe:refunds.create", {
        "method": "POST", "path": "/v1/refunds", "query": [], "headers": [],
        "encoding": "form", "body": {"payment_intent": "pi_recorded"}, "ref": "pi_recorded",
    })._replace(after=0)  # fmt: skip
    req = build_request(CTX, e, NOW, captured={"id": "pi_new"})
    assert dict(parse_qsl(req.body.decode()))["payment_intent"] == "pi_new"


@pytest.mark.parametrize(("mode", "verifies"), [("valid", True), ("bad", False), ("stale", False)])
def test_a_recorded_webhook_is_signed_as_it_was(mode: str, verifies: bool) -> None:
    body = {"id": "evt_1", "object": "event", "type": "payment_intent.succeeded"}
    e = recorded(TARGET_WEBHOOK, {
        "method": "POST", "path": "/functions/v1/stripe-webhook", "query": [],
        "headers": [["content-type", "application/json"]], "encoding": "json", "body": body,
        "signature": mode,
    }, **body)  # fmt: skip
    now = int(time.time())
    req = build_request(CTX, e, now)
    sig = dict(req.headers)["Stripe-Signature"]
    try:
        stripe.WebhookSignature.verify_header(req.body.decode(), sig, SECRET, tolerance=300)
        ok = True
    except stripe.SignatureVerificationError:
        ok = False
    assert ok is verifies


def test_a_recorded_unsigned_webhook_is_sent_unsigned() -> None:
    e = recorded(TARGET_WEBHOOK, {
        "method": "POST", "path": "/functions/v1/stripe-webhook", "query": [], "headers": [],
        "encoding": "json", "body": {"id": "evt_1"}, "signature": "none",
    })  # fmt: skip
    assert "Stripe-Signature" not in dict(build_request(CTX, e, NOW).headers)


def test_a_recorded_service_role_write_is_sent_with_the_service_key_when_given() -> None:
    import base64

    claims = base64.urlsafe_b64encode(b'{"role":"service_role"}').decode().rstrip("=")
    service = f"eyJhbGciOiJIUzI1NiJ9.{claims}.c2ln"
    from traces.importers.request import capture

    request = capture("POST", "/rest/v1/events", "", [("apikey", service),
                      ("Content-Type", "application/json")], b'{"id": 9}')  # fmt: skip
    assert request["auth"] == "service_role" and service not in repr(request)
    e = recorded("rest:events", request)
    assert dict(build_request(CTX, e, NOW).headers)["apikey"] == JWT  # no service key: anon's
    ctx = BuildContext("https://proj.supabase.co", "run-42", Credentials(JWT, service_key=service))
    assert dict(build_request(ctx, e, NOW).headers)["apikey"] == service


# Requests built ahead of their send (prepare_request): the same bytes, the signature made at send


def _recorded_hook(mode: str) -> Event:
    body = {"id": "evt_1", "object": "event", "type": "payment_intent.succeeded"}
    return recorded(TARGET_WEBHOOK, {
        "method": "POST", "path": "/functions/v1/stripe-webhook", "query": [],
        "headers": [["content-type", "application/json"]], "encoding": "json", "body": body,
        "signature": mode,
    }, **body)  # fmt: skip


PREPARED_EVENTS = [
    ev(TARGET_SCAN, SCAN, "scan"),
    ev(TARGET_REVENUE, {"load": 3, "query": {"event_id": 1}}, "view"),
    ev(TARGET_WEBHOOK, EVENT_OBJ, "webhook"),
    ev("fn:hello", {"a": 1}),
    ev(TARGET_PI_CREATE, {"amount": 4500, "currency": "usd"}, "checkout"),
    *(_recorded_hook(m) for m in ("valid", "bad", "stale", "none")),
]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(PREPARED_EVENTS), st.integers(min_value=0, max_value=2**40),
       st.text(max_size=12))  # fmt: skip
def test_a_prepared_request_is_the_request_built_at_its_send(
    e: Event, now_unix: int, actor: str
) -> None:
    e = e._replace(actor=actor or "a")
    req = build_request(CTX, e, now_unix)
    try:
        want = encode_request(req, host_header_for(req.origin))
    except RequestError:
        with pytest.raises(RequestError):
            prepare_request(CTX, e)
        return
    prepared = prepare_request(CTX, e)
    assert prepared.origin == req.origin and prepared.wire(now_unix) == want


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
RPC_PAYLOADS = st.dictionaries(st.sampled_from(["ticket_code", "gate", "p_lane", "load", "query", "é"]),
                               JSON_VALUES, max_size=5)  # fmt: skip
PROFILED = BuildContext("http://127.0.0.1:9", "r", KEYS, profile=profile_from_dict(
    {"targets": {TARGET_SCAN: {"args": {"gate": "p_gate_name"}, "drop": ["load", "p_lane"]},
                 "rpc:lookup": {"method": "GET"}}}))  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([CTX, PROFILED]),
       st.sampled_from([TARGET_SCAN, "rpc:lookup", TARGET_REVENUE, "fn:hello"]) | st.just(None),
       RPC_PAYLOADS, st.text(max_size=10), st.booleans())  # fmt: skip
def test_the_preparer_gives_the_bytes_prepare_request_gives(
    ctx: BuildContext, target: str | None, payload: dict, actor: str, recorded_: bool
) -> None:
    # the per-target fast form (a modelled RPC by POST) and the general way agree, for any
    # payload, actor, profile and target; a recorded request and a bad one go the general way
    if target is None:
        e = PREPARED_EVENTS[len(payload) % len(PREPARED_EVENTS)]
    else:
        if recorded_:
            payload = {**payload, REQUEST: {"method": "POST", "path": "/rest/v1/rpc/other",
                                            "encoding": "json", "body": {"x": 1}}}  # fmt: skip
        e = ev(target, payload, "scan")
    e = e._replace(actor=actor or "a")
    preparer = Preparer(ctx)
    for _ in range(2):  # the second time from what the first kept
        try:
            want = prepare_request(ctx, e)
        except (BuildError, RequestError) as err:
            with pytest.raises(type(err), match="^" + re.escape(str(err)) + "$"):
                preparer.prepare(e, None, event_payload(e))
            continue
        got = preparer.prepare(e, None, event_payload(e))
        assert (got.origin, got.signed, got.wire(NOW)) == (want.origin, want.signed, want.wire(NOW))


def test_a_payload_json_cannot_carry_is_a_build_error_not_a_crash() -> None:
    e = ev(TARGET_SCAN, {"ticket_code": b"\x01"}, "scan")
    with pytest.raises(BuildError, match="cannot be sent as JSON"):
        prepare_request(CTX, e)
    with pytest.raises(BuildError, match="cannot be sent as JSON"):
        Preparer(CTX).prepare(e, None, event_payload(e))


def test_a_prepared_webhook_is_signed_when_it_goes_out_not_when_it_was_built() -> None:
    prepared = prepare_request(CTX, ev(TARGET_WEBHOOK, EVENT_OBJ, "webhook"))
    assert prepared.signed and SECRET not in repr(prepared)
    later = int(time.time()) + 3600  # an hour after it was built: as if it waited in the lookahead
    wire = prepared.wire(later)
    head, _, body = wire.partition(b"\r\n\r\n")
    sig = next(ln for ln in head.decode().split("\r\n") if ln.startswith("Stripe-Signature: "))
    assert sig.split(": ", 1)[1].startswith(f"t={later},")
    stripe.WebhookSignature.verify_header(
        body.decode(), sig.split(": ", 1)[1], SECRET, tolerance=10**9
    )
    assert prepare_request(CTX, ev(TARGET_SCAN, SCAN, "scan")).signed is False


@given(st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace").encode()),
       st.integers(min_value=0, max_value=2**40), st.text(min_size=1, max_size=20))  # fmt: skip
def test_stripe_signature_is_stripes_own(body: bytes, t: int, secret: str) -> None:
    assert stripe_signature(body, secret, t) == stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, timestamp=t
    )


def test_a_prepared_request_with_a_bad_head_is_refused_as_the_transport_would() -> None:
    with pytest.raises(RequestError, match="bad header value in X-Gaterush-Actor"):
        prepare_request(CTX, ev(TARGET_SCAN, SCAN, "scan")._replace(actor="a\r\nX: 1"))
    with pytest.raises(BuildError, match="STRIPE_WEBHOOK_SECRET"):
        prepare_request(
            BuildContext("http://h:1", "r", Credentials()), ev(TARGET_WEBHOOK, EVENT_OBJ)
        )
