"""The official stripe client (stripe-python 16) against the Stripe subset, call for call, as
Stripe's API reference and testing docs describe the answers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from staging.knobs import knobs_from_dict
from staging.server import standin_in_thread
from staging.stripe_api import TEST_CARDS
from tests.staging.conftest import INVENTORY, admin_headers, call


@pytest.fixture(scope="module")
def s() -> Iterator[Any]:
    knobs = {"seed": 3, "delivery": {"delay": "1ms", "duplicate_rate": 0.0, "retry_base": "10ms"}}
    with standin_in_thread(inventory=INVENTORY, knobs=knobs_from_dict(knobs)) as standin:
        yield standin


def client(s: Any, retries: int = 0) -> stripe.StripeClient:
    return stripe.StripeClient(
        s.stripe_key, base_addresses={"api": s.url}, max_network_retries=retries
    )


def _pi(c: stripe.StripeClient, **extra: Any) -> Any:
    return c.v1.payment_intents.create(
        params={"amount": 2500, "currency": "usd", "metadata": {"event_id": "1"}, **extra}
    )


def _event_types(s: Any, object_id: str) -> list[str]:
    assert s.webhooks_idle(30)
    _, rows, _ = call(
        "GET",
        f"{s.url}/rest/v1/webhook_events",
        headers=admin_headers(s),
        params={"select": "type", "object_id": f"eq.{object_id}", "order": "received_at"},
    )
    return sorted(r["type"] for r in rows)


DECLINES = {pm: v[2] for pm, v in TEST_CARDS.items() if isinstance(v[2], tuple)}


@pytest.mark.parametrize("pm", sorted(DECLINES))
def test_every_documented_decline_card(s: Any, pm: str) -> None:
    # https://docs.stripe.com/testing#declined-payments: each test PaymentMethod declines with
    # its error code and decline_code (https://docs.stripe.com/declines/codes), HTTP 402
    code, decline, message = DECLINES[pm]
    c = client(s)
    pi = _pi(c)
    with pytest.raises(stripe.CardError) as err:
        c.v1.payment_intents.confirm(pi.id, params={"payment_method": pm})
    assert err.value.code == code and err.value.http_status == 402
    assert err.value.error.decline_code == decline and err.value.user_message == message
    assert err.value.error.payment_intent.status == "requires_payment_method"
    after = c.v1.payment_intents.retrieve(pi.id)
    assert after.last_payment_error.decline_code == decline
    # a declined PaymentIntent can be confirmed again with another card
    ok = c.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa"})
    assert ok.status == "succeeded"


def test_well_known_declines_are_there() -> None:
    for pm, decline in [
        ("pm_card_visa_chargeDeclined", "generic_decline"),
        ("pm_card_visa_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card"),
        ("pm_card_chargeDeclinedIncorrectCvc", "incorrect_cvc"),
        ("pm_card_chargeDeclinedProcessingError", "processing_error"),
        ("pm_card_visa_chargeDeclinedLostCard", "lost_card"),
        ("pm_card_visa_chargeDeclinedStolenCard", "stolen_card"),
        ("pm_card_chargeDeclinedFraudulent", "fraudulent"),
    ]:
        assert DECLINES[pm][1] == decline


def test_three_d_secure_requires_action_then_cancel(s: Any) -> None:
    # https://docs.stripe.com/testing#regulatory-cards and
    # https://docs.stripe.com/payments/paymentintents/lifecycle: requires_action with next_action
    c = client(s)
    pi = _pi(
        c,
        payment_method="pm_card_threeDSecure2Required",
        confirm=True,
        return_url="https://example.invalid/done",
    )
    assert pi.status == "requires_action"
    assert pi.next_action.type == "redirect_to_url"
    assert pi.next_action.redirect_to_url.return_url == "https://example.invalid/done"
    off = _pi(c)
    with pytest.raises(stripe.CardError) as err:
        c.v1.payment_intents.confirm(
            off.id, params={"payment_method": "pm_card_authenticationRequired", "off_session": True}
        )
    assert err.value.code == "authentication_required"
    # https://docs.stripe.com/api/payment_intents/cancel
    done = c.v1.payment_intents.cancel(pi.id, params={"cancellation_reason": "abandoned"})
    assert done.status == "canceled" and done.cancellation_reason == "abandoned"
    with pytest.raises(stripe.InvalidRequestError) as err:
        c.v1.payment_intents.cancel(pi.id)
    assert err.value.code == "payment_intent_unexpected_state"
    assert _event_types(s, pi.id) == [
        "payment_intent.canceled",
        "payment_intent.created",
        "payment_intent.requires_action",
    ]


def test_update_expand_and_webhooks_per_state_change(s: Any) -> None:
    # https://docs.stripe.com/api/payment_intents/update (metadata merges, "" unsets) and
    # https://docs.stripe.com/api/expanding_objects
    c = client(s)
    cus = c.v1.customers.create(params={"email": "a@example.invalid", "name": "A"})
    assert c.v1.customers.retrieve(cus.id).email == "a@example.invalid"
    pi = _pi(c, customer=cus.id, metadata={"event_id": "1", "note": "x"})
    pi = c.v1.payment_intents.update(pi.id, params={"amount": 3000, "metadata": {"note": ""}})
    assert pi.amount == 3000 and "note" not in pi.metadata and pi.metadata["event_id"] == "1"
    pi = c.v1.payment_intents.confirm(
        pi.id, params={"payment_method": "pm_card_visa", "expand": ["latest_charge", "customer"]}
    )
    assert pi.latest_charge.object == "charge" and pi.latest_charge.amount == 3000
    assert pi.customer.id == cus.id
    got = c.v1.payment_intents.retrieve(pi.id, params={"expand": ["payment_method"]})
    assert got.payment_method.card.last4 == "4242" and isinstance(got.latest_charge, str)
    with pytest.raises(stripe.InvalidRequestError, match="cannot be expanded"):
        c.v1.payment_intents.retrieve(pi.id, params={"expand": ["nope"]})
    with pytest.raises(stripe.InvalidRequestError) as err:
        c.v1.payment_intents.update(pi.id, params={"amount": 1})
    assert err.value.code == "payment_intent_unexpected_state"
    # https://docs.stripe.com/api/refunds/create: partial, then the rest, then nothing left
    r1 = c.v1.refunds.create(params={"payment_intent": pi.id, "amount": 1000})
    assert r1.amount == 1000 and c.v1.refunds.retrieve(r1.id).payment_intent == pi.id
    r2 = c.v1.refunds.create(params={"payment_intent": pi.id})
    assert r2.amount == 2000
    with pytest.raises(stripe.InvalidRequestError) as err:
        c.v1.refunds.create(params={"payment_intent": pi.id})
    assert err.value.code == "charge_already_refunded"
    assert _event_types(s, pi.id) == [
        "payment_intent.created",
        "payment_intent.succeeded",
    ]


def test_list_paginates_with_cursors(s: Any) -> None:
    # https://docs.stripe.com/api/pagination: newest first, limit, starting_after, ending_before
    c = client(s)
    cus = c.v1.customers.create(params={"name": "pager"})
    made = [_pi(c, customer=cus.id).id for _ in range(5)]
    page = c.v1.payment_intents.list(params={"customer": cus.id, "limit": 2})
    assert [p.id for p in page.data] == made[::-1][:2] and page.has_more
    nxt = c.v1.payment_intents.list(
        params={"customer": cus.id, "limit": 2, "starting_after": page.data[-1].id}
    )
    assert [p.id for p in nxt.data] == made[::-1][2:4] and nxt.has_more
    back = c.v1.payment_intents.list(
        params={"customer": cus.id, "limit": 2, "ending_before": nxt.data[0].id}
    )
    assert [p.id for p in back.data] == made[::-1][:2] and not back.has_more
    everything = [p.id for p in page.auto_paging_iter()]
    assert everything == made[::-1]
    with pytest.raises(stripe.InvalidRequestError):
        c.v1.payment_intents.list(params={"limit": 101})


def test_idempotency_keys_as_stripe_defines_them(s: Any) -> None:
    # https://docs.stripe.com/api/idempotent_requests: same key and parameters replay the first
    # answer; the same key with other parameters is a 400 idempotency_error
    c = client(s)
    opts = {"idempotency_key": "order-77"}
    a = c.v1.payment_intents.create(params={"amount": 100, "currency": "usd"}, options=opts)
    b = c.v1.payment_intents.create(params={"amount": 100, "currency": "usd"}, options=opts)
    assert a.id == b.id
    with pytest.raises(stripe.IdempotencyError):
        c.v1.payment_intents.create(params={"amount": 200, "currency": "usd"}, options=opts)
    # a request refused by validation stores nothing: the key can then be used correctly
    with pytest.raises(stripe.InvalidRequestError):
        c.v1.payment_intents.create(params={"amount": 100}, options={"idempotency_key": "k2"})
    ok = c.v1.payment_intents.create(
        params={"amount": 100, "currency": "eur"}, options={"idempotency_key": "k2"}
    )
    assert ok.currency == "eur"


def test_one_run_id_rule_for_payments_and_orders(s: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # header or metadata.gaterush_run: payments and the orders they make count for the same run
    c = client(s)
    by_meta = c.v1.payment_intents.create(
        params={
            "amount": 700,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "metadata": {"event_id": "2", "quantity": "1", "gaterush_run": "run-meta"},
        }
    )
    assert by_meta.status == "succeeded"
    by_header = c.v1.payment_intents.create(
        params={
            "amount": 700,
            "currency": "usd",
            "metadata": {"event_id": "2", "quantity": "1"},
        },
        options={"headers": {"X-Gaterush-Run": "run-head"}},
    )
    c.v1.payment_intents.confirm(by_header.id, params={"payment_method": "pm_card_visa"})
    assert s.webhooks_idle(30)
    for run in ("run-meta", "run-head"):
        st = s.end_state(run)
        assert st["checkouts"] == 1 and st["payments_succeeded"] == 1 and st["orders"] == 1, st
