"""Realtime: Phoenix protocol over a real websocket, postgres_changes after committed writes."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import aiohttp
import pytest

from staging.filters import Cond
from staging.realtime import Connection, Hub, parse_change_filter
from staging.schema import column_types, create_schema
from tests.staging.conftest import headers


def _join(topic: str, table: str, flt: str | None = None, ref: str = "1") -> str:
    change: dict[str, Any] = {"event": "*", "schema": "public", "table": table}
    if flt:
        change["filter"] = flt
    return json.dumps(
        {
            "topic": topic,
            "event": "phx_join",
            "ref": ref,
            "join_ref": ref,
            "payload": {
                "config": {
                    "broadcast": {"ack": False, "self": False},
                    "presence": {"enabled": False, "key": ""},
                    "postgres_changes": [change],
                    "private": False,
                }
            },
        }
    )


async def _recv(ws: aiohttp.ClientWebSocketResponse, event: str) -> dict[str, Any]:
    while True:
        msg = json.loads((await asyncio.wait_for(ws.receive(), 10)).data)
        if msg["event"] == event:
            return msg


def test_subscriber_sees_scan_updates_and_protocol_errors_do_not_break_it(standin: Any) -> None:
    async def go() -> None:
        async with aiohttp.ClientSession() as session:
            url = f"{standin.url}/realtime/v1/websocket?apikey={standin.anon_key}&vsn=1.0.0"
            async with session.ws_connect(url) as ws, session.ws_connect(url) as other:
                await ws.send_str(_join("realtime:gate", "tickets", "event_id=eq.2"))
                reply = await _recv(ws, "phx_reply")
                assert reply["payload"]["status"] == "ok"
                sub_id = reply["payload"]["response"]["postgres_changes"][0]["id"]
                assert (await _recv(ws, "system"))["payload"]["status"] == "ok"
                await other.send_str(_join("realtime:e1", "tickets", "event_id=eq.1"))
                await _recv(other, "phx_reply")
                await _recv(other, "system")
                # not Phoenix protocol: an error reply, and the connection keeps working
                for junk in ("hello", "[1,2]", '{"topic": 5}'):
                    await ws.send_str(junk)
                    err = await _recv(ws, "phx_reply")
                    assert (
                        err["payload"]["status"] == "error"
                        and "malformed" in err["payload"]["response"]["reason"]
                    )
                await ws.send_bytes(b"\x00\x01")
                assert (await _recv(ws, "phx_reply"))["payload"]["status"] == "error"
                await ws.send_str(
                    json.dumps(
                        {"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "9"}
                    )
                )
                hb = await _recv(ws, "phx_reply")
                assert hb["ref"] == "9" and hb["payload"]["status"] == "ok"
                async with session.post(
                    f"{standin.url}/rest/v1/rpc/scan_ticket_atomic",
                    headers=headers(standin),
                    json={"p_ticket_code": "T2-0000007", "p_event_id": 2},
                ) as resp:
                    assert (await resp.json())["outcome"] == "valid"
                change = await _recv(ws, "postgres_changes")
                data = change["payload"]["data"]
                assert change["topic"] == "realtime:gate" and change["payload"]["ids"] == [sub_id]
                assert (
                    data["type"] == "UPDATE"
                    and data["table"] == "tickets"
                    and data["commit_timestamp"]
                )
                assert data["record"]["code"] == "T2-0000007" and data["record"]["inside"] is True
                assert {"name": "inside", "type": "bool"} in data["columns"]
                # the event-1 subscriber is filtered out: its next message is its own heartbeat reply
                await other.send_str(
                    json.dumps(
                        {"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "h"}
                    )
                )
                assert json.loads((await asyncio.wait_for(other.receive(), 10)).data)["ref"] == "h"

    asyncio.run(go())


def test_websocket_needs_a_key(standin: Any) -> None:
    async def go() -> int:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(f"{standin.url}/realtime/v1/websocket?vsn=1.0.0"):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    assert asyncio.run(go()) == 401


def _types() -> dict[str, dict[str, str]]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    create_schema(conn)
    return column_types(conn)


TYPES = _types()


def test_join_errors_name_the_problem() -> None:
    hub = Hub(TYPES)
    conn = Connection(hub, lambda tok: tok == "good")
    bad_table = conn.handle(_join("realtime:x", "users"))
    assert "unknown table" in json.loads(bad_table[0])["payload"]["response"]["reason"]
    bad_filter = conn.handle(_join("realtime:x", "tickets", "event_id=between.1"))
    assert "filter" in json.loads(bad_filter[0])["payload"]["response"]["reason"]
    bad_topic = conn.handle(_join("lobby", "tickets"))
    assert "realtime:" in json.loads(bad_topic[0])["payload"]["response"]["reason"]
    assert hub.tables == frozenset()
    ok = conn.handle(_join("realtime:x", "orders"))
    assert json.loads(ok[0])["payload"]["status"] == "ok" and hub.tables == {"orders"}
    conn.handle(
        json.dumps({"topic": "realtime:x", "event": "phx_leave", "payload": {}, "ref": "2"})
    )
    assert hub.tables == frozenset()


def test_change_filters_match_like_supabase() -> None:
    hub = Hub(TYPES)
    a, b = Connection(hub, lambda t: True), Connection(hub, lambda t: True)
    a.handle(_join("realtime:a", "tickets", "event_id=in.(1,3)"))
    b.handle(_join("realtime:b", "tickets", "admissions=gt.1"))
    hub.publish([("tickets", "UPDATE", {"id": 1, "event_id": 3, "admissions": 1}, {"id": 1}, "t")])
    hub.publish([("tickets", "UPDATE", {"id": 2, "event_id": 2, "admissions": 2}, {"id": 2}, "t")])
    hub.publish([("orders", "INSERT", {"id": 3, "event_id": 1}, None, "t")])
    got_a = [json.loads(a.out.get_nowait()) for _ in range(a.out.qsize())]
    got_b = [json.loads(b.out.get_nowait()) for _ in range(b.out.qsize())]
    assert [
        m["payload"]["data"]["record"]["id"] for m in got_a if m["event"] == "postgres_changes"
    ] == [1]
    assert [
        m["payload"]["data"]["record"]["id"] for m in got_b if m["event"] == "postgres_changes"
    ] == [2]
    assert parse_change_filter("code=eq.T1-0000001", "tickets", TYPES["tickets"]) == (
        Cond("code", "eq", "T1-0000001"),
    )
    both = parse_change_filter("event_id=eq.1,inside=not.is.null", "tickets", TYPES["tickets"])
    assert both == (Cond("event_id", "eq", 1), Cond("inside", "is", None, True))
    # the column's type reads the value, as PostgreSQL would: "١" is not the integer 1
    with pytest.raises(ValueError, match="bigint"):
        parse_change_filter("event_id=eq.\u0661", "tickets", TYPES["tickets"])


def test_an_order_from_a_webhook_reaches_an_orders_subscriber_after_commit(standin: Any) -> None:
    import stripe

    async def go() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            url = f"{standin.url}/realtime/v1/websocket?apikey={standin.publishable_key}&vsn=1.0.0"
            async with session.ws_connect(url) as ws:
                await ws.send_str(_join("realtime:sales", "orders", "event_id=eq.1"))
                await _recv(ws, "system")
                payload = json.dumps(
                    {
                        "id": "evt_rt_1",
                        "type": "payment_intent.succeeded",
                        "data": {
                            "object": {
                                "id": "pi_rt_1",
                                "amount": 10000,
                                "metadata": {"event_id": "1", "quantity": "2"},
                            }
                        },
                    }
                )
                sig = stripe.WebhookSignature.generate_signature_header(
                    payload, standin.webhook_secret
                )
                async with session.post(
                    f"{standin.url}/functions/v1/stripe-webhook",
                    data=payload.encode(),
                    headers={"Stripe-Signature": sig},
                ) as resp:
                    assert (await resp.json())["outcome"] == "processed"
                change = await _recv(ws, "postgres_changes")
                # committed before it was sent: a read now sees the order and both its tickets
                async with session.post(
                    f"{standin.url}/rest/v1/rpc/event_revenue",
                    headers=headers(standin),
                    json={"p_event_id": 1},
                ) as resp:
                    revenue = await resp.json()
                return {"change": change["payload"]["data"], "revenue": revenue}

    got = asyncio.run(go())
    assert (
        got["change"]["type"] == "INSERT" and got["change"]["record"]["payment_intent"] == "pi_rt_1"
    )
    assert got["change"]["record"]["quantity"] == 2 and got["revenue"]["tickets_sold"] >= 2


def test_vsn_2_speaks_arrays() -> None:
    hub = Hub(TYPES)
    conn = Connection(hub, lambda t: True, "2.0.0")
    change = {"event": "*", "schema": "public", "table": "tickets"}
    join = ["1", "1", "realtime:v2", "phx_join", {"config": {"postgres_changes": [change]}}]
    for reply in conn.handle(json.dumps(join)):
        conn.send(reply)
    hub.publish([("tickets", "UPDATE", {"id": 9, "event_id": 1}, {"id": 9}, "ts")])
    got = [json.loads(conn.out.get_nowait()) for _ in range(conn.out.qsize())]
    assert [m[3] for m in got] == ["phx_reply", "system", "postgres_changes"]
    assert got[0][:3] == ["1", "1", "realtime:v2"] and got[0][4]["status"] == "ok"
    assert got[2][4]["data"]["record"] == {"id": 9, "event_id": 1}
    for reply in conn.handle('{"topic": "phoenix"}'):
        conn.send(reply)
    assert json.loads(conn.out.get_nowait())[4]["status"] == "error"
