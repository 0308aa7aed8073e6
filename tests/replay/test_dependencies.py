"""The scheduler's collaborators alone: after-dependencies and Stripe failure propagation, realtime
routing under rate caps (no network, no clock)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from replay.dependencies import Dependencies
from replay.routing import RealtimeRoute, is_realtime
from replay.scheduler import TokenBucket
from traces.event import (
    SUBSCRIBE,
    TARGET_PI_CONFIRM,
    TARGET_PI_CREATE,
    TARGET_SCAN,
    UNSUBSCRIBE,
    Event,
)


def create(seq: int) -> Event:
    return Event(0, seq, "checkout", "b", TARGET_PI_CREATE, b"", None, None)


def confirm(seq: int, after: int) -> Event:
    return Event(0, seq, "confirm", "b", TARGET_PI_CONFIRM, b"", after, None)


def test_a_dependent_waits_while_its_dependency_is_in_flight_then_gets_its_capture() -> None:
    d = Dependencies()
    d.started(1)
    assert d.park(confirm(2, 1), 5.0) and d.park(confirm(3, 1), 6.0)
    waiters = d.answered(create(1), False, {"id": "pi_1"})
    assert [(e.seq, s) for e, s in waiters] == [(2, 5.0), (3, 6.0)]
    assert not d.park(confirm(4, 1), 7.0)  # answered: nothing to wait for
    assert d.captured_for(confirm(4, 1)) == {"id": "pi_1"} and not d.broken(confirm(4, 1))


@given(st.lists(st.booleans(), min_size=1, max_size=30))
def test_a_failed_stripe_call_breaks_its_dependents_and_theirs(fails: list[bool]) -> None:
    # a chain 1 <- 2 <- 3 ...: each answered (failed or not) before the next is dispatched; once
    # one fails, every later one is dropped (and, dropped, fails its own dependents)
    d = Dependencies()
    broken = False
    for i, fail in enumerate(fails, 1):
        e = create(1) if i == 1 else confirm(i, i - 1)
        assert d.broken(e) is broken
        if broken:
            d.fail(e)  # what the scheduler's drop() does
            continue
        d.started(i)
        assert d.answered(e, fail, None if fail else {"id": f"pi_{i}"}) is None
        broken = fail
    assert d.pending == {}


def test_only_stripe_failures_are_remembered() -> None:
    d = Dependencies()
    d.fail(Event(0, 1, "scan", "a", TARGET_SCAN, b"", None, None))
    d.fail(create(2))
    assert d.failed == {2}


def test_realtime_events_go_to_the_client_under_their_cap_unsubscribes_never_capped() -> None:
    handled, dropped = [], []

    class Client:
        def handle(self, ev: Event, sched: float) -> None:
            handled.append(ev.seq)

        def note_write(self, ev: Event, done_t: float, body: bytes) -> None:
            handled.append(("write", ev.seq))

    target = "realtime:tickets"
    caps = {target: TokenBucket(2, 0.0)}
    route = RealtimeRoute(Client(), caps, lambda ev, s, why: dropped.append((ev.seq, why)))
    for seq in range(1, 5):
        route.dispatch(Event(0, seq, SUBSCRIBE, f"v:{seq}", target, b"", None, None), 0.0)
    route.dispatch(Event(0, 9, UNSUBSCRIBE, "v:4", target, b"", None, None), 0.0)
    route.note_write(Event(0, 10, "scan", "a", TARGET_SCAN, b"", None, None), 0.0, b"{}")
    assert handled[:2] == [1, 2] and 9 in handled and ("write", 10) in handled
    assert [s for s, _ in dropped] == [3, 4] and all(
        "rate cap 2/s on realtime:tickets" in w for _, w in dropped
    )
    assert is_realtime(target) and not is_realtime(TARGET_SCAN)
    RealtimeRoute(None, {}, lambda *a: None).note_write(
        Event(0, 1, "scan", "a", TARGET_SCAN, b"", None, None), 0.0, b""
    )
