"""`gaterush staging serve` as a process: clean stop on SIGTERM/Ctrl-C, restart keeps state; bad flags exit 104."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import stripe
from click.testing import CliRunner

import gaterush
from tests.staging.conftest import call
from traces.header import Inventory, TraceHeader, VenueEvent
from traces.io import open_writer

ROOT = Path(__file__).resolve().parents[2]


def _start(args: list[str]) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gaterush", "staging", "serve", "--port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    env: dict[str, str] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.strip()
        if line.startswith("export "):
            k, _, v = line[7:].partition("=")
            env[k] = v
        if line.startswith("Ctrl-C"):
            return proc, env
    proc.kill()
    raise AssertionError(f"serve did not start: {proc.stderr.read() if proc.stderr else ''}")


def _stop(proc: subprocess.Popen[str], sig: int) -> str:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    return out


def _h(env: dict[str, str]) -> dict[str, str]:
    return {
        "apikey": env["SUPABASE_ANON_KEY"],
        "Authorization": f"Bearer {env['SUPABASE_ANON_KEY']}",
    }


def _scan(env: dict[str, str], code: str) -> str:
    status, body, _ = call(
        "POST",
        f"{env['SUPABASE_URL']}/rest/v1/rpc/scan_ticket_atomic",
        headers=_h(env),
        json={"p_ticket_code": code, "p_event_id": 4},
    )
    assert status == 200, body
    return body["outcome"]


def _state(env: dict[str, str]) -> dict[str, Any]:
    key = env["SUPABASE_SERVICE_ROLE_KEY"]
    status, body, _ = call(
        "GET",
        f"{env['SUPABASE_URL']}/admin/v1/state",
        headers={"apikey": key, "Authorization": f"Bearer {key}"},
    )
    assert status == 200
    return body


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_restart_keeps_scans_and_orders(tmp_path: Path) -> None:
    trace = tmp_path / "seed.grt"
    inv = Inventory(events=(VenueEvent(4, "Gig", 100, 20, 3000),), allow_reentry=False)
    with open_writer(trace, TraceHeader(inventory=inv)):
        pass
    db = tmp_path / "standin.sqlite"
    proc, env = _start(["--db", str(db), "--seed-data", str(trace), "--no-deliver-webhooks"])
    try:
        assert _scan(env, "T4-0000003") == "valid"
        event = {
            "id": "evt_cli_1",
            "object": "event",
            "type": "payment_intent.succeeded",
            "data": {
                "object": {
                    "id": "pi_cli_1",
                    "object": "payment_intent",
                    "amount": 6000,
                    "currency": "usd",
                    "metadata": {"event_id": "4", "quantity": "2"},
                }
            },
        }
        payload = json.dumps(event)
        sig = stripe.WebhookSignature.generate_signature_header(
            payload, env["STRIPE_WEBHOOK_SECRET"]
        )
        status, body, _ = call(
            "POST",
            f"{env['SUPABASE_URL']}/functions/v1/stripe-webhook",
            data=payload.encode(),
            headers={"Stripe-Signature": sig},
        )
        assert status == 200 and body == {"received": True, "outcome": "processed"}
        before = _state(env)
    finally:
        out = _stop(proc, signal.SIGTERM)
    assert "stopped cleanly" in out
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 1
    proc, env2 = _start(["--db", str(db)])
    try:
        assert (
            env2["SUPABASE_ANON_KEY"] == env["SUPABASE_ANON_KEY"]
        )  # the keys live with the database
        assert _scan(env2, "T4-0000003") == "already_scanned"
        assert _scan(env2, "O" + "pi_cli_1-1") == "valid"
        after = _state(env2)
        assert after["orders"] == before["orders"] == 1 and after["tickets_sold"] == 2
        assert after["admitted"] == before["admitted"] + 1
    finally:
        _stop(proc, signal.SIGINT)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--latency", "rpc:scan_ticket_atomic=soon"], "rpc:scan_ticket_atomic.latency"),
        (["--latency", "nothing"], "ENDPOINT=VALUE"),
        (["--workers", "rpc:scan_ticket_atomic=-2"], "workers"),
        (["--error-rate", "fn:stripe-webhook=1.5"], "error_rate"),
        (["--stall", "rpc:*=0.1"], "RATE@DURATION"),
        (["--delivery", "speed=3"], "delivery.speed"),
        (["--knobs", "/nonexistent/knobs.toml"], "cannot read"),
        (["--seed-data", "missing.parquet"], "no such file"),
        (["--seed-data", "no-such-scenario"], "no-such-scenario"),
    ],
)
def test_bad_flags_exit_104_with_a_clear_message(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(gaterush.main, ["staging", "serve", "--port", "0", *args])
    assert result.exit_code == 104, result.output
    assert needle in result.output
    assert "Traceback" not in result.output


def test_bad_knobs_file_names_the_key(tmp_path: Path) -> None:
    f = tmp_path / "k.toml"
    f.write_text('[endpoints."rpc:scan_ticket_atomic"]\nlatency = "lognormal:5ms,-1"\n')
    result = CliRunner().invoke(gaterush.main, ["staging", "serve", "--knobs", str(f)])
    assert result.exit_code == 104 and "endpoints.rpc:scan_ticket_atomic.latency" in result.output
    f.write_text("[endpoints\n")
    result = CliRunner().invoke(gaterush.main, ["staging", "serve", "--knobs", str(f)])
    assert result.exit_code == 104 and "not valid TOML" in result.output
