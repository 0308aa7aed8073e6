"""Realtime: Phoenix messages and matching postgres_changes with the writes that caused them."""

from __future__ import annotations

import json

from replay.builders import BuildContext, Credentials
from replay.realtime import heartbeat_message, join_message, record_key, websocket_url, write_keys
from traces.event import Event, order_ticket_code, pack_payload


def test_websocket_url() -> None:
    ctx = BuildContext("https://p.supabase.co", "r", Credentials(anon_key="sb_publishable_k"))
    assert (
        websocket_url(ctx)
        == "wss://p.supabase.co/realtime/v1/websocket?vsn=1.0.0&apikey=sb_publishable_k"
    )
    assert websocket_url(BuildContext("http://127.0.0.1:5/", "r")).startswith(
        "ws://127.0.0.1:5/realtime/v1/websocket?vsn=1.0.0"
    )


def test_join_message_shape() -> None:
    m = json.loads(join_message("realtime:tickets", "tickets", "event_id=eq.1", "jwt.x.y", "3"))
    assert (m["topic"], m["event"], m["ref"], m["join_ref"]) == (
        "realtime:tickets",
        "phx_join",
        "3",
        "3",
    )
    pc = m["payload"]["config"]["postgres_changes"]
    assert pc == [{"event": "*", "schema": "public", "table": "tickets", "filter": "event_id=eq.1"}]
    assert m["payload"]["access_token"] == "jwt.x.y"
    # a publishable key is not a JWT: no access_token
    assert (
        "access_token"
        not in json.loads(join_message("realtime:t", "t", None, "sb_publishable_x", "1"))["payload"]
    )
    assert json.loads(heartbeat_message("9")) == {
        "topic": "phoenix",
        "event": "heartbeat",
        "payload": {},
        "ref": "9",
    }


def test_write_keys_and_record_key() -> None:
    scan = Event(
        0, 1, "scan", "a", "rpc:scan_ticket_atomic", pack_payload({"ticket_code": "T1-0000003"})
    )
    assert write_keys(scan) == ["T1-0000003"]
    obj = {
        "type": "payment_intent.succeeded",
        "data": {"object": {"id": "pi_9", "metadata": {"quantity": 2}}},
    }
    hook = Event(0, 2, "webhook", "stripe", "fn:stripe-webhook", pack_payload(obj))
    assert write_keys(hook) == [order_ticket_code("pi_9", 0), order_ticket_code("pi_9", 1)]
    assert write_keys(Event(0, 3, "view", "v", "rest:events", pack_payload({}))) == []
    msg = {
        "event": "postgres_changes",
        "payload": {"data": {"type": "UPDATE", "record": {"code": "T1-0000003"}}},
    }
    assert record_key(msg) == "T1-0000003" and record_key({"payload": {}}) is None
