"""Realtime routing: the scheduler hands realtime events and completed writes to the viewers here.

A ``realtime:`` event (subscribe, unsubscribe) goes to the realtime client (replay.realtime) under
its target's rate cap (an unsubscribe is never capped: it closes what a subscribe opened); a write
that answered well is noted, so the viewers can match the changes they are pushed with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from traces.event import UNSUBSCRIBE, Event

now = time.monotonic
REALTIME = "realtime:"


class Cap(Protocol):
    """A rate cap (replay.scheduler.TokenBucket)."""

    rate: float

    def take(self, t: float) -> bool: ...


def is_realtime(target: str) -> bool:
    """Whether a target is a realtime channel (not an HTTP request)."""
    return target.startswith(REALTIME)


class RealtimeRoute:
    """Realtime events to the realtime client, under their caps; good writes noted for matching."""

    __slots__ = ("realtime", "caps", "drop")

    def __init__(
        self,
        realtime: Any,
        caps: Mapping[str, Cap],
        drop: Callable[[Event, float, str], None],
    ) -> None:
        self.realtime = realtime  # replay.realtime.Realtime, or None (no viewers watched)
        self.caps = caps
        self.drop = drop  # records a dropped_events row

    def dispatch(self, ev: Event, sched: float) -> None:
        """A realtime event whose time has come: handled, or dropped by its target's rate cap."""
        target: str = ev.target  # type: ignore[assignment]
        cap = self.caps.get(target)
        if ev.kind != UNSUBSCRIBE and cap is not None and not cap.take(now()):
            self.drop(ev, sched, f"dropped: rate cap {cap.rate:g}/s on {target}")
        elif self.realtime is not None:
            self.realtime.handle(ev, sched)

    def watching(self) -> bool:
        """Whether any viewer is open (a good write may be what it is shown next)."""
        return self.realtime is not None and self.realtime.watching()

    def note_write(self, ev: Event, done_t: float, body: bytes) -> None:
        """A request that answered well: the viewers may be told of its change."""
        if self.realtime is not None:
            self.realtime.note_write(ev, done_t, body)
