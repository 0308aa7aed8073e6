"""Stripe event objects and Stripe's delivery semantics (at least once, no order, retries with backoff).

Ids are deterministic simulation ids (`evt_<tag>_...`, `pi_<tag>_...`); replay signs each webhook at
send time, so nothing here is secret. Metadata values are strings, as Stripe sends them.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Annotated, Any

import numpy as np
import simpy
from msgspec import Meta

from models.distributions import Dist, uniforms
from models.sink import Emit
from traces.config import NonNegative, Positive, Probability, Section
from traces.event import DUPLICATE, PROCESSED, TARGET_WEBHOOK, WEBHOOK
from traces.limits import MAX_COUNT

API_VERSION = "2024-06-20"


def payment_intent(
    pi_id: str, amount: int, currency: str, status: str, metadata: dict[str, str]
) -> dict:
    """A PaymentIntent object as Stripe puts it in an event's data.object."""
    return {
        "id": pi_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_received": amount if status == "succeeded" else 0,
        "currency": currency,
        "livemode": False,
        "metadata": metadata,
        "status": status,
    }


def charge(
    ch_id: str,
    pi_id: str,
    amount: int,
    currency: str,
    metadata: dict[str, str],
    refunded: bool = False,
) -> dict:
    """A Charge object for charge.succeeded / charge.refunded."""
    return {
        "id": ch_id,
        "object": "charge",
        "amount": amount,
        "amount_refunded": amount if refunded else 0,
        "currency": currency,
        "livemode": False,
        "metadata": metadata,
        "paid": True,
        "payment_intent": pi_id,
        "refunded": refunded,
        "status": "succeeded",
    }


def event(evt_id: str, etype: str, obj: dict, created: int) -> dict[str, Any]:
    """A Stripe event object (the body of a webhook delivery)."""
    return {
        "id": evt_id,
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": etype,
    }


class DeliveryParams(Section):
    """How Stripe delivers: delay, duplicates, retries after endpoint failures (figures unverified)."""

    delay: Dist = Dist("lognormal", 2.0, 1.5)  # from the API call to the first delivery attempt
    duplicate_prob: Probability = 0.02  # an extra, independent delivery of the same event
    fail_prob: Probability = 0.0  # an attempt Stripe sees as failed (timeout, 5xx): it retries
    fail_window: tuple[NonNegative, NonNegative] | None = None  # [start, end) s: all attempts fail
    retry_base_s: Positive = 60.0  # backoff: base * factor**k, jittered x U[0.5, 1.5)
    retry_factor: Annotated[float, Meta(ge=1)] = 2.0
    max_retries: Annotated[int, Meta(ge=0, extra={"limit": MAX_COUNT})] = 3


ORIGIN_UNIX_S = 1_750_000_000  # a default origin: Stripe's `created` = origin + simulated seconds


class Deliverer:
    """Delivers Stripe events as `webhook` events to fn:stripe-webhook; the first delivery of an event
    id is expected `processed`, every later one `duplicate` (the endpoint deduplicates on event.id).

    An attempt Stripe sees as failed is still emitted (the endpoint may well have processed it: a
    timeout), then retried with exponential backoff: retries are duplicates by construction.
    """

    def __init__(
        self,
        env: simpy.Environment,
        params: DeliveryParams,
        rng: np.random.Generator,
        emit: Emit,
        origin_unix_s: int = ORIGIN_UNIX_S,
    ):
        """Stripe's `created` of an event made at simulated time t is origin_unix_s + t."""
        self.env, self.p, self.emit = env, params, emit
        self.origin_unix_s = origin_unix_s
        d_rng, u_rng = rng.spawn(2)
        self._delay = params.delay.stream(d_rng)
        self._u: Iterator[float] = uniforms(u_rng)
        # ids delivered at least once, kept while a delivery of them is still to come (bounded memory)
        self._seen: set[str] = set()
        self._outstanding: dict[str, int] = {}

    def created(self) -> int:
        """Stripe's `created` for an event made now."""
        return self.origin_unix_s + int(self.env.now)

    def send(self, evt: dict[str, Any]) -> None:
        """Schedule the delivery of one Stripe event (and a duplicate, sometimes)."""
        delays = [next(self._delay)]
        if self.p.duplicate_prob and next(self._u) < self.p.duplicate_prob:
            delays.append(next(self._delay) * 2 + next(self._delay))
        eid = evt["id"]
        self._outstanding[eid] = self._outstanding.get(eid, 0) + len(delays)
        for d in delays:
            self.env.process(self._deliver(evt, d))

    def _failed(self) -> bool:
        p, now = self.p, self.env.now
        if p.fail_window is not None and p.fail_window[0] <= now < p.fail_window[1]:
            return True
        return bool(p.fail_prob) and next(self._u) < p.fail_prob

    def _deliver(self, evt: dict[str, Any], delay: float) -> Generator[simpy.Event, None, None]:
        env, p = self.env, self.p
        eid = evt["id"]
        yield env.timeout(delay)
        for attempt in range(p.max_retries + 1):
            expect = DUPLICATE if eid in self._seen else PROCESSED
            self._seen.add(eid)
            self.emit(WEBHOOK, "stripe", TARGET_WEBHOOK, evt, None, expect)
            if attempt == p.max_retries or not self._failed():
                break
            yield env.timeout(p.retry_base_s * p.retry_factor**attempt * (0.5 + next(self._u)))
        left = self._outstanding[eid] - 1
        if left:
            self._outstanding[eid] = left
        else:  # no delivery of this id is still to come: forget it
            del self._outstanding[eid]
            self._seen.discard(eid)
