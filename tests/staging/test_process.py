"""The stand-in in a child process: same face as the threaded one, stops with its parent's block."""

from __future__ import annotations

import stripe

from staging.knobs import knobs_from_dict
from staging.process import standin_in_process
from tests.staging.conftest import INVENTORY, call, headers


def test_child_process_stand_in_serves_reports_and_stops() -> None:
    with standin_in_process(
        inventory=INVENTORY, knobs=knobs_from_dict({"delivery": {"delay": "1ms"}})
    ) as s:
        status, body, _ = call(
            "POST",
            f"{s.url}/rest/v1/rpc/scan_ticket_atomic",
            headers=headers(s),
            json={"p_ticket_code": "T1-0000001", "p_event_id": 1},
        )
        assert status == 200 and body["outcome"] == "valid"
        client = stripe.StripeClient(
            s.stripe_key, base_addresses={"api": s.url}, max_network_retries=0
        )
        client.v1.payment_intents.create(
            params={
                "amount": 5000,
                "currency": "usd",
                "confirm": True,
                "payment_method": "pm_card_visa",
                "metadata": {"event_id": "1", "quantity": "2"},
            }
        )
        assert s.webhooks_idle(30)
        state = s.end_state()
        assert state["admitted"] == 1 and state["orders"] == 1 and state["tickets_sold"] == 2
        s.set_knobs(knobs_from_dict({"endpoints": {"rpc:*": {"error_rate": 1.0}}}))
        status, _, _ = call(
            "POST",
            f"{s.url}/rest/v1/rpc/scan_ticket_atomic",
            headers=headers(s),
            json={"p_ticket_code": "T1-0000002", "p_event_id": 1},
        )
        assert status == 500
        proc = s.proc
    assert proc.returncode == 0
