"""supabase-py 2.x against the stand-in, call for call: what the official client sends gets the
answer Supabase (PostgREST) gives. Each test names the documented behaviour it holds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from postgrest.exceptions import APIError
from supabase import acreate_client, create_client

from staging.server import ThreadedStandIn, standin_in_thread
from tests.staging.conftest import INVENTORY
from traces.event import ticket_code


@pytest.fixture(scope="module")
def standin() -> Iterator[ThreadedStandIn]:
    with standin_in_thread(inventory=INVENTORY, deliver_webhooks=False) as s:
        yield s


@pytest.fixture(params=["legacy", "publishable"])
def anon(standin: Any, request: Any) -> Any:
    # https://supabase.com/docs/guides/api/api-keys: the legacy anon JWT and the
    # sb_publishable_ key both work with the client libraries (apikey + Bearer of the same key)
    key = standin.anon_key if request.param == "legacy" else standin.publishable_key
    return create_client(standin.url, key)


@pytest.fixture()
def service(standin: Any) -> Any:
    # sb_secret_ keys (and the legacy service_role JWT) bypass RLS
    return create_client(standin.url, standin.keys.secret_key)


def test_select_filters_order_and_range(anon: Any) -> None:
    # https://supabase.com/docs/reference/python/select, /order, /range
    res = (
        anon.table("tickets")
        .select("code,event_id")
        .eq("event_id", 2)
        .order("code", desc=True)
        .range(0, 2)
        .execute()
    )
    assert [r["code"] for r in res.data] == [ticket_code(2, n) for n in (49, 48, 47)]
    assert all(r["event_id"] == 2 for r in res.data)


def test_single_and_maybe_single(anon: Any) -> None:
    # https://supabase.com/docs/reference/python/single: one object; zero or several rows
    # are PostgREST's 406 PGRST116 (https://postgrest.org/en/stable/references/errors.html)
    one = anon.table("events").select("id,name").eq("id", 1).single().execute()
    assert one.data == {"id": 1, "name": "Final"}
    for q in (
        anon.table("events").select("id").eq("id", 99),
        anon.table("events").select("id"),
    ):
        with pytest.raises(APIError) as err:
            q.single().execute()
        assert err.value.code == "PGRST116"
    assert anon.table("events").select("id").eq("id", 99).maybe_single().execute() is None


def test_or_not_and_in_filters(anon: Any) -> None:
    # https://supabase.com/docs/reference/python/or, /not, /in
    a, b = ticket_code(1, 3), ticket_code(1, 7)
    res = (
        anon.table("tickets").select("code").or_(f"code.eq.{a},code.eq.{b}").order("code").execute()
    )
    assert [r["code"] for r in res.data] == [a, b]
    res = (
        anon.table("tickets")
        .select("code")
        .eq("event_id", 2)
        .not_.in_("code", [ticket_code(2, n) for n in range(1, 50)])
        .execute()
    )
    assert [r["code"] for r in res.data] == [ticket_code(2, 0)]
    nested = (
        anon.table("tickets")
        .select("code")
        .or_(f"code.eq.{a},and(event_id.eq.2,code.eq.{ticket_code(2, 5)})")
    )
    assert sorted(r["code"] for r in nested.execute().data) == sorted([a, ticket_code(2, 5)])


def test_aliases_casts_and_embedded_resources(anon: Any) -> None:
    # https://postgrest.org/en/stable/references/api/tables_views.html#renaming-columns,
    # #casting-columns and https://supabase.com/docs/guides/database/joins-and-nesting
    t = (
        anon.table("tickets")
        .select("c:code,eid:event_id::text,events(name,price_cents)")
        .eq("code", ticket_code(2, 1))
        .single()
        .execute()
    )
    assert t.data == {
        "c": ticket_code(2, 1),
        "eid": "2",
        "events": {"name": "Semi", "price_cents": 2500},
    }
    ev = anon.table("events").select("id,tickets(code)").eq("id", 2).single().execute()
    assert len(ev.data["tickets"]) == 50  # one-to-many: an array
    inner = anon.table("tickets").select("code,orders!inner(id)").eq("event_id", 1).execute()
    assert inner.data == []  # no pre-sold ticket has an order: !inner drops them all


def test_counts_and_head(anon: Any) -> None:
    # https://supabase.com/docs/reference/python/select (count="exact", head=True)
    res = anon.table("tickets").select("*", count="exact").eq("event_id", 2).limit(5).execute()
    assert res.count == 50 and len(res.data) == 5
    head = anon.table("tickets").select("*", count="planned", head=True).eq("event_id", 1).execute()
    assert head.count == 400 and not head.data


def test_csv(anon: Any) -> None:
    # https://supabase.com/docs/reference/python/csv
    res = anon.table("events").select("id,name").order("id").csv().execute()
    assert res.data.splitlines() == ["id,name", "1,Final", "2,Semi"]


def test_writes_follow_rls_anon_reads_only(anon: Any, standin: Any) -> None:
    # Supabase's defaults: RLS on, the schema's policies let anon read; an insert the policy
    # refuses is 42501 (https://supabase.com/docs/guides/database/postgres/row-level-security),
    # an update or delete it hides affects no row
    with pytest.raises(APIError) as err:
        anon.table("events").insert(
            {
                "id": 50,
                "name": "x",
                "capacity": 1,
                "presold": 0,
                "price_cents": 1,
                "currency": "usd",
            }
        ).execute()
    assert err.value.code == "42501"
    assert anon.table("events").update({"name": "hacked"}).eq("id", 1).execute().data == []
    assert anon.table("events").delete().eq("id", 1).execute().data == []
    assert anon.table("events").select("name").eq("id", 1).single().execute().data == {
        "name": "Final"
    }


def test_service_role_insert_upsert_update_delete(service: Any, standin: Any) -> None:
    # https://supabase.com/docs/reference/python/insert, /upsert, /update, /delete
    row = {
        "id": 10,
        "name": "Extra",
        "capacity": 10,
        "presold": 0,
        "price_cents": 100,
        "currency": "usd",
    }
    got = service.table("events").insert(row).execute().data
    assert got[0]["name"] == "Extra" and got[0]["allow_reentry"] is False
    with pytest.raises(APIError) as err:
        service.table("events").insert(row).execute()
    assert err.value.code == "23505"  # unique_violation
    up = service.table("events").upsert({**row, "name": "Extra 2"}).execute().data
    assert up[0]["name"] == "Extra 2"
    ign = service.table("events").upsert({**row, "name": "no"}, ignore_duplicates=True).execute()
    assert ign.data == []
    t = (
        service.table("tickets")
        .upsert({"code": "X-1", "event_id": 10}, on_conflict="code")
        .execute()
        .data
    )
    assert t[0]["code"] == "X-1" and t[0]["status"] == "valid"
    upd = service.table("tickets").update({"status": "void"}).eq("code", "X-1").execute().data
    assert upd[0]["status"] == "void"
    with pytest.raises(APIError) as err:
        service.table("tickets").delete().execute()  # no filter
    assert err.value.code == "21000"
    gone = service.table("tickets").delete().eq("code", "X-1").execute().data
    assert [r["code"] for r in gone] == ["X-1"]
    service.table("events").delete().eq("id", 10).execute()
    assert service.table("events").select("id").eq("id", 10).execute().data == []


def test_rpc_and_errors_in_postgrest_shape(anon: Any) -> None:
    # https://supabase.com/docs/reference/python/rpc; errors {code, message, details, hint}
    code = ticket_code(2, 40 if anon.supabase_key.startswith("sb_") else 41)
    res = anon.rpc("scan_ticket_atomic", {"p_ticket_code": code, "p_event_id": 2}).execute()
    assert res.data["outcome"] == "valid"
    again = anon.rpc("scan_ticket_atomic", {"p_ticket_code": code, "p_event_id": 2}).execute()
    assert again.data["outcome"] == "already_scanned"
    rev = anon.rpc("event_revenue", {"p_event_id": 2}).execute()
    assert rev.data["event_id"] == 2
    for call, code in (
        (lambda: anon.rpc("nope", {}).execute(), "PGRST202"),
        (lambda: anon.table("users").select("*").execute(), "PGRST205"),
        (lambda: anon.table("tickets").select("nope").execute(), "42703"),
        (lambda: anon.table("tickets").select("code").eq("event_id", "١").execute(), "22P02"),
        (lambda: anon.rpc("event_revenue", {"p_event_id": "١"}).execute(), "22P02"),
    ):
        with pytest.raises(APIError) as err:
            call()
        assert err.value.code == code


def test_async_client(standin: Any) -> None:
    # https://supabase.com/docs/reference/python/initializing (acreate_client)
    async def go() -> tuple[Any, Any]:
        client = await acreate_client(standin.url, standin.publishable_key)
        one = await client.table("events").select("name").eq("id", 2).single().execute()
        rows = (
            await client.table("tickets").select("code", count="exact").eq("event_id", 2).execute()
        )
        return one.data, rows.count

    assert asyncio.run(go()) == ({"name": "Semi"}, 50)


def test_realtime_on_postgres_changes(standin: Any) -> None:
    # https://supabase.com/docs/reference/python/subscribe (on_postgres_changes with a filter):
    # a scan's UPDATE of the subscribed ticket arrives; another ticket's does not
    code, other = ticket_code(2, 44), ticket_code(2, 45)

    async def go() -> list[Any]:
        client = await acreate_client(standin.url, standin.publishable_key)
        got: list[Any] = []
        arrived = asyncio.Event()
        subscribed = asyncio.Event()

        def on_change(payload: Any) -> None:
            got.append(payload)
            arrived.set()

        def on_state(state: Any, err: Any) -> None:
            if str(state).endswith("SUBSCRIBED"):
                subscribed.set()

        channel = client.channel("gate-a")
        channel.on_postgres_changes(
            "UPDATE", schema="public", table="tickets", filter=f"code=eq.{code}", callback=on_change
        )
        await channel.subscribe(on_state)
        await asyncio.wait_for(subscribed.wait(), 30)
        for c in (other, code):
            await client.rpc("scan_ticket_atomic", {"p_ticket_code": c, "p_event_id": 2}).execute()
        await asyncio.wait_for(arrived.wait(), 30)
        await client.remove_all_channels()
        return got

    got = asyncio.run(go())
    assert len(got) == 1
    data = got[0]["data"]
    assert data["type"] == "UPDATE" and data["record"]["code"] == code
