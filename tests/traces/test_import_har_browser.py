"""A HAR that a real browser wrote: headless Chromium (driven by Playwright, which writes the HAR)
loads a page from the stand-in and calls its RPC; the importer maps it without keeping secrets."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from traces import event as ev
from traces.header import Inventory, VenueEvent
from traces.importers import import_file
from traces.importers.request import REQUEST

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed (pip install playwright)"
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="headless Chromium (/usr/bin/chromium) is not installed"
    ),
]

BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


async def capture_har(url: str, anon_key: str, har: Path, user_data: Path) -> None:
    """Open the stand-in's events table in Chromium, then scan two tickets from that page."""
    async with playwright.async_playwright() as p:
        ctx = await p.chromium.launch_persistent_context(
            str(user_data),
            executable_path=CHROMIUM,
            args=BROWSER_ARGS,
            record_har_path=str(har),
            record_har_content="embed",
        )
        try:
            page = await ctx.new_page()
            await page.set_extra_http_headers({"apikey": anon_key})  # a secret header the HAR holds
            resp = await page.goto(f"{url}/rest/v1/events?select=id,name", timeout=20_000)
            assert resp is not None and resp.status == 200
            script = """async ([key, codes]) => {
                const out = [];
                for (const code of codes) {
                    const r = await fetch('/rest/v1/rpc/scan_ticket_atomic', {method: 'POST',
                        headers: {'apikey': key, 'Authorization': 'Bearer ' + key, 'Content-Type': 'application/json'},
                        body: JSON.stringify({p_ticket_code: code, p_event_id: 1, p_gate: 'A', p_lane: '1'})});
                    out.push((await r.json()).outcome);
                }
                return out;
            }"""
            outcomes = await page.evaluate(
                script, [anon_key, ["T1-0000001", "T1-0000001", "NOPE-1"]]
            )
            assert outcomes == ["valid", "already_scanned", "invalid"]
        finally:
            await ctx.close()  # writes the HAR


@pytest.mark.timeout(120)
def test_chromium_har_of_the_stand_in_imports(tmp_path: Path) -> None:
    from staging.server import standin_in_thread

    inventory = Inventory(events=(VenueEvent(1, "Final", 100, 10, 2500),))
    har = tmp_path / "session.har"
    with standin_in_thread(inventory=inventory) as standin:
        asyncio.run(
            asyncio.wait_for(
                capture_har(standin.url, standin.anon_key, har, tmp_path / "profile"), 90
            )
        )
        anon_key = standin.anon_key
    doc = json.loads(har.read_text())
    assert (
        doc["log"]["creator"]["name"] == "Playwright"
        and doc["log"]["browser"]["name"] == "chromium"
    )

    header, events, report = import_file("har", har)
    assert [(e.kind, e.target, e.expect) for e in events] == [
        (ev.VIEW, ev.TARGET_REST_EVENTS, ev.OK),
        (ev.SCAN, ev.TARGET_SCAN, ev.VALID),
        (ev.SCAN, ev.TARGET_SCAN, ev.ALREADY_SCANNED),
        (ev.SCAN, ev.TARGET_SCAN, ev.INVALID),
    ]
    first, scan = events[0].data(), events[1].data()
    sent = first.pop(REQUEST)
    assert first == {"query": {"select": "id,name"}}
    assert sent["method"] == "GET" and sent["path"] == "/rest/v1/events"
    assert anon_key in har.read_text()  # the browser's HAR holds the key in its headers...
    assert scan.pop(REQUEST)["body"]["p_ticket_code"] == "T1-0000001"  # the body as sent
    assert scan == {
        "ticket_code": "T1-0000001",
        "event_id": 1,
        "gate": "A",
        "lane": "1",
    }
    assert {e.actor for e in events} == {"browser:session"}
    assert [e.seq for e in events] == [0, 1, 2, 3] and events[0].t_us == 0
    assert all(b.t_us >= a.t_us for a, b in zip(events, events[1:], strict=False))
    assert header.source == "import:har" and header.origin_unix_us > 1_600_000_000_000_000
    stored = b"".join(e.payload for e in events) + "".join(e.actor for e in events).encode()
    assert anon_key.encode() not in stored and b"Bearer" not in stored  # ...the trace does not
    assert report.total_skipped == 0 or all(
        r == "not a gaterush target" or r.startswith("host ") for r in report.skipped
    )

    # the import replays at a fresh stand-in seeded from the inventory it inferred
    from judge.resultlog import iter_rows
    from replay.engine import ReplayConfig, run_replay
    from traces.io import open_writer

    assert [(v.id, v.presold) for v in header.inventory.events] == [(1, 2)]
    trace, res = tmp_path / "session.grt", tmp_path / "res.grr"
    with open_writer(trace, header) as w:
        w.write_many(events)
    with standin_in_thread(inventory=header.inventory) as fresh:
        cfg = ReplayConfig(trace=str(trace), out=str(res), target=fresh.url, stripe=fresh.url,
                           speed=20.0, progress=False)  # fmt: skip
        run_replay(cfg, env=fresh.env(), progress=None)
    _, rows = iter_rows(res)
    got = [(r.target, r.expect, r.outcome) for r in rows if r.metric is None]
    assert len(got) == 4 and all(e == o for _, e, o in got), got
