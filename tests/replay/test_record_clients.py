"""Round trip with the official clients as the traffic: supabase-py and stripe-python drive the
stand-in through `gaterush record`; the recording, replayed at a fresh stand-in, gets every
recorded outcome back and leaves the same end state."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import stripe
from postgrest.exceptions import APIError
from supabase import create_client

from judge.resultlog import iter_rows
from replay.engine import ReplayConfig, run_replay
from replay.record import recorder_in_thread
from replay.verify import standin_end_state
from staging.server import standin_in_thread
from traces import event as ev
from traces.header import Inventory, VenueEvent
from traces.importers.request import REQUEST
from traces.io import open_reader

INVENTORY = Inventory(events=(VenueEvent(1, "Final", 100, 10, 2500),))
ROOT = Path(__file__).resolve().parents[2]
STATE_KEYS = ("orders", "tickets_sold", "revenue_cents", "admitted", "refunds", "refunded_cents")


def drive(url: str, anon_key: str, stripe_key: str) -> list[str]:
    """Official-client traffic through `url`; what it did, for the test's messages."""
    done = []
    sb = create_client(url, anon_key)
    for code in ("T1-0000001", "T1-0000001", "NOPE-1", "T1-0000002"):
        sb.rpc(
            "scan_ticket_atomic", {"p_ticket_code": code, "p_event_id": 1, "p_gate": "A"}
        ).execute()
    done.append("rpc scans")
    tickets = sb.table("tickets").select("code", count="exact").eq("event_id", 1).execute()
    assert tickets.count == 10
    sb.table("events").select("id,name").gt("id", 0).order("id").limit(5).execute()
    done.append("select with filters, count=exact")
    one = sb.table("events").select("id,name").eq("id", 1).single().execute()
    assert one.data["id"] == 1
    done.append("single()")
    # a REST write with the anon key: the stand-in's RLS refuses it, as Supabase's defaults do; it
    # is recorded with that answer and replayed as the same write getting the same answer.
    # PENDING: a service_role write that succeeds needs replay to send the service key (see report)
    with pytest.raises(APIError):
        sb.table("events").insert({"id": 9, "name": "x", "capacity": 1, "presold": 0,
                                   "price_cents": 1}).execute()  # fmt: skip
    done.append("REST write")
    c = stripe.StripeClient(stripe_key, base_addresses={"api": url}, max_network_retries=0)
    meta = {"event_id": "1", "quantity": "2", "buyer": "b1"}
    one_step = c.v1.payment_intents.create(
        params={
            "amount": 5000,
            "currency": "usd",
            "confirm": True,
            "payment_method": "pm_card_visa",
            "metadata": meta,
        }
    )
    assert one_step.status == "succeeded"
    two = c.v1.payment_intents.create(
        params={"amount": 2500, "currency": "usd", "metadata": {**meta, "quantity": "1"}}
    )
    c.v1.payment_intents.confirm(two.id, params={"payment_method": "pm_card_visa"})
    with pytest.raises(stripe.CardError):
        c.v1.payment_intents.create(
            params={
                "amount": 2500,
                "currency": "usd",
                "confirm": True,
                "payment_method": "pm_card_chargeDeclined",
                "metadata": meta,
            }
        )
    assert c.v1.payment_intents.retrieve(two.id).status == "succeeded"
    c.v1.refunds.create(params={"payment_intent": two.id})
    done.append("stripe one-step, two-step, decline, retrieve, refund")
    return done


def settled(url: str, key: str, want: dict[str, Any] | None = None) -> dict[str, Any]:
    """The stand-in's end state once its webhooks have been delivered (they trail the calls):
    when it equals `want` on STATE_KEYS, or has not changed for a second (at most 30 s)."""
    last: dict[str, Any] = {}
    same = 0
    for _ in range(300):
        state = standin_end_state(url, run_id=None, api_key=key) or {}
        if want is not None and all(state.get(k) == want.get(k) for k in STATE_KEYS):
            return state
        same = same + 1 if state == last else 0
        if same >= 10 and state.get("orders", 0) >= 2 and state.get("refunds", 0) >= 1:
            return state
        last = state
        time.sleep(0.1)
    return last


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_official_clients_recorded_then_replayed_at_a_fresh_standin(tmp_path: Path) -> None:
    rec_path, res_path = tmp_path / "clients.grt", tmp_path / "res.grr"
    with standin_in_thread(inventory=INVENTORY) as served:
        with recorder_in_thread(served.url, rec_path) as rec:
            did = drive(rec.url, served.anon_key, served.stripe_key)
        want = settled(served.url, served.service_key)
    with open_reader(rec_path) as r:
        header, events = r.header, list(r)
    raw = rec_path.read_bytes()
    for secret in (served.anon_key, served.stripe_key, served.webhook_secret):
        assert secret.encode() not in raw
    targets = {e.target for e in events}
    assert {ev.TARGET_SCAN, ev.TARGET_PI_CREATE, ev.TARGET_PI_CONFIRM} <= targets, did
    assert {"stripe:payment_intents.retrieve", "stripe:refunds.create"} <= targets
    one_step = next(e for e in events if e.target == ev.TARGET_PI_CREATE)
    sent = one_step.data()[REQUEST]["body"]
    assert sent["confirm"] == "true" and sent["payment_method"] == "pm_card_visa"
    assert [e.expect for e in events if e.target == ev.TARGET_PI_CREATE] == [
        ev.OK,
        ev.OK,
        ev.DECLINED,
    ]
    single = [e for e in events if e.target == "rest:events"][-2].data()[REQUEST]
    assert ["accept", "application/vnd.pgrst.object+json"] in single["headers"]
    write = next(e for e in events if e.kind == "write").data()[REQUEST]
    assert write["method"] == "POST" and write["body"]["name"] == "x"
    counted = next(e for e in events if e.target == "rest:tickets")
    assert ["prefer", "count=exact"] in counted.data()[REQUEST]["headers"]
    # the inventory the traffic touched: event 1 with at least the tickets it scanned
    assert [(v.id, v.presold >= 2) for v in header.inventory.events] == [(1, True)]

    # the recording replayed at a fresh stand-in seeded from its header
    with standin_in_thread(inventory=header.inventory) as fresh:
        env = fresh.env()
        cfg = ReplayConfig(
            trace=str(rec_path),
            out=str(res_path),
            target=fresh.url,
            stripe=fresh.url,
            speed=5.0,
            progress=False,
        )
        result = run_replay(cfg, env=env, progress=None)
        assert result is not None
        got = settled(fresh.url, fresh.service_key, want)
    assert every_check_passes(res_path)
    assert {k: got.get(k) for k in STATE_KEYS} == {k: want.get(k) for k in STATE_KEYS}
    assert want["orders"] == 2 and want["refunds"] == 1 and want["admitted"] == 2

    # as a user runs it: `gaterush replay recording.grt --target local` seeds the stand-in itself
    # (the fidelity limit is raised: this test judges outcomes, not a loaded machine's timing)
    local = tmp_path / "local.grr"
    run = subprocess.run(
        [sys.executable, "-m", "gaterush", "replay", str(rec_path), "--target", "local",
         "-o", str(local), "--speed", "5", "--max-schedule-lag", "60000"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert every_check_passes(local)


def every_check_passes(results: Path) -> bool:
    """Every row with an expectation got it (and there are such rows)."""
    _, rows = iter_rows(results)
    checked = [(r.target, r.expect, r.outcome) for r in rows if r.expect is not None]
    missed = [c for c in checked if c[1] != c[2]]
    assert checked and not missed, missed
    return True
