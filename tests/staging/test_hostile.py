"""Hostile input to the stand-in (issue 16): strict numbers, bounded JSON and form lists, deep
websocket frames, idle and slow sockets, a damaged --db, the user's own webhook secret; and a
fuzz test over every route. Each answer is a 4xx in the shape of the service the route imitates
(PostgREST {code, message, details, hint}; Stripe {"error": {...}}; the edge function
{"error": ...}), never a 500, and the next good request is answered right."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import stripe
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gaterush
from staging.cli import _announce
from staging.knobs import KnobError, knobs_from_dict
from staging.server import standin_in_thread
from tests.staging.conftest import INVENTORY, admin_headers, call, headers, scan
from traces.event import ticket_code

SCAN = "/rest/v1/rpc/scan_ticket_atomic"
REVENUE = "/rest/v1/rpc/event_revenue"
IDLE = 1.0


@pytest.fixture(scope="module")
def s() -> Iterator[Any]:
    with standin_in_thread(inventory=INVENTORY, deliver_webhooks=False, idle_timeout=IDLE) as st_:
        yield st_


def _shape(path: str, status: int, body: Any) -> None:
    """A 4xx in the imitated service's error shape."""
    assert 400 <= status < 500, (status, body)
    if path.startswith("/v1/"):
        assert isinstance(body, dict) and isinstance(body["error"]["message"], str), body
    elif path.startswith("/functions/"):
        assert isinstance(body, dict) and isinstance(body["error"], str), body
    else:
        assert isinstance(body, dict) and {"code", "message", "details", "hint"} <= set(body), body


def _signed(s: Any, payload: str) -> dict[str, str]:
    return {
        "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(
            payload, s.webhook_secret
        ),
        "Content-Type": "application/json",
    }


_n = iter(range(100, 400))


def _still_right(s: Any) -> None:
    code = ticket_code(1, next(_n))
    assert scan(s, code)["outcome"] == "valid"
    assert scan(s, code)["outcome"] == "already_scanned"


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    ("method", "path", "kw"),
    [
        # issue 16 item 7, one by one
        ("GET", "/rest/v1/tickets?limit=%C2%B2", {}),
        ("GET", "/rest/v1/tickets?offset=9223372036854775808", {}),
        ("GET", "/rest/v1/tickets?event_id=eq.%D9%A1", {}),
        ("GET", "/rest/v1/tickets?or=(" + "or(" * 40 + "id.eq.1" + ")" * 41, {}),
        ("POST", SCAN, {"json": {"p_ticket_code": "x", "p_event_id": "--1"}}),
        ("POST", SCAN, {"json": {"p_ticket_code": "x", "p_event_id": "²"}}),
        ("POST", SCAN, {"json": {"p_ticket_code": "x", "p_event_id": 1e30}}),
        ("POST", SCAN, {"json": {"p_ticket_code": "x", "p_event_id": 10**30}}),
        ("POST", SCAN, {"data": b'{"p_ticket_code": "\\ud800", "p_event_id": 1}'}),
        ("POST", SCAN, {"data": b'{"p_ticket_code": "a\\u0000", "p_event_id": 1}'}),
        ("POST", SCAN, {"data": DEEP}),
        ("POST", REVENUE, {"json": {"p_event_id": "١"}}),  # not event 1
        ("POST", REVENUE, {"json": {"p_event_id": 2**31}}),
        ("POST", "/rest/v1/events", {"data": DEEP}),
    ],
)
def test_bad_numbers_text_and_depth_are_4xx(s: Any, method: str, path: str, kw: Any) -> None:
    status, body, _ = call(method, s.url + path, headers=headers(s), **kw)
    _shape(path, status, body)
    _still_right(s)


def test_signed_webhook_with_huge_numbers_is_a_400(s: Any) -> None:
    for md in ({"event_id": 1e30}, {"event_id": "1e30"}, {"event_id": "1", "quantity": 10**30}):
        payload = json.dumps(
            {
                "id": f"evt_huge_{md}",
                "type": "payment_intent.succeeded",
                "data": {"object": {"id": "pi_huge", "amount": 100, "metadata": md}},
            }
        )
        status, body, _ = call(
            "POST",
            f"{s.url}/functions/v1/stripe-webhook",
            data=payload.encode(),
            headers=_signed(s, payload),
        )
        _shape("/functions/", status, body)
    _still_right(s)


def test_form_lists_are_bounded(s: Any) -> None:
    # issue 16 item 9: one 50-byte request must not make the decoder build a huge list
    for form in ("expand[200000000]=x", "metadata[a][b][c][d][e][f][g]=1", "expand[1]=x"):
        status, body, _ = call(
            "POST",
            f"{s.url}/v1/payment_intents",
            data=form,
            headers={
                "Authorization": f"Bearer {s.stripe_key}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        _shape("/v1/", status, body)
    ok = stripe.StripeClient(s.stripe_key, base_addresses={"api": s.url}, max_network_retries=0)
    assert ok.v1.payment_intents.create(params={"amount": 100, "currency": "usd"}).amount == 100


def test_deep_websocket_frame_closes_with_1008(s: Any) -> None:
    # RFC 6455 7.4.1: 1008 policy violation; never an HTTP 500 written into the upgraded socket
    async def go() -> tuple[Any, Any]:
        async with aiohttp.ClientSession() as session:
            url = f"{s.url}/realtime/v1/websocket?apikey={s.publishable_key}&vsn=1.0.0"
            async with session.ws_connect(url, max_msg_size=0) as ws:
                await ws.send_str("[" * 20_000 + "]" * 20_000)
                msg = await ws.receive(timeout=30)
                return msg.type, ws.close_code

    kind, code = asyncio.run(go())
    assert kind in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and code == 1008
    _still_right(s)


def _closed_within(sock: socket.socket, limit: float) -> bool:
    sock.settimeout(limit)
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return True
    except (TimeoutError, ConnectionResetError):
        return False


def _connect(s: Any) -> socket.socket:
    host, port = s.url.rsplit("//", 1)[1].rsplit(":", 1)
    return socket.create_connection((host.strip("[]"), int(port)), timeout=10)


def test_idle_and_slow_sockets_are_closed(s: Any) -> None:
    # an idle connection, and one that dribbles its headers, are closed after idle_timeout
    idle = _connect(s)
    slow = _connect(s)
    slow.sendall(b"GET /rest/v1/events HTTP/1.1\r\nHost: x\r\n")
    assert _closed_within(idle, 30 * IDLE) and _closed_within(slow, 30 * IDLE)
    # a body that never completes is answered 408 in the route's shape
    body = _connect(s)
    body.sendall(
        b"POST /rest/v1/rpc/scan_ticket_atomic HTTP/1.1\r\nHost: x\r\n"
        + f"apikey: {s.anon_key}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    body.settimeout(30 * IDLE)
    got = body.recv(65536)
    assert got.startswith(b"HTTP/1.1 408"), got[:80]
    for sock in (idle, slow, body):
        sock.close()
    _still_right(s)


def test_serve_on_a_file_that_is_not_sqlite_is_a_one_line_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    result = CliRunner().invoke(
        gaterush.main, ["staging", "serve", "--port", "0", "--db", str(junk)]
    )
    assert result.exit_code == 104, result.output
    assert "not a SQLite database" in result.output and "Traceback" not in result.output
    assert junk.read_bytes() == b"this is not a database" * 100


def test_binary_knobs_file_is_a_one_line_error(tmp_path: Path) -> None:
    f = tmp_path / "k.toml"
    f.write_bytes(bytes(range(256)))
    result = CliRunner().invoke(gaterush.main, ["staging", "serve", "--knobs", str(f)])
    assert result.exit_code == 104 and "not valid TOML" in result.output


def test_knobs_refuse_runaway_latencies() -> None:
    for bad in ("lognormal:20ms,1e10", "1e300s", "exp:1e9s"):
        with pytest.raises(KnobError):
            knobs_from_dict({"endpoints": {"rpc:*": {"latency": bad}}})


def test_the_users_webhook_secret_is_neither_printed_nor_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = "whsec_" + "u5er" * 10
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", mine)
    db = tmp_path / "s.sqlite"
    with standin_in_thread(db=str(db), deliver_webhooks=False) as st_:
        assert st_.webhook_secret == mine  # it verifies with the user's secret
        _announce(st_, None, str(db))
        payload = json.dumps({"id": "evt_mine", "type": "x", "data": {"object": {"id": "o"}}})
        status, _, _ = call(
            "POST",
            f"{st_.url}/functions/v1/stripe-webhook",
            data=payload,
            headers=_signed(st_, payload),
        )
        assert status == 200
    out = capsys.readouterr().out
    assert mine not in out and "STRIPE_WEBHOOK_SECRET" in out
    for f in tmp_path.iterdir():
        assert mine.encode() not in f.read_bytes(), f
    stored = sqlite3.connect(db).execute("SELECT value FROM meta WHERE key='keys'").fetchone()[0]
    assert json.loads(stored)["webhook_secret"] != mine


# --- fuzz: every route ------------------------------------------------------------------------

ROUTES = [
    ("POST", SCAN),
    ("POST", REVENUE),
    ("GET", "/rest/v1/rpc/event_revenue"),
    ("GET", "/rest/v1/tickets"),
    ("POST", "/rest/v1/tickets"),
    ("PATCH", "/rest/v1/tickets"),
    ("DELETE", "/rest/v1/tickets"),
    ("POST", "/functions/v1/stripe-webhook"),
    ("POST", "/v1/payment_intents"),
    ("GET", "/v1/payment_intents"),
    ("GET", "/v1/payment_intents/pi_x"),
    ("POST", "/v1/payment_intents/pi_x"),
    ("POST", "/v1/payment_intents/pi_x/confirm"),
    ("POST", "/v1/payment_intents/pi_x/cancel"),
    ("POST", "/v1/refunds"),
    ("POST", "/v1/customers"),
    ("GET", "/v1/customers/cus_x"),
    ("POST", "/admin/v1/knobs"),
]
numbers = st.sampled_from(
    ["1e30", "-0", "9223372036854775808", "١", "²", "--1", "0x10", "1_000", " 1", "NaN", "\ud800"]
) | st.integers(-(2**70), 2**70).map(str)
deep = st.integers(20, 3000).map(lambda n: "[" * n + "]" * n)
texts = st.text(max_size=30) | numbers
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | texts,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(texts, kids, max_size=3),
    max_leaves=10,
)
json_bodies = json_values.map(lambda v: json.dumps(v).encode()) | deep.map(str.encode)
bodies = st.binary(max_size=200) | json_bodies
queries = st.lists(
    st.tuples(
        st.sampled_from(
            ["select", "order", "limit", "offset", "id", "or", "expand[]", "limit", "x"]
        )
        | st.text(max_size=8),
        texts | deep.map(lambda t: t[:600]),  # URLs past 8 KB are refused by the HTTP parser
    ),
    max_size=4,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(route=st.sampled_from(ROUTES), body=bodies, query=queries, form=st.booleans())
def test_fuzz_every_route_answers_4xx_in_shape_then_serves(
    s: Any, route: tuple[str, str], body: bytes, query: list[tuple[str, str]], form: bool
) -> None:
    method, path = route
    if path.startswith("/v1/"):
        h = {"Authorization": f"Bearer {s.stripe_key}"}
        if form:
            h["Content-Type"] = "application/x-www-form-urlencoded"
    elif path.startswith("/functions/"):
        h = {"Stripe-Signature": "t=1,v1=00"}
    elif path.startswith("/admin/"):
        h = admin_headers(s)
    else:
        h = headers(s, **{"Content-Type": "application/json"})
    q = [
        (k.encode("utf-8", "replace").decode(), v.encode("utf-8", "replace").decode())
        for k, v in query
    ]
    status, got, _ = call(method, s.url + path, params=q, data=body, headers=h)
    if status >= 300:
        _shape(path, status, got)
    _still_right(s)
