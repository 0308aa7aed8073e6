"""The recording proxy against the stand-in: what it writes, what it never writes, and a kill."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import requests
import stripe

from replay.record import ACTOR_HEADER, Recorder, recorder_in_thread
from staging.server import standin_in_thread
from traces import event as ev
from traces.event import TraceError
from traces.header import Inventory, VenueEvent
from traces.importers.request import REQUEST
from traces.io import open_reader

INVENTORY = Inventory(events=(VenueEvent(1, "Final", 100, 10, 2500),))
ROOT = Path(__file__).resolve().parents[2]


def content(e) -> dict:
    """An event's business payload, without the request as sent."""
    data = e.data()
    data.pop(REQUEST, None)
    return data


@pytest.fixture(scope="module")
def standin():
    with standin_in_thread(inventory=INVENTORY) as s:
        yield s


def supa(s) -> dict[str, str]:
    return {"apikey": s.anon_key, "Authorization": f"Bearer {s.anon_key}"}


def stripe_event(i: int, pi: str) -> dict:
    return {
        "id": f"evt_rec_{i}",
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": 1_700_000_000,
        "livemode": False,
        "data": {
            "object": {
                "id": pi,
                "object": "payment_intent",
                "amount": 5000,
                "currency": "usd",
                "status": "succeeded",
                "metadata": {
                    "event_id": "1",
                    "quantity": "2",
                    "buyer": "a@example.com",
                    "order_ref": f"o{i}",
                },
            }
        },
    }


@pytest.mark.timeout(60)
def test_record_writes_each_target_request_and_never_a_secret(standin, tmp_path: Path) -> None:
    out = tmp_path / "rec.grt"
    with recorder_in_thread(standin.url, out) as rec, requests.Session() as http:
        url = rec.url
        scan = {"p_ticket_code": "T1-0000003", "p_event_id": 1, "p_gate": "A", "p_lane": "1"}
        r1 = http.post(
            f"{url}/rest/v1/rpc/scan_ticket_atomic",
            json=scan,
            headers={**supa(standin), ACTOR_HEADER: "attendee:1"},
        )
        r2 = http.post(
            f"{url}/rest/v1/rpc/scan_ticket_atomic",
            json=scan,
            headers={**supa(standin), ACTOR_HEADER: "attendee:2"},
        )
        assert r1.json()["outcome"] == "valid" and r2.json()["outcome"] == "already_scanned"
        r3 = http.get(
            f"{url}/rest/v1/events",
            params={"select": "id,name", "id": "eq.1"},
            headers=supa(standin),
        )
        assert r3.status_code == 200 and r3.json()[0]["name"] == "Final"
        assert http.get(f"{url}/admin/v1/health").status_code in (
            200,
            401,
        )  # forwarded, not a target
        skey = {"Authorization": f"Bearer {standin.stripe_key}"}
        pi = http.post(
            f"{url}/v1/payment_intents",
            data={
                "amount": "5000",
                "currency": "usd",
                "metadata[event_id]": "1",
                "metadata[quantity]": "2",
                "metadata[buyer]": "a@example.com",
                "metadata[order_ref]": "o9",
            },
            headers=skey,
        ).json()
        confirmed = http.post(
            f"{url}/v1/payment_intents/{pi['id']}/confirm",
            data={"payment_method": "pm_card_visa"},
            headers=skey,
        )
        assert confirmed.status_code == 200
        body = json.dumps(stripe_event(1, "pi_rec_1"))
        sig = stripe.WebhookSignature.generate_signature_header(body, standin.webhook_secret)
        for _ in range(2):  # Stripe delivers at least once: the second copy is a duplicate
            hook = http.post(
                f"{url}/functions/v1/stripe-webhook",
                data=body,
                headers={"Stripe-Signature": sig, "Content-Type": "application/json"},
            )
            assert hook.status_code == 200
        assert rec.stats.not_targets == 1
    with open_reader(out) as r:
        header, events = r.header, list(r)
    assert [(e.kind, e.target, e.expect) for e in events] == [
        (ev.SCAN, ev.TARGET_SCAN, ev.VALID),
        (ev.SCAN, ev.TARGET_SCAN, ev.ALREADY_SCANNED),
        (ev.VIEW, ev.TARGET_REST_EVENTS, ev.OK),
        (ev.CHECKOUT, ev.TARGET_PI_CREATE, ev.OK),
        (ev.CONFIRM, ev.TARGET_PI_CONFIRM, ev.SUCCEEDED),
        (ev.WEBHOOK, ev.TARGET_WEBHOOK, ev.PROCESSED),
        (ev.WEBHOOK, ev.TARGET_WEBHOOK, ev.DUPLICATE),
    ]
    assert [e.seq for e in events] == list(range(7))
    assert all(b.t_us >= a.t_us for a, b in zip(events, events[1:], strict=False))
    assert [e.actor for e in events[:2]] == ["attendee:1", "attendee:2"]
    assert content(events[0]) == {
        "ticket_code": "T1-0000003",
        "event_id": 1,
        "gate": "A",
        "lane": "1",
    }
    assert content(events[2]) == {"query": {"select": "id,name", "id": "eq.1"}}
    assert events[2].data()[REQUEST]["query"] == [["select", "id,name"], ["id", "eq.1"]]
    assert content(events[3]) == {
        "amount": 5000,
        "currency": "usd",
        "quantity": 2,
        "event_id": 1,
        "buyer": "a@example.com",
        "order_ref": "o9",
    }
    assert events[4].after == events[3].seq  # the confirm waits for its checkout
    assert events[3].data()[REQUEST]["body"]["metadata"]["order_ref"] == "o9"
    assert content(events[5]) == json.loads(body)  # stored unsigned: the event object itself
    assert events[5].data()[REQUEST]["signature"] == "valid"
    assert header.source == "record" and header.expected["webhooks_duplicate"] == 1
    raw = out.read_bytes()
    for secret in (
        standin.anon_key,
        standin.stripe_key,
        standin.webhook_secret,
        sig.split("v1=")[1],
    ):
        assert secret.encode() not in raw


@pytest.mark.timeout(60)
def test_record_realtime_subscription(standin, tmp_path: Path) -> None:
    out = tmp_path / "rt.grt"

    async def viewer(url: str) -> dict:
        async with (
            aiohttp.ClientSession() as s,
            s.ws_connect(
                f"{url}/realtime/v1/websocket?apikey={standin.anon_key}&vsn=1.0.0",
                headers={ACTOR_HEADER: "viewer:7"},
            ) as ws,
        ):
            join = {
                "topic": "realtime:dash",
                "event": "phx_join",
                "ref": "1",
                "join_ref": "1",
                "payload": {
                    "config": {
                        "postgres_changes": [
                            {
                                "event": "*",
                                "schema": "public",
                                "table": "tickets",
                                "filter": "event_id=eq.1",
                            }
                        ]
                    },
                    "access_token": standin.anon_key,
                },
            }
            await ws.send_str(json.dumps(join))
            reply = await asyncio.wait_for(ws.receive_json(), 10)
            await ws.send_str(
                json.dumps(
                    {"topic": "realtime:dash", "event": "phx_leave", "ref": "2", "payload": {}}
                )
            )
            return reply

    with recorder_in_thread(standin.url, out) as rec:
        reply = asyncio.run(viewer(rec.url))
        assert reply["event"] == "phx_reply" and reply["payload"]["status"] == "ok"
        deadline = time.monotonic() + 5
        while rec.stats.written < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    with open_reader(out) as r:
        events = list(r)
    assert [(e.kind, e.actor, e.target, e.data()) for e in events] == [
        (
            ev.SUBSCRIBE,
            "viewer:7",
            ev.TARGET_REALTIME_TICKETS,
            {"table": "tickets", "filter": "event_id=eq.1"},
        ),
        (
            ev.UNSUBSCRIBE,
            "viewer:7",
            ev.TARGET_REALTIME_TICKETS,
            {"table": "tickets", "filter": "event_id=eq.1"},
        ),
    ]
    assert standin.anon_key.encode() not in out.read_bytes()


def test_record_refuses_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="upstream"):
        Recorder("ftp://x", tmp_path / "a.grt")
    with pytest.raises(ValueError, match=".grt"):
        Recorder("http://127.0.0.1:1", tmp_path / "a.parquet")


@pytest.mark.timeout(60)
def test_record_upstream_down_answers_502_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "down.grt"
    with recorder_in_thread("http://127.0.0.1:9", out, timeout=2) as rec:
        r = requests.post(f"{rec.url}/rest/v1/rpc/scan_ticket_atomic", json={}, timeout=10)
        assert r.status_code == 502 and "upstream" in r.json()["error"]
    with open_reader(out) as r:
        assert list(r) == []


@pytest.mark.timeout(90)
def test_record_killed_keeps_every_answered_request(standin, tmp_path: Path) -> None:
    """`gaterush record` killed with SIGKILL: every request answered before the kill is in the trace."""
    out = tmp_path / "killed.grt"
    code = "import click, sys; from replay.cli_record import record_cmd; g = click.Group('g'); g.add_command(record_cmd); g(sys.argv[1:])"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "record",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            standin.url,
            "-o",
            str(out),
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        line = proc.stderr.readline()
        assert line.startswith("recording "), line
        url = line.split()[1]
        with requests.Session() as http:
            for i in range(25):
                scan = {"p_ticket_code": f"T1-{i % 10:07d}", "p_event_id": 1}
                assert (
                    http.post(
                        f"{url}/rest/v1/rpc/scan_ticket_atomic",
                        json=scan,
                        headers=supa(standin),
                        timeout=10,
                    ).status_code
                    == 200
                )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    got = []
    try:
        with open_reader(out) as r:
            got.extend(r)
    except TraceError as e:  # the unfinished file says so, after every complete event
        assert str(out) in str(e)
    assert len(got) == 25
    assert [e.data()["ticket_code"] for e in got] == [f"T1-{i % 10:07d}" for i in range(25)]


@pytest.mark.timeout(60)
def test_record_command_stops_cleanly_on_sigint(standin, tmp_path: Path) -> None:
    out = tmp_path / "int.grt"
    code = "import click, sys; from replay.cli_record import record_cmd; g = click.Group('g'); g.add_command(record_cmd); g(sys.argv[1:])"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "record",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            standin.url,
            "-o",
            str(out),
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    url = proc.stderr.readline().split()[1]
    requests.get(
        f"{url}/rest/v1/events", params={"select": "id"}, headers=supa(standin), timeout=10
    )
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "wrote" in err and "1 events" in err
    with open_reader(out) as r:
        assert r.complete and r.header.counts == {"view": 1}
