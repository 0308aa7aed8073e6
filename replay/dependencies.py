"""Events that wait for another request's answer (``after``), and Stripe failure propagation.

An event with ``after`` is sent when that request answers, with what its response captured (the
PaymentIntent id a create returned); if that request failed, or was dropped, or could not be
built, the dependent is dropped instead (and, being a Stripe call, fails its own dependents). Only
Stripe calls are remembered as failed: their answers are what dependents need, so the set stays
small on a long trace. The scheduler calls this; it holds no I/O and no clock.
"""

from __future__ import annotations

from typing import Any

from traces.event import Event

STRIPE = "stripe:"


class Dependencies:
    """Which requests are in flight (and who waits for them), what they captured, which failed."""

    __slots__ = ("pending", "captured", "failed")

    def __init__(self) -> None:
        self.pending: dict[
            int, list | None
        ] = {}  # seq in flight -> (event, schedule) waiting on it
        self.captured: dict[int, dict[str, Any]] = {}  # seq -> what its response captured
        self.failed: set[int] = set()  # seqs of Stripe calls that failed or were dropped

    def started(self, seq: int) -> None:
        """A request is in flight: events `after` it wait for its answer."""
        self.pending[seq] = None

    def waited_for(self, seq: int) -> bool:
        """Whether an event is parked until `seq` answers."""
        return self.pending.get(seq) is not None

    def park(self, ev: Event, sched: float) -> bool:
        """Hold `ev` until its dependency answers, if that is still in flight; whether it was held."""
        a = ev.after
        if a not in self.pending:
            return False
        waiters = self.pending[a]
        if waiters is None:
            waiters = self.pending[a] = []
        waiters.append((ev, sched))
        return True

    def broken(self, ev: Event) -> bool:
        """Whether `ev`'s dependency failed (so it is dropped, not sent)."""
        return ev.after in self.failed

    def captured_for(self, ev: Event) -> dict[str, Any] | None:
        """What `ev`'s dependency's answer captured (None if nothing)."""
        return self.captured.get(ev.after)  # type: ignore[arg-type]

    def fail(self, ev: Event) -> None:
        """`ev` was not answered well (failed, dropped, unbuildable): a Stripe call's dependents drop."""
        if ev.target is not None and ev.target.startswith(STRIPE):
            self.failed.add(ev.seq)

    def answered(self, ev: Event, failed: bool, cap: dict[str, Any] | None) -> list | None:
        """`ev`'s request answered: note its failure or capture; the (event, schedule) that waited."""
        if failed:
            self.fail(ev)
        elif cap:
            self.captured[ev.seq] = cap
        return self.pending.pop(ev.seq, None)
