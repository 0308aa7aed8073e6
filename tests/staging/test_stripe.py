"""The official stripe client against the Stripe subset, and the webhooks it delivers."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from aiohttp import web

from staging.cli import _admin_request
from staging.knobs import knobs_from_dict
from staging.server import standin_in_thread
from tests.staging.conftest import INVENTORY, call, headers
from traces.event import order_ticket_code


@pytest.fixture
def fresh() -> Iterator[Any]:
    with standin_in_thread(
        inventory=INVENTORY,
        knobs=knobs_from_dict(
            {
                "seed": 7,
                "delivery": {"delay": "exp:5ms", "duplicate_rate": 0.0, "retry_base": "10ms"},
            }
        ),
    ) as s:
        yield s


def client(s: Any) -> stripe.StripeClient:
    return stripe.StripeClient(s.stripe_key, base_addresses={"api": s.url}, max_network_retries=0)


def test_official_client_checkout_creates_the_order_through_webhooks(fresh: Any) -> None:
    c = client(fresh)
    pi = c.v1.payment_intents.create(
        params={
            "amount": 15000,
            "currency": "usd",
            "metadata": {"event_id": "1", "quantity": "3", "buyer": "b7"},
        }
    )
    assert pi.status == "requires_payment_method" and pi.id.startswith("pi_")
    pi = c.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa"})
    assert pi.status == "succeeded" and pi.amount_received == 15000
    assert c.v1.payment_intents.retrieve(pi.id).status == "succeeded"
    with pytest.raises(stripe.CardError) as err:
        c.v1.payment_intents.create(
            params={
                "amount": 5000,
                "currency": "usd",
                "metadata": {"event_id": "1"},
                "payment_method": "pm_card_chargeDeclined",
                "confirm": True,
            }
        )
    assert err.value.code == "card_declined"
    with pytest.raises(stripe.InvalidRequestError):
        c.v1.payment_intents.confirm(
            pi.id, params={"payment_method": "pm_card_visa"}
        )  # already succeeded
    assert fresh.webhooks_idle(30)
    state = fresh.end_state()
    assert state["orders"] == 1 and state["tickets_sold"] == 3 and state["revenue_cents"] == 15000
    assert (
        state["payments_succeeded"] == 1
        and state["payments_declined"] == 1
        and state["checkouts"] == 2
    )
    status, tickets, _ = call(
        "GET",
        f"{fresh.url}/rest/v1/tickets",
        headers=headers(fresh),
        params={"select": "code", "order": "code", "code": f"like.O{pi.id}*"},
    )
    assert [t["code"] for t in tickets] == [order_ticket_code(pi.id, i) for i in range(3)]
    c.v1.refunds.create(params={"payment_intent": pi.id})
    assert fresh.webhooks_idle(30)
    state = fresh.end_state()
    assert state["refunds"] == 1 and state["revenue_cents"] == 0 and state["orders"] == 1


def test_live_keys_are_refused_by_the_client(fresh: Any) -> None:
    c = stripe.StripeClient(
        "sk_live_" + "x" * 24, base_addresses={"api": fresh.url}, max_network_retries=0
    )
    with pytest.raises(stripe.AuthenticationError, match="Live keys"):
        c.v1.payment_intents.create(params={"amount": 100, "currency": "usd"})


class Receiver:
    """A webhook endpoint on 127.0.0.1 that verifies with stripe.Webhook.construct_event."""

    def __init__(self, secret: str, fail_first: int = 0) -> None:
        self.secret = secret
        self.fail_first = fail_first
        self.events: list[Any] = []
        self.attempts = 0
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self._runner: web.AppRunner | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.read()
        event = stripe.Webhook.construct_event(
            body, request.headers["Stripe-Signature"], self.secret
        )
        if self.attempts <= self.fail_first:
            return web.json_response({"error": "not yet"}, status=500)
        self.events.append(event)
        return web.json_response({"received": True})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"

    def __enter__(self) -> Receiver:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_delivered_webhooks_verify_with_construct_event_and_are_retried(fresh: Any) -> None:
    with Receiver(fresh.webhook_secret, fail_first=3) as rx:
        fresh.app.deliverer.url = rx.url
        c = client(fresh)
        pi = c.v1.payment_intents.create(
            params={
                "amount": 999,
                "currency": "eur",
                "payment_method": "pm_card_visa",
                "confirm": True,
                "metadata": {"event_id": "2", "quantity": "1"},
            }
        )
        assert pi.status == "succeeded"
        assert fresh.webhooks_idle(30)
        types = sorted(e.type for e in rx.events)
        assert types == ["charge.succeeded", "payment_intent.created", "payment_intent.succeeded"]
        succeeded = next(e for e in rx.events if e.type == "payment_intent.succeeded")
        assert succeeded.data.object.id == pi.id and succeeded.data.object.amount == 999
        stats = fresh.stats()["webhook_delivery"]
        assert stats["failed_attempts"] == 3 and stats["delivered"] == 3 and stats["given_up"] == 0


def test_duplicate_deliveries_change_nothing(fresh: Any) -> None:
    fresh.set_knobs(
        knobs_from_dict({"seed": 3, "delivery": {"delay": "1ms", "duplicate_rate": 1.0}})
    )
    c = client(fresh)
    for _ in range(3):
        c.v1.payment_intents.create(
            params={
                "amount": 2500,
                "currency": "usd",
                "payment_method": "pm_card_visa",
                "confirm": True,
                "metadata": {"event_id": "2", "quantity": "1"},
            }
        )
    assert fresh.webhooks_idle(30)
    state = fresh.end_state()
    assert state["orders"] == 3 and state["tickets_sold"] == 3
    assert (
        state["webhooks_duplicate"] == state["webhooks_processed"] == 9
    )  # 3 events per payment, each twice


def test_injected_errors_are_retried_until_processed(fresh: Any) -> None:
    fresh.set_knobs(
        knobs_from_dict(
            {
                "seed": 11,
                "endpoints": {"fn:stripe-webhook": {"error_rate": 0.5}},
                "delivery": {
                    "delay": "1ms",
                    "duplicate_rate": 0.0,
                    "retry_base": "1ms",
                    "max_attempts": 30,
                },
            }
        )
    )
    c = client(fresh)
    for _ in range(5):
        c.v1.payment_intents.create(
            params={
                "amount": 2500,
                "currency": "usd",
                "payment_method": "pm_card_visa",
                "confirm": True,
                "metadata": {"event_id": "2", "quantity": "2"},
            }
        )
    assert fresh.webhooks_idle(60)
    stats = fresh.stats()
    assert stats["injected_errors"] > 0 and stats["webhook_delivery"]["given_up"] == 0
    state = fresh.end_state()
    assert state["orders"] == 5 and state["tickets_sold"] == 10 and state["webhooks_duplicate"] == 0


def test_run_id_reaches_rows_and_cleanup_removes_them(
    fresh: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = client(fresh)
    pi = c.v1.payment_intents.create(
        params={
            "amount": 5000,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "metadata": {"event_id": "1", "quantity": "1"},
        },
        options={"headers": {"X-Gaterush-Run": "run-A"}},
    )
    assert pi.metadata["gaterush_run"] == "run-A"
    assert fresh.webhooks_idle(30)
    status, body, _ = call(
        "POST",
        f"{fresh.url}/rest/v1/rpc/scan_ticket_atomic",
        headers={**headers(fresh), "X-Gaterush-Run": "run-A"},
        json={"p_ticket_code": "T1-0000005", "p_event_id": 1},
    )
    assert body["outcome"] == "valid"
    call(
        "POST",
        f"{fresh.url}/rest/v1/rpc/scan_ticket_atomic",
        headers={**headers(fresh), "X-Gaterush-Run": "run-B"},
        json={"p_ticket_code": "T1-0000006", "p_event_id": 1},
    )
    a = fresh.end_state("run-A")
    assert a["orders"] == 1 and a["admitted"] == 1 and a["webhooks_processed"] == 3
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", fresh.service_key)
    out = _admin_request(
        fresh.url, "DELETE", "/admin/v1/runs/run-A"
    )  # what `gaterush cleanup` sends
    assert (
        out["deleted"]["orders"] == 1
        and out["deleted"]["scans"] == 1
        and out["deleted"]["tickets"] == 1
    )
    a = fresh.end_state("run-A")
    assert (
        a["orders"] == 0
        and a["admitted"] == 0
        and a["webhooks_processed"] == 0
        and a["checkouts"] == 0
    )
    assert fresh.end_state("run-B")["admitted"] == 1
    status, body, _ = call(
        "POST",
        f"{fresh.url}/rest/v1/rpc/scan_ticket_atomic",
        headers=headers(fresh),
        json={"p_ticket_code": "T1-0000005", "p_event_id": 1},
    )
    assert body["outcome"] == "valid"  # run A's admission was undone
    assert json.dumps(out).find(fresh.service_key) == -1
