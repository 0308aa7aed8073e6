"""Fixtures for the stand-in's tests: a stand-in on 127.0.0.1 (free port) in its own thread."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from staging.server import ThreadedStandIn, standin_in_thread
from traces.header import Inventory, VenueEvent

INVENTORY = Inventory(
    events=(VenueEvent(1, "Final", 5000, 400, 5000), VenueEvent(2, "Semi", 1000, 50, 2500)),
    allow_reentry=True,
)


@pytest.fixture(scope="module")
def standin() -> Iterator[ThreadedStandIn]:
    """One stand-in per test module (each test uses its own tickets, payments or run ids)."""
    with standin_in_thread(inventory=INVENTORY, deliver_webhooks=True) as s:
        yield s


def headers(s: Any, **extra: str) -> dict[str, str]:
    """Supabase headers with the legacy anon key as apikey and Bearer."""
    return {"apikey": s.anon_key, "Authorization": f"Bearer {s.anon_key}", **extra}


def admin_headers(s: Any) -> dict[str, str]:
    """Headers with the service_role key."""
    return {"apikey": s.service_key, "Authorization": f"Bearer {s.service_key}"}


async def request(
    session: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, Any, dict[str, str]]:
    """(status, JSON body or text, headers) of one request."""
    async with session.request(method, url, **kw) as resp:
        raw = await resp.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        return resp.status, body, dict(resp.headers)


def call(method: str, url: str, **kw: Any) -> tuple[int, Any, dict[str, str]]:
    """One request from synchronous test code."""

    async def go() -> tuple[int, Any, dict[str, str]]:
        async with aiohttp.ClientSession() as session:
            return await request(session, method, url, **kw)

    return asyncio.run(go())


def scan(s: Any, code: str, event_id: int = 1, **extra: Any) -> dict[str, Any]:
    """One scan through the RPC; the JSON answer."""
    status, body, _ = call(
        "POST",
        f"{s.url}/rest/v1/rpc/scan_ticket_atomic",
        headers=headers(s),
        json={"p_ticket_code": code, "p_event_id": event_id, **extra},
    )
    assert status == 200, body
    return body
