"""The venue event: the [event] table of a scenario, and what the models know of it."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from traces.config import NonNegative, Positive, Section
from traces.limits import MAX_EVENT_ID, MAX_PRICE_CENTS, MAX_TICKETS

EventId = Annotated[int, Meta(ge=1, extra={"limit": MAX_EVENT_ID})]
Tickets = Annotated[int, Meta(ge=0, extra={"limit": MAX_TICKETS})]
Price = Annotated[int, Meta(ge=0, extra={"limit": MAX_PRICE_CENTS})]


class EventParams(Section):
    """The venue event being sold and scanned, and another event whose tickets are wrong here."""

    id: EventId = 1
    name: str = "Stadium match"
    capacity: Tickets = 1000
    presold: Tickets = 1000  # tickets sold before t = 0: codes ticket_code(id, 0..presold-1)
    price_cents: Price = 8500
    currency: str = "usd"
    start_s: NonNegative = 0.0  # when the event starts, seconds after the origin
    length_s: Positive = 7200.0  # how long it lasts; the crowd leaves after
    allow_reentry: bool = False
    other_event_id: EventId = 2
    other_presold: Annotated[int, Meta(ge=1, extra={"limit": MAX_TICKETS})] = 100

    @property
    def end_s(self) -> float:
        """When the event ends (the crowd leaves after)."""
        return self.start_s + self.length_s


DEFAULT_EVENT = EventParams()  # what a model runs for when it is given no event
