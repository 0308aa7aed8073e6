"""Sales and Stripe delivery: checkout flows, declines, abandonment, retries with backoff, duplicates."""

import numpy as np
import pytest
import simpy

from models.distributions import Dist
from models.sales import SalesParams, sales
from models.sink import ListSink
from models.stripe_objects import Deliverer, DeliveryParams, event, payment_intent
from traces.event import (
    ABANDON,
    CHECKOUT,
    CONFIRM,
    DECLINED,
    DUPLICATE,
    PROCESSED,
    SUCCEEDED,
    WEBHOOK,
)


def run_sales(**kw):
    env = simpy.Environment()
    sink = ListSink(env)
    env.process(sales(env, SalesParams(**kw), np.random.default_rng(1), sink.emit))
    env.run()
    sink.flush()
    return sink.events


def test_each_buyer_creates_then_confirms_after_the_create():
    events = run_sales(buyers=200, abandon_prob=0.2, decline_prob=0.1)
    checkouts = {e.actor: e for e in events if e.kind == CHECKOUT}
    confirms = [e for e in events if e.kind == CONFIRM]
    abandons = [e for e in events if e.kind == ABANDON]
    assert len(checkouts) == 200 and len(confirms) + len(abandons) == 200
    assert len(abandons) == pytest.approx(40, abs=20)
    declined = [e for e in confirms if e.expect == DECLINED]
    assert len(declined) == pytest.approx(0.1 * 0.8 * 200, abs=12)
    for c in confirms:
        assert c.after == checkouts[c.actor].seq and c.t_us > checkouts[c.actor].t_us
        pm = c.data()["payment_method"]
        assert pm == ("pm_card_chargeDeclined" if c.expect == DECLINED else "pm_card_visa")
        assert c.expect in (SUCCEEDED, DECLINED)
    body = next(iter(checkouts.values())).data()
    assert set(body) == {"amount", "currency", "quantity", "event_id", "buyer", "order_ref"}
    assert body["amount"] == 8500 * body["quantity"]


def test_succeeded_payments_get_their_webhooks_and_declines_theirs():
    events = run_sales(buyers=50, decline_prob=0.3, send_created=False)
    ok = sum(1 for e in events if e.kind == CONFIRM and e.expect == SUCCEEDED)
    bad = sum(1 for e in events if e.kind == CONFIRM and e.expect == DECLINED)
    types = [e.data()["type"] for e in events if e.kind == WEBHOOK and e.expect == PROCESSED]
    assert types.count("payment_intent.succeeded") == ok
    assert types.count("charge.succeeded") == ok
    assert types.count("payment_intent.payment_failed") == bad


def deliveries(params: DeliveryParams, n: int = 1, seed: int = 0):
    env = simpy.Environment()
    sink = ListSink(env)
    d = Deliverer(env, params, np.random.default_rng(seed), sink.emit)
    for i in range(n):
        d.send(
            event(
                f"evt_{i}",
                "payment_intent.succeeded",
                payment_intent(f"pi_{i}", 100, "usd", "succeeded", {}),
                d.created(),
            )
        )
    env.run()
    sink.flush()
    return sink.events


def test_retries_back_off_exponentially_after_failures():
    p = DeliveryParams(
        delay=Dist("fixed", 1.0),
        duplicate_prob=0.0,
        fail_prob=1.0,
        retry_base_s=60.0,
        retry_factor=2.0,
        max_retries=3,
    )
    events = deliveries(p)
    assert [e.expect for e in events] == [PROCESSED, DUPLICATE, DUPLICATE, DUPLICATE]
    gaps = np.diff([e.t_us / 1e6 for e in events])
    for k, gap in enumerate(gaps):
        assert 60.0 * 2**k * 0.5 <= gap < 60.0 * 2**k * 1.5  # base * factor^k, jittered


def test_failure_window_delays_and_duplicates():
    p = DeliveryParams(
        delay=Dist("fixed", 0.5),
        duplicate_prob=0.0,
        fail_window=(0.0, 100.0),
        retry_base_s=30.0,
        max_retries=5,
    )
    events = deliveries(p, n=20)
    last = {}
    for e in events:
        last[e.data()["id"]] = e.t_us
    assert all(
        t >= 100_000_000 for t in last.values()
    )  # the final attempt of each lands after the outage


def test_duplicates_and_no_order_guarantee():
    p = DeliveryParams(delay=Dist("exponential", 5.0), duplicate_prob=0.5)
    events = deliveries(p, n=400, seed=3)
    ids = [e.data()["id"] for e in events]
    dups = len(ids) - len(set(ids))
    assert dups == pytest.approx(200, abs=40)
    order = [int(i.split("_")[1]) for i in ids if i]
    assert order != sorted(order)  # delivered out of creation order
    first = {}
    for e in events:
        first.setdefault(e.data()["id"], e.expect)
    assert set(first.values()) == {PROCESSED}


def test_delivered_ids_are_forgotten_once_no_delivery_is_left():
    env = simpy.Environment()
    sink = ListSink(env)
    p = DeliveryParams(
        delay=Dist("exponential", 5.0), duplicate_prob=0.5, fail_prob=0.3, retry_base_s=5.0
    )
    d = Deliverer(env, p, np.random.default_rng(4), sink.emit)
    for i in range(300):
        d.send(event(f"evt_{i}", "charge.succeeded", {}, 0))
    env.run()
    assert d._seen == set() and d._outstanding == {}  # memory bounded by deliveries in flight
