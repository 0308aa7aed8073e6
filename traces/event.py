"""The event: the one shape every trace, model, replay and report shares (DESIGN.md, "The event")."""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack

FORMAT_NAME = "gaterush-trace"
# 1: payloads hold the business content only. 2: a recorded or imported request's payload may also
# hold the request as sent under "request" (traces.importers.request); readers take both.
FORMAT_VERSION = 2

# Event kinds the built-in models emit. Traces may carry others (recorded traffic); readers accept any.
ARRIVE = "arrive"  # an attendee (or group member) reaches the gate area; no target
SCAN = "scan"  # a ticket presented at a lane: rpc:scan_ticket_atomic
LEAVE = "leave"  # an attendee leaves the venue (pass-out scan when re-entry is allowed)
CHECKOUT = "checkout"  # a buyer creates a PaymentIntent: stripe:payment_intents.create
CONFIRM = (
    "confirm"  # the buyer confirms it: stripe:payment_intents.confirm (after = the checkout's seq)
)
ABANDON = "abandon"  # a buyer walks away from checkout; no target
WEBHOOK = "webhook"  # Stripe delivers an event object to fn:stripe-webhook (actor "stripe")
# a dashboard viewer loads one resource (rest:events, rest:tickets, rpc:event_revenue)
VIEW = "view"
SUBSCRIBE = "subscribe"  # a viewer opens a Realtime subscription: realtime:tickets
UNSUBSCRIBE = "unsubscribe"  # a viewer closes it

# Outcomes a model predicts in `expect`, and that replay checks against the response.
VALID = "valid"
ALREADY_SCANNED = "already_scanned"
INVALID = "invalid"
WRONG_EVENT = "wrong_event"
EXITED = "exited"  # a pass-out scan (direction "out") accepted
PROCESSED = "processed"
DUPLICATE = "duplicate"
SUCCEEDED = "succeeded"
DECLINED = "declined"
OK = "ok"

# Target names (DESIGN.md): "<kind>:<name>"; kinds rpc, rest, fn, realtime, stripe.
TARGET_SCAN = "rpc:scan_ticket_atomic"
TARGET_WEBHOOK = "fn:stripe-webhook"
TARGET_PI_CREATE = "stripe:payment_intents.create"
TARGET_PI_CONFIRM = "stripe:payment_intents.confirm"
TARGET_REST_EVENTS = "rest:events"
TARGET_REST_TICKETS = "rest:tickets"
TARGET_REVENUE = "rpc:event_revenue"
TARGET_REALTIME_TICKETS = "realtime:tickets"
TARGET_KINDS = ("rpc", "rest", "fn", "realtime", "stripe")


class Event(NamedTuple):
    """One timestamped domain event of a trace, sorted by (t_us, seq).

    A NamedTuple rather than a frozen dataclass: traces hold millions of events and
    construction cost is the hot path of both the simulator and the readers.
    """

    t_us: int
    seq: int
    kind: str
    actor: str
    target: str | None
    payload: bytes
    after: int | None = None
    expect: str | None = None

    def data(self) -> dict[str, Any]:
        """The payload decoded from msgpack."""
        return unpack_payload(self.payload)


COLUMNS = Event._fields


def pack_payload(obj: Any) -> bytes:
    """Encode a payload (the request's business content, never a secret) as msgpack."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack_payload(raw: bytes) -> Any:
    """Decode a payload written by pack_payload."""
    if not raw:
        return {}
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


def target_kind(target: str) -> str:
    """The kind part of a target name: 'rpc' for 'rpc:scan_ticket_atomic'."""
    kind, sep, name = target.partition(":")
    if not sep or not name or kind not in TARGET_KINDS:
        raise ValueError(
            f"target {target!r}: expected '<kind>:<name>' with kind one of {', '.join(TARGET_KINDS)}"
        )
    return kind


def ticket_code(event_id: int, n: int) -> str:
    """The code of the n-th pre-sold ticket of an event (the stand-in seeds the same codes)."""
    return f"T{event_id}-{n:07d}"


def order_ticket_code(payment_intent_id: str, i: int) -> str:
    """The code of the i-th ticket created by an order for a PaymentIntent."""
    return f"O{payment_intent_id}-{i}"


class TraceError(Exception):
    """A trace file or event is malformed; the message names the file, the offset or row, and why."""
