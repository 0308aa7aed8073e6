"""The end-of-event webhook burst: N Stripe events delivered within T seconds."""

from __future__ import annotations

from collections.abc import Generator
from typing import Annotated

import numpy as np
import simpy
from msgspec import Meta, field

from models.distributions import Dist, choices
from models.sink import Emit
from models.stripe_objects import ORIGIN_UNIX_S, Deliverer, DeliveryParams, event, payment_intent
from models.venue import Price
from traces.config import NonNegative, Section, Weights
from traces.limits import MAX_PEOPLE


class BurstParams(Section):
    """The [webhook_burst] table: `events` payment_intent.succeeded events (late orders:
    merchandise, upgrades) in `window_s` from `start_s`."""

    events: Annotated[int, Meta(ge=0, extra={"limit": MAX_PEOPLE})] = 50
    start_s: NonNegative = 0.0
    window_s: NonNegative = 10.0
    price_cents: Price = 2500
    quantities: Weights = (0.7, 0.2, 0.1)
    # in the burst Stripe delivers at once: no extra delay unless asked
    delivery: DeliveryParams = field(
        default_factory=lambda: DeliveryParams(delay=Dist("fixed", 0.0), duplicate_prob=0.0)
    )


def webhook_burst(
    env: simpy.Environment,
    params: BurstParams,
    rng: np.random.Generator,
    emit: Emit,
    event_id: int = 1,
    currency: str = "usd",
    origin_unix_s: int = ORIGIN_UNIX_S,
) -> Generator[simpy.Event, None, None]:
    """Deliver the burst: event times are uniform order statistics over the window."""
    t_rng, q_rng, d_rng, tag_rng = rng.spawn(4)
    tag = f"{int(tag_rng.integers(0, 2**32)):08x}"
    delivery = params.delivery
    deliver = Deliverer(env, delivery, d_rng, emit, origin_unix_s)
    quantities = choices(q_rng, params.quantities)
    times = params.start_s + np.sort(t_rng.uniform(0.0, params.window_s, params.events))
    for n, t in enumerate(times.tolist()):
        if t > env.now:
            yield env.timeout(t - env.now)
        quantity = next(quantities) + 1
        meta = {
            "event_id": str(event_id),
            "quantity": str(quantity),
            "buyer": f"late{n}@example.com",
            "order_ref": f"ord_{tag}_b{n:06d}",
        }
        pi = payment_intent(
            f"pi_{tag}_b{n:06d}", params.price_cents * quantity, currency, "succeeded", meta
        )
        deliver.send(
            event(f"evt_{tag}_b{n:06d}", "payment_intent.succeeded", pi, deliver.created())
        )
