"""The on-sale rush: buyers create and confirm PaymentIntents; Stripe then delivers its webhooks."""

from __future__ import annotations

from collections.abc import Generator
from typing import Annotated

import numpy as np
import simpy
from msgspec import Meta, field

from models.distributions import Dist, choices, uniforms
from models.sink import Emit
from models.stripe_objects import (
    ORIGIN_UNIX_S,
    Deliverer,
    DeliveryParams,
    charge,
    event,
    payment_intent,
)
from models.venue import DEFAULT_EVENT, EventParams
from traces.config import NonNegative, Positive, Probability, Section, Weights
from traces.event import (
    ABANDON,
    CHECKOUT,
    CONFIRM,
    DECLINED,
    OK,
    SUCCEEDED,
    TARGET_PI_CONFIRM,
    TARGET_PI_CREATE,
)
from traces.limits import MAX_PEOPLE


class SalesParams(Section):
    """The [sales] table, an on-sale rush: `buyers` arriving over `window_s` from `start_s` (most in
    the first `tau_s`)."""

    buyers: Annotated[int, Meta(ge=0, extra={"limit": MAX_PEOPLE})] = 100
    start_s: NonNegative = 0.0
    window_s: Positive = 600.0
    tau_s: NonNegative = 120.0  # arrivals decay as exp(-t / tau) over the window (0: uniform)
    quantities: Weights = (0.4, 0.35, 0.15, 0.1)  # weights of 1, 2, ... tickets
    think: Dist = Dist("lognormal", 20.0, 10.0)  # from create to confirm
    abandon_prob: Probability = 0.0
    decline_prob: Probability = 0.0
    refund_prob: Probability = 0.0
    refund_after: Dist = Dist("exponential", 3600.0)
    send_created: bool = True  # also deliver payment_intent.created
    delivery: DeliveryParams = field(default_factory=DeliveryParams)


def buyer_times(params: SalesParams, rng: np.random.Generator) -> np.ndarray:
    """Sorted arrival times of the buyers: a truncated exponential (or uniform) over the window."""
    u = rng.random(params.buyers)
    if params.tau_s > 0:
        span = 1.0 - np.exp(-params.window_s / params.tau_s)
        t = -params.tau_s * np.log1p(-u * span)
    else:
        t = u * params.window_s
    return params.start_s + np.sort(t)


def sales(
    env: simpy.Environment,
    params: SalesParams,
    rng: np.random.Generator,
    emit: Emit,
    event: EventParams = DEFAULT_EVENT,
    origin_unix_s: int = ORIGIN_UNIX_S,
) -> Generator[simpy.Event, None, None]:
    """Run the rush for `event`'s tickets: one process per buyer (buyers are few next to attendees)."""
    t_rng, q_rng, th_rng, u_rng, d_rng, r_rng, tag_rng = rng.spawn(7)
    tag = f"{int(tag_rng.integers(0, 2**32)):08x}"
    deliver = Deliverer(env, params.delivery, d_rng, emit, origin_unix_s)
    quantities = choices(q_rng, params.quantities)
    think = params.think.stream(th_rng)
    u = uniforms(u_rng)
    refund_after = params.refund_after.stream(r_rng)
    for b, t in enumerate(buyer_times(params, t_rng).tolist()):
        if t > env.now:
            yield env.timeout(t - env.now)
        quantity = next(quantities) + 1
        env.process(
            _buyer(
                env,
                params,
                event,
                emit,
                deliver,
                b,
                tag,
                quantity,
                next(think),
                next(u),
                next(u),
                next(u),
                next(refund_after),
            )
        )


def _buyer(
    env,
    p: SalesParams,
    ev: EventParams,
    emit: Emit,
    deliver: Deliverer,
    b: int,
    tag: str,
    quantity: int,
    think: float,
    u_abandon: float,
    u_decline: float,
    u_refund: float,
    refund_after: float,
):
    actor = f"buyer:{b}"
    pi_id = f"pi_{tag}_{b:06d}"
    amount = ev.price_cents * quantity
    meta = {
        "event_id": str(ev.id),
        "quantity": str(quantity),
        "buyer": f"buyer{b}@example.com",
        "order_ref": f"ord_{tag}_{b:06d}",
    }
    checkout = emit(
        CHECKOUT,
        actor,
        TARGET_PI_CREATE,
        {
            "amount": amount,
            "currency": ev.currency,
            "quantity": quantity,
            "event_id": ev.id,
            "buyer": meta["buyer"],
            "order_ref": meta["order_ref"],
        },
        None,
        OK,
    )
    if p.send_created:
        deliver.send(
            event(
                f"evt_{tag}_{b:06d}_c",
                "payment_intent.created",
                payment_intent(pi_id, amount, ev.currency, "requires_payment_method", meta),
                deliver.created(),
            )
        )
    yield env.timeout(think)
    if u_abandon < p.abandon_prob:
        emit(ABANDON, actor, None, {"order_ref": meta["order_ref"]})
        return
    if u_decline < p.decline_prob:
        emit(
            CONFIRM,
            actor,
            TARGET_PI_CONFIRM,
            {"payment_method": "pm_card_chargeDeclined"},
            checkout,
            DECLINED,
        )
        deliver.send(
            event(
                f"evt_{tag}_{b:06d}_f",
                "payment_intent.payment_failed",
                payment_intent(pi_id, amount, ev.currency, "requires_payment_method", meta),
                deliver.created(),
            )
        )
        return
    emit(CONFIRM, actor, TARGET_PI_CONFIRM, {"payment_method": "pm_card_visa"}, checkout, SUCCEEDED)
    created = deliver.created()
    # two events of one payment, delivered independently: their order is not guaranteed
    deliver.send(
        event(
            f"evt_{tag}_{b:06d}_s",
            "payment_intent.succeeded",
            payment_intent(pi_id, amount, ev.currency, "succeeded", meta),
            created,
        )
    )
    deliver.send(
        event(
            f"evt_{tag}_{b:06d}_h",
            "charge.succeeded",
            charge(f"ch_{tag}_{b:06d}", pi_id, amount, ev.currency, meta),
            created,
        )
    )
    if u_refund < p.refund_prob:
        yield env.timeout(refund_after)
        deliver.send(
            event(
                f"evt_{tag}_{b:06d}_r",
                "charge.refunded",
                charge(f"ch_{tag}_{b:06d}", pi_id, amount, ev.currency, meta, refunded=True),
                deliver.created(),
            )
        )
