"""The pacers and the scheduler's pacing loop, without a network: order, batching, fallback.

No timing is asserted (the machine is shared): only what holds however late a wake-up comes, such
as "never before its deadline" and "every event once, in order".
"""

from __future__ import annotations

import asyncio
import time

import pytest
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from judge.resultlog import ResultRow
from replay import pacer as pacer_mod
from replay.builders import BuildContext, Credentials
from replay.pacer import Lead, LoopPacer, TimerfdPacer, due, make_pacer, timerfd_available
from replay.scheduler import ScheduleOptions, Scheduler
from traces.event import TARGET_SCAN, Event, pack_payload

needs_timerfd = pytest.mark.skipif(not timerfd_available(), reason="no timerfd on this system")
PACERS = [pytest.param("timerfd", marks=needs_timerfd), "loop"]


@given(
    st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), max_size=30),
    st.floats(min_value=0, max_value=10, allow_nan=False),
    st.floats(min_value=0, max_value=1, allow_nan=False),
    st.integers(min_value=1, max_value=40),
)
def test_due_counts_the_sorted_prefix_within_the_window(
    ds: list[float], t: float, window: float, limit: int
) -> None:
    ds.sort()
    n = due(ds, t, window, limit)
    assert n == min(limit, sum(d <= t + window for d in ds))
    assert all(d <= t + window for d in ds[:n])


@given(
    st.floats(min_value=0, max_value=0.001, allow_nan=False),
    st.lists(st.floats(min_value=0, max_value=0.01, allow_nan=False), max_size=200),
)
def test_the_lead_stays_between_zero_and_its_most(most: float, lates: list[float]) -> None:
    lead = Lead(most)
    for late in lates:
        s = lead.woke(late)
        assert 0.0 <= s <= most
        assert s == lead.s


@pytest.mark.parametrize("median_us", [0, 7, 23, 49])
def test_the_lead_settles_on_the_median_lateness(median_us: int) -> None:
    # wake-ups late by median +- up to 20 us (never below 0), in an order that repeats: the lead
    # ends within two steps of the median (or of the bound it cannot leave)
    lates = [max(0.0, (median_us + d) * 1e-6) for d in (-20, 15, -5, 20, 0, -15, 5)]
    lead = Lead(0.00005)
    for _ in range(200):
        for late in lates:
            lead.woke(late)
    assert abs(lead.s - sorted(lates)[3]) <= 2.5e-6


def test_the_lead_starts_at_its_most_and_follows_a_busier_machine() -> None:
    lead = Lead(0.00005)
    assert lead.s == 0.00005  # the first wake-ups are never late for want of lead
    for _ in range(100):
        lead.woke(0.0)
    assert lead.s == 0.0
    for _ in range(100):
        lead.woke(0.001)  # far later than the most: the lead grows back to it, no further
    assert lead.s == 0.00005


def drive(kind: str, deadlines: list[float], spin_s: float = 0.002) -> tuple[list, object]:
    """Run a pacer over deadlines (monotonic s); (time of each tick() call, deadline it was for)."""
    calls: list[tuple[float, float]] = []
    todo = list(deadlines)
    asked = [0.0]

    def tick() -> float | None:
        calls.append((time.monotonic(), asked[0]))
        todo.pop(0)
        if not todo:
            return None
        asked[0] = todo[0]
        return todo[0]

    p = make_pacer(kind, spin_s=spin_s)

    async def main() -> None:
        await asyncio.wait_for(p.run(tick), 30)

    uvloop.run(main())
    return calls, p


@pytest.mark.parametrize("kind", PACERS)
def test_pacer_calls_tick_at_each_deadline_in_order_never_early(kind: str) -> None:
    t0 = time.monotonic() + 0.01
    ds = [t0 + i * 0.0007 + (0.00001 if i % 3 else 0) for i in range(60)]
    ds += [ds[-1]] * 5  # due together
    ds += [t0 + 0.05 + i * 0.00002 for i in range(10)]  # closer together than a wake-up's precision
    calls, p = drive(kind, [t0, *ds])
    assert [d for _, d in calls[1:]] == ds  # once per deadline, in order
    assert all(t >= d for t, d in calls)  # never before the deadline it was asked for
    assert 1 <= p.wakeups <= len(ds) + 1


@pytest.mark.parametrize("kind", PACERS)
def test_pacer_behind_schedule_lets_the_loop_run_between_batches(kind: str) -> None:
    # every deadline is past: tick sends a batch of 10 and asks again at once; another callback
    # on the loop must get its turn between batches (answers are read while catching up)
    order: list[str] = []
    left = [30]

    def tick() -> float | None:
        order.append("tick")
        left[0] -= 10
        return time.monotonic() - 1 if left[0] > 0 else None

    async def other() -> None:
        while True:
            order.append("other")
            await asyncio.sleep(0)

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(other())
        await asyncio.sleep(0)
        await asyncio.wait_for(make_pacer(kind).run(tick), 30)
        task.cancel()

    uvloop.run(main())
    ticks = [i for i, x in enumerate(order) if x == "tick"]
    assert len(ticks) == 3
    assert all("other" in order[a:b] for a, b in zip(ticks, ticks[1:], strict=False))


@pytest.mark.parametrize("kind", PACERS)
def test_an_error_in_tick_reaches_run(kind: str) -> None:
    def tick() -> float | None:
        raise ValueError("boom")

    async def main() -> None:
        await asyncio.wait_for(make_pacer(kind).run(tick), 30)

    with pytest.raises(ValueError, match="boom"):
        uvloop.run(main())


def test_without_timerfd_auto_falls_back_to_the_loop_pacer(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(self: object) -> None:
        raise AttributeError("timerfd_create")  # what ctypes says when libc lacks it

    monkeypatch.setattr(pacer_mod._Timerfd, "__init__", missing)
    assert isinstance(make_pacer("auto", spin_s=0.001), LoopPacer)
    assert not timerfd_available()
    with pytest.raises(AttributeError):
        make_pacer("timerfd")


@needs_timerfd
def test_auto_is_timerfd_where_there_is_one() -> None:
    assert isinstance(make_pacer("auto"), TimerfdPacer)


def test_a_bad_pacer_name_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="pacer: expected auto, timerfd or loop, got 'spin'"):
        ScheduleOptions(pacer="spin")
    with pytest.raises(ValueError, match="pacer"):
        make_pacer("spin")
    with pytest.raises(ValueError, match="batch"):
        ScheduleOptions(batch=0)


class FakeTransport:
    """Answers every request at once (on the next loop turn), recording the order of sends."""

    def __init__(self, sched_box: dict) -> None:
        self.sent: list[tuple[bytes, int]] = []
        self.box = sched_box

    def send(self, req, done) -> None:  # noqa: ANN001 - the transport interface
        self.sent.append((req.body, self.box["s"].pacer.wakeups))
        t = time.monotonic()
        asyncio.get_running_loop().call_soon(
            done, t, t, 200, b'{"outcome":"valid"}', len(req.body), 19, None
        )


def scan(t_us: int, seq: int) -> Event:
    p = {"ticket_code": f"P{seq}", "event_id": 1, "gate": "A", "lane": "1", "direction": "in"}
    return Event(t_us, seq, "scan", f"a:{seq % 7}", TARGET_SCAN, pack_payload(p), None, "valid")


def code(body: bytes) -> str:
    """The ticket code in a scan's JSON body."""
    return body.split(b'"p_ticket_code":"')[1].split(b'"')[0].decode()


def replay(events: list[Event], opts: ScheduleOptions) -> tuple[list[ResultRow], FakeTransport]:
    rows: list[ResultRow] = []
    box: dict = {}
    tr = FakeTransport(box)

    async def main() -> None:
        ctx = BuildContext("http://127.0.0.1:9", "test-run", Credentials())
        s = box["s"] = Scheduler(
            ctx, tr, lambda *r: rows.append(ResultRow(*r)), time.monotonic() + 0.01, opts
        )
        await asyncio.wait_for(s.run(iter(events)), 60)

    uvloop.run(main())
    return rows, tr


@pytest.mark.parametrize("kind", PACERS)
@settings(max_examples=15, deadline=None)
@given(gaps=st.lists(st.integers(min_value=0, max_value=1500), min_size=1, max_size=80))
def test_replay_sends_every_event_once_in_order(kind: str, gaps: list[int]) -> None:
    t, events = 0, []
    for i, g in enumerate(gaps, 1):
        t += g
        events.append(scan(t, i))
        if i % 4 == 0:  # untargeted events are read, never sent
            events.append(Event(t, 10_000 + i, "arrive", "a:0", None, b"", None, None))
    rows, tr = replay(events, ScheduleOptions(pacer=kind))
    want = [e for e in events if e.target is not None]
    assert [code(b) for b, _ in tr.sent] == [f"P{e.seq}" for e in want]
    assert sorted(r.seq for r in rows) == [e.seq for e in want]
    by = {r.seq: r for r in rows}
    assert all(by[e.seq].scheduled_us == e.t_us for e in want)  # speed 1: the trace's own times
    assert all(r.sent_us >= r.scheduled_us for r in rows)  # never early


@pytest.mark.parametrize("kind", PACERS)
def test_requests_due_together_go_out_in_batches(kind: str) -> None:
    events = [scan(0, i) for i in range(1, 201)]  # 200 due at the same instant
    rows, tr = replay(events, ScheduleOptions(pacer=kind, batch=64))
    assert len(rows) == 200
    per_wake: dict[int, int] = {}
    for _, w in tr.sent:
        per_wake[w] = per_wake.get(w, 0) + 1
    assert max(per_wake.values()) <= 64 and len(per_wake) >= 4
    assert [code(b) for b, _ in tr.sent] == [f"P{i}" for i in range(1, 201)]


def test_precise_timers_sets_this_threads_timer_slack_and_restores_it() -> None:
    import ctypes
    import ctypes.util

    from replay.pacer import PR_GET_TIMERSLACK, precise_timers

    prctl = ctypes.CDLL(ctypes.util.find_library("c")).prctl
    before = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0)
    with precise_timers(7):
        assert prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0) == 7
    assert prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0) == before
