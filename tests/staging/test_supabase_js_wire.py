"""The exact requests supabase-js v2 (postgrest-js, realtime-js) makes, written out from its wire
format, get the answers a Supabase project gives: a recording of a JavaScript app replays too.

Wire format: https://supabase.com/docs/reference/javascript (the calls),
https://postgrest.org/en/stable/references/api/tables_views.html (what they become), and
postgrest-js's builders: `apikey` and `Authorization: Bearer` of the same key, `X-Client-Info`,
`Accept-Profile: public` on GET/HEAD and `Content-Profile: public` on writes and RPCs, `Prefer`
joined with commas, `or=(...)`, `order=col.desc`, `Accept: application/vnd.pgrst.object+json`
for .single(), `Accept: text/csv` for .csv()."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from staging.server import ThreadedStandIn, standin_in_thread
from tests.staging.conftest import INVENTORY, call
from traces.event import ticket_code


@pytest.fixture(scope="module")
def s() -> Iterator[ThreadedStandIn]:
    with standin_in_thread(inventory=INVENTORY, deliver_webhooks=False) as standin:
        yield standin


def js(key: str, method: str = "GET", **extra: str) -> dict[str, str]:
    """The headers supabase-js sends for `createClient(url, key)`."""
    h = {
        "apikey": key,
        "Authorization": f"Bearer {key}",
        "X-Client-Info": "supabase-js-node/2.49.4",
    }
    h["Accept-Profile" if method in ("GET", "HEAD") else "Content-Profile"] = "public"
    if method not in ("GET", "HEAD", "DELETE"):
        h["Content-Type"] = "application/json"
    return {**h, **extra}


def test_select_embed_filter_order_limit(s: Any) -> None:
    # supabase.from('tickets').select('code, events(name)').eq('event_id', 2)
    #   .order('code', { ascending: false }).limit(2)
    url = (
        f"{s.url}/rest/v1/tickets?select=code%2C+events%28name%29&event_id=eq.2"
        "&order=code.desc.nullslast&limit=2"
    )
    status, body, _ = call("GET", url, headers=js(s.publishable_key))
    assert status == 200
    assert body == [
        {"code": ticket_code(2, 49), "events": {"name": "Semi"}},
        {"code": ticket_code(2, 48), "events": {"name": "Semi"}},
    ]


def test_single_or_and_head_count(s: Any) -> None:
    # .select('name').eq('id', 1).single()
    status, body, _ = call(
        "GET",
        f"{s.url}/rest/v1/events?select=name&id=eq.1",
        headers=js(s.anon_key, Accept="application/vnd.pgrst.object+json"),
    )
    assert (status, body) == (200, {"name": "Final"})
    status, body, _ = call(
        "GET",
        f"{s.url}/rest/v1/events?select=name&id=eq.7",
        headers=js(s.anon_key, Accept="application/vnd.pgrst.object+json"),
    )
    assert status == 406 and body["code"] == "PGRST116"
    assert body["details"] == "The result contains 0 rows"
    # .or('code.eq.A,code.eq.B')
    a, b = ticket_code(1, 1), ticket_code(1, 2)
    status, body, _ = call(
        "GET",
        f"{s.url}/rest/v1/tickets?select=code&or=%28code.eq.{a}%2Ccode.eq.{b}%29&order=code.asc",
        headers=js(s.anon_key),
    )
    assert [r["code"] for r in body] == [a, b]
    # .select('*', { count: 'exact', head: true }).eq('event_id', 2)
    status, body, h = call(
        "HEAD",
        f"{s.url}/rest/v1/tickets?select=*&event_id=eq.2",
        headers=js(s.anon_key, Prefer="count=exact"),
    )
    assert status == 200 and h["Content-Range"] == "0-49/50"
    # a counted partial page is 206 Partial Content; an offset past the end is 416
    # (PostgREST's src/library/PostgREST/RangeQuery.hs)
    status, body, h = call(
        "GET",
        f"{s.url}/rest/v1/tickets?select=id&event_id=eq.2&limit=10&offset=5",
        headers=js(s.anon_key, Prefer="count=exact"),
    )
    assert status == 206 and h["Content-Range"] == "5-14/50" and len(body) == 10
    status, body, h = call(
        "GET",
        f"{s.url}/rest/v1/tickets?select=id&event_id=eq.2&offset=51",
        headers=js(s.anon_key, Prefer="count=exact"),
    )
    assert status == 416 and body["code"] == "PGRST103"
    # .csv()
    status, body, h = call(
        "GET",
        f"{s.url}/rest/v1/events?select=id,name&order=id.asc",
        headers=js(s.anon_key, Accept="text/csv"),
    )
    assert h["Content-Type"].startswith("text/csv") and body.splitlines()[1] == "1,Final"
    # an unexposed schema (supabase.schema('private')) is PostgREST's 406 PGRST106
    status, body, _ = call(
        "GET", f"{s.url}/rest/v1/events", headers=js(s.anon_key, **{"Accept-Profile": "private"})
    )
    assert status == 406 and body["code"] == "PGRST106"


def test_writes_as_supabase_js_sends_them(s: Any) -> None:
    key = s.keys.secret_key
    row = {"code": "JS-1", "event_id": 2}
    # .insert(row)  (no .select(): Prefer return=minimal, 201 without a body)
    status, body, _ = call(
        "POST",
        f"{s.url}/rest/v1/tickets",
        headers=js(key, "POST", Prefer="return=minimal"),
        data=json.dumps(row),
    )
    assert status == 201 and body == ""
    # .upsert({...}, { onConflict: 'code' }).select()
    status, body, _ = call(
        "POST",
        f"{s.url}/rest/v1/tickets?on_conflict=code&select=*",
        headers=js(key, "POST", Prefer="resolution=merge-duplicates,return=representation"),
        data=json.dumps({**row, "status": "void"}),
    )
    assert status == 201 and body[0]["status"] == "void" and body[0]["code"] == "JS-1"
    # .update({ status: 'valid' }).eq('code', 'JS-1').select('code,status')
    status, body, _ = call(
        "PATCH",
        f"{s.url}/rest/v1/tickets?code=eq.JS-1&select=code%2Cstatus",
        headers=js(key, "PATCH", Prefer="return=representation"),
        data=json.dumps({"status": "valid"}),
    )
    assert (status, body) == (200, [{"code": "JS-1", "status": "valid"}])
    # an update asked for as one object that matches no row is 406 PGRST116 and changes nothing;
    # one that matches several is undone
    status, body, _ = call(
        "PATCH",
        f"{s.url}/rest/v1/tickets?event_id=eq.2&select=code",
        headers=js(
            key, "PATCH", Prefer="return=representation", Accept="application/vnd.pgrst.object+json"
        ),
        data=json.dumps({"status": "void"}),
    )
    assert status == 406 and body["code"] == "PGRST116"
    status, body, _ = call(
        "GET", f"{s.url}/rest/v1/tickets?event_id=eq.2&status=eq.void&select=code", headers=js(key)
    )
    assert body == []
    # .delete().eq('code', 'JS-1')  (204, no body)
    status, body, _ = call(
        "DELETE", f"{s.url}/rest/v1/tickets?code=eq.JS-1", headers=js(key, "DELETE")
    )
    assert status == 204
    status, body, _ = call("GET", f"{s.url}/rest/v1/tickets?code=eq.JS-1", headers=js(s.anon_key))
    assert body == []
    # the publishable key may not write (RLS): 401 42501
    status, body, _ = call(
        "POST",
        f"{s.url}/rest/v1/tickets",
        headers=js(s.publishable_key, "POST", Prefer="return=minimal"),
        data=json.dumps(row),
    )
    assert status == 401 and body["code"] == "42501"


def test_rpc_as_supabase_js_sends_it(s: Any) -> None:
    # supabase.rpc('scan_ticket_atomic', { p_ticket_code, p_event_id })
    code = ticket_code(2, 30)
    for want in ("valid", "already_scanned"):
        status, body, _ = call(
            "POST",
            f"{s.url}/rest/v1/rpc/scan_ticket_atomic",
            headers=js(s.publishable_key, "POST"),
            data=json.dumps({"p_ticket_code": code, "p_event_id": 2}),
        )
        assert status == 200 and body["outcome"] == want


def test_realtime_js_join_and_change(s: Any) -> None:
    # realtime-js: /realtime/v1/websocket?apikey=KEY&vsn=1.0.0, phx_join with the access token
    # (https://supabase.com/docs/guides/realtime/protocol)
    async def go() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            url = f"{s.url}/realtime/v1/websocket?apikey={s.publishable_key}&vsn=1.0.0"
            async with session.ws_connect(url) as ws:
                await ws.send_str(
                    json.dumps(
                        {
                            "topic": "realtime:gate",
                            "event": "phx_join",
                            "payload": {
                                "config": {
                                    "broadcast": {"ack": False, "self": False},
                                    "presence": {"enabled": False, "key": ""},
                                    "postgres_changes": [
                                        {
                                            "event": "UPDATE",
                                            "schema": "public",
                                            "table": "tickets",
                                            "filter": f"code=eq.{ticket_code(2, 31)}",
                                        }
                                    ],
                                    "private": False,
                                },
                                "access_token": s.publishable_key,
                            },
                            "ref": "1",
                            "join_ref": "1",
                        }
                    )
                )
                while True:
                    m = json.loads((await ws.receive(timeout=30)).data)
                    if m["event"] == "system":
                        break
                async with session.post(
                    f"{s.url}/rest/v1/rpc/scan_ticket_atomic",
                    headers=js(s.publishable_key, "POST"),
                    data=json.dumps({"p_ticket_code": ticket_code(2, 31), "p_event_id": 2}),
                ) as resp:
                    assert resp.status == 200
                while True:
                    m = json.loads((await ws.receive(timeout=30)).data)
                    if m["event"] == "postgres_changes":
                        return m

    msg = asyncio.run(go())
    data = msg["payload"]["data"]
    assert data["type"] == "UPDATE" and data["record"]["code"] == ticket_code(2, 31)
    assert data["record"]["inside"] is True
