"""The recorder's inputs and outputs: an existing trace is never clobbered, a bad webhook
signature is recorded as bad and replayed as bad, no secret in any form reaches the trace, and
URLs are echoed without credentials."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
import stripe
from hypothesis import HealthCheck, given, settings

from judge.resultlog import iter_rows
from replay.engine import ReplayConfig, run_replay
from replay.record import Recorder, recorder_in_thread
from staging.server import standin_in_thread
from tests.traces.test_import_secrets import assert_absent, secret_texts
from traces import event as ev
from traces.header import Inventory, VenueEvent
from traces.importers.request import REQUEST
from traces.io import open_reader

INVENTORY = Inventory(events=(VenueEvent(1, "Final", 100, 10, 2500),))
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def standin():
    with standin_in_thread(inventory=INVENTORY, deliver_webhooks=False) as s:
        yield s


def test_an_existing_output_is_refused_unless_append_or_force(standin, tmp_path: Path) -> None:
    out = tmp_path / "day.grt"
    with recorder_in_thread(standin.url, out) as rec:
        requests.get(f"{rec.url}/rest/v1/events?select=id", headers={"apikey": standin.anon_key})
    before = out.read_bytes()
    with pytest.raises(ValueError, match="exists; --append resumes it, --force replaces it"):
        Recorder(standin.url, out)
    assert out.read_bytes() == before
    with pytest.raises(ValueError, match="choose one"):
        Recorder(standin.url, out, append=True, force=True)
    with recorder_in_thread(standin.url, out, append=True) as rec:  # resumes: 1 + 1 events
        requests.get(f"{rec.url}/rest/v1/events?select=id", headers={"apikey": standin.anon_key})
    with open_reader(out) as r:
        assert len(list(r)) == 2
    with recorder_in_thread(standin.url, out, force=True):
        pass
    with open_reader(out) as r:
        assert list(r) == []


def test_cli_refuses_an_existing_output_and_echoes_no_credentials(tmp_path: Path) -> None:
    out = tmp_path / "day.grt"
    out.write_bytes(b"precious")
    run = subprocess.run(
        [sys.executable, "-m", "gaterush", "record", "--listen", "127.0.0.1:0",
         "--upstream", "http://user:hunter2@127.0.0.1:9/?apikey=sekrit", "-o", str(out)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 104 and "exists; --append resumes it" in run.stderr
    assert out.read_bytes() == b"precious"
    bad = subprocess.run(
        [sys.executable, "-m", "gaterush", "record", "--upstream",
         "ftp://user:hunter2@host/?apikey=sekrit", "-o", str(tmp_path / "new.grt")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert bad.returncode == 104 and "hunter2" not in bad.stderr and "sekrit" not in bad.stderr


def _event_body(i: int) -> str:
    return json.dumps({
        "id": f"evt_sig_{i}", "object": "event", "type": "payment_intent.succeeded",
        "created": 1_700_000_000, "livemode": False,
        "data": {"object": {"id": f"pi_sig_{i}", "object": "payment_intent", "amount": 2500,
                            "currency": "usd", "status": "succeeded",
                            "metadata": {"event_id": "1", "quantity": "1"}}},
    })  # fmt: skip


@pytest.mark.timeout(120)
def test_bad_and_stale_signatures_are_recorded_and_replayed_as_such(tmp_path: Path) -> None:
    out, res = tmp_path / "hooks.grt", tmp_path / "res.grr"
    with standin_in_thread(inventory=INVENTORY) as served:
        url = None
        with recorder_in_thread(served.url, out) as rec:
            url = f"{rec.url}/functions/v1/stripe-webhook"
            cases = [
                (_event_body(1), served.webhook_secret, int(time.time())),  # valid
                (_event_body(2), "whsec_not_the_endpoints", int(time.time())),  # bad
                (_event_body(3), served.webhook_secret, int(time.time()) - 3600),  # stale
            ]
            for body, secret, ts in cases:
                sig = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=ts)
                requests.post(url, data=body, timeout=30,
                              headers={"Stripe-Signature": sig, "Content-Type": "application/json"})  # fmt: skip
    with open_reader(out) as r:
        events = list(r)
    assert [(e.data()[REQUEST]["signature"], e.expect) for e in events] == [
        ("valid", ev.PROCESSED),
        ("bad", "http_400"),
        ("stale", "http_400"),
    ]
    with standin_in_thread(inventory=INVENTORY) as fresh:
        cfg = ReplayConfig(trace=str(out), out=str(res), target=fresh.url, stripe=fresh.url,
                           speed=10.0, progress=False)  # fmt: skip
        run_replay(cfg, env=fresh.env(), progress=None)
    _, rows = iter_rows(res)
    assert [
        (r.status, r.outcome) for r in sorted(rows, key=lambda r: r.seq) if r.metric is None
    ] == [
        (200, ev.PROCESSED),
        (400, "http_400"),
        (400, "http_400"),
    ]


@pytest.mark.timeout(300)
def test_no_secret_in_any_form_reaches_the_recording(standin, tmp_path: Path) -> None:
    out = tmp_path / "secrets.grt"
    seen: list[str] = []
    with recorder_in_thread(standin.url, out) as rec:

        @settings(max_examples=40, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
        @given(secret_texts())
        def send(case: tuple[str, str]) -> None:
            text, secret = case
            seen.append(secret)
            q = quote(text, safe="")
            auth = {"apikey": standin.anon_key, "Authorization": f"Bearer {secret}"}
            requests.get(f"{rec.url}/rest/v1/events?select=id&note={q}&apikey={q}",
                         headers={**auth, "Prefer": text.strip(), "Idempotency-Key": text.strip()}, timeout=30)  # fmt: skip
            requests.post(f"{rec.url}/rest/v1/rpc/scan_ticket_atomic", timeout=30, headers=auth,
                          json={"p_ticket_code": text, "p_event_id": 1, "p_note": [text]})  # fmt: skip
            requests.post(f"{rec.url}/functions/v1/notes", data=text.encode(), timeout=30,
                          headers={**auth, "Content-Type": "text/plain"})  # fmt: skip
            requests.post(f"{rec.url}/v1/customers", data={"description": text}, timeout=30,
                          headers={"Authorization": f"Bearer {standin.stripe_key}"})  # fmt: skip

        send()
    raw = out.read_bytes()
    assert len(seen) >= 10
    for secret in [*seen, standin.anon_key, standin.stripe_key]:
        assert_absent(secret, raw)
