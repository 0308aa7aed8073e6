"""The open-loop scheduler: send each event at start + t / speed, whatever earlier requests do.

Every deadline is absolute (``start + t_us / speed``): a late send never shifts later ones, so
error does not accumulate. The loop sleeps until ``spin_s`` before a deadline (event-loop timers
are millisecond-grained and wake early or late), then yields in a tight loop until the deadline,
and writes the request's bytes straight to a keep-alive connection. While it has slack it reads
ahead from the event source, so reading the trace does not delay sends.

An event held back by ``max_in_flight`` or a per-target rate cap is recorded as a
``dropped_events`` row, never sent late. An event with ``after`` waits for that request: it is sent
at max(its time, that request's completion), with what the response captured (a PaymentIntent id).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from replay.builders import BuildContext, BuildError, build_request, parse_outcome
from replay.checks import GROUPED_EXPECTS, group_of
from replay.resultlog import DASHBOARD_LOAD, DASHBOARD_TARGET, DROPPED_EVENTS
from traces.event import UNSUBSCRIBE, VIEW, Event, unpack_payload

now = time.monotonic
Sink = Callable[[tuple], None]


def shard_of(actor: str, workers: int) -> int:
    """The worker (0..workers-1) that sends an actor's events: stable across processes and runs."""
    return zlib.crc32(actor.encode()) % workers if workers > 1 else 0


@dataclass(frozen=True, slots=True)
class ScheduleOptions:
    """How to pace a replay."""

    speed: float = 1.0
    max_in_flight: int = 10_000
    rate_caps: Mapping[str, float] = field(default_factory=dict)  # target -> req/s
    spin_s: float = 0.002  # sleep on the loop's timers until this long before a deadline, then spin
    nap_s: float = 0.0  # while spinning, block in naps this long (0: busy spin, the most faithful)
    lookahead: int = 8192  # events read ahead of the clock
    drain_s: float = 60.0  # after the last send, wait at most this long for answers

    def __post_init__(self) -> None:
        if not (self.speed > 0 and math.isfinite(self.speed)):
            raise ValueError(f"speed: expected a number > 0, got {self.speed}")
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight: expected an integer >= 1, got {self.max_in_flight}")
        for t, r in self.rate_caps.items():
            if not r > 0:
                raise ValueError(f"rate cap {t}: expected a rate > 0, got {r}")


class TokenBucket:
    """A per-target rate cap: `rate` tokens per second, bursts up to one second's worth."""

    __slots__ = ("rate", "tokens", "t")

    def __init__(self, rate: float, t: float) -> None:
        self.rate = rate
        self.tokens = max(1.0, rate)
        self.t = t

    def take(self, t: float) -> bool:
        """Take one token at time t; False when the cap is reached."""
        self.tokens = min(max(1.0, self.rate), self.tokens + (t - self.t) * self.rate)
        self.t = t
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(slots=True)
class Stats:
    """Running counts of one scheduler (the engine's Progress computes the live p95 from rows)."""

    scheduled: int = 0
    sent: int = 0
    done: int = 0
    errors: int = 0
    dropped: int = 0


class Scheduler:
    """Send a stream of events at their times through a transport, writing one row per request."""

    def __init__(
        self,
        ctx: BuildContext,
        transport: Any,
        sink: Sink,
        start: float,
        options: ScheduleOptions = ScheduleOptions(),  # noqa: B008 - frozen
        realtime: Any = None,
    ) -> None:
        self.ctx = ctx
        self.transport = transport
        self.sink = sink
        self.start = start
        self.opt = options
        self.k = 1e-6 / options.speed
        self.realtime = realtime
        self.stats = Stats()
        self.in_flight = 0
        self.pending: dict[int, list | None] = {}  # seq in flight -> events waiting on it (after)
        self.captured: dict[int, dict[str, Any]] = {}  # seq -> what its response captured
        # seqs of Stripe calls that failed or were dropped, so their dependents are dropped too; only
        # Stripe calls, whose answers dependents need, so the set stays small on a long trace
        self.failed: set[int] = set()
        self.loads: dict[tuple[str, Any], list] = {}  # dashboard loads being aggregated
        self.caps = {t: TokenBucket(r, start) for t, r in options.rate_caps.items()}
        self._idle = asyncio.Event()
        self._idle.set()
        self._outcome_keys = {}

    def us(self, t: float) -> int:
        """A monotonic time as integer microseconds since the run start."""
        return round((t - self.start) * 1e6)

    async def run(self, events: Iterable[Event]) -> Stats:
        """Send every event with a target at its time; return when all have answered (or drain_s)."""
        it = iter(events)
        buf: deque[Event] = deque()
        exhausted = False
        k = self.k
        start = self.start
        spin = self.opt.spin_s
        lookahead = self.opt.lookahead
        nap = self.opt.nap_s
        nap_min = nap * 1.5 if nap > 0 else float("inf")
        sleep = time.sleep
        late = 0

        def refill(until: float) -> bool:
            for n, ev in enumerate(it, 1):
                if ev.target is not None:
                    buf.append(ev)
                    if len(buf) >= lookahead:
                        return False
                if not n & 63 and now() > until:
                    return False
            return True

        while True:
            if not buf:
                if exhausted:
                    break
                exhausted = refill(now() + 0.001)
                continue
            ev = buf[0]
            deadline = start + ev.t_us * k
            slack = deadline - now()
            if slack > 0.0004 and not exhausted and len(buf) < lookahead:
                # read ahead in short slices of slack, so reading never delays a send
                exhausted = refill(min(deadline - 0.0003, now() + 0.002))
                continue
            if slack > spin:
                await asyncio.sleep(slack - spin)
            if now() < deadline:
                # below the loop's millisecond timers: yield (answers get processed), and nap in
                # slices of `nap_s` so the CPU is not burnt (the target may share this machine)
                while (left := deadline - now()) > 0:
                    if left > nap_min:
                        sleep(min(nap, left - nap_min))
                    await asyncio.sleep(0)
                late = 0
            else:
                late += 1
                if not late & 7:  # behind schedule: still let answers in now and then
                    await asyncio.sleep(0)
            buf.popleft()
            self.dispatch(ev, deadline)
        await self.drain()
        return self.stats

    async def drain(self) -> None:
        """Wait until every request sent has answered, at most drain_s."""
        if self.in_flight:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.opt.drain_s)
        self.flush_loads()

    def dispatch(self, ev: Event, sched: float) -> None:
        """Send (or drop, or park behind its dependency) one event whose time has come."""
        self.stats.scheduled += 1
        target: str = ev.target  # type: ignore[assignment]
        if target.startswith("realtime:"):
            cap = self.caps.get(target)
            if ev.kind != UNSUBSCRIBE and cap is not None and not cap.take(now()):
                self.drop(ev, sched, f"dropped: rate cap {cap.rate:g}/s on {target}")
            elif self.realtime is not None:
                self.realtime.handle(ev, sched)
            return
        if self.in_flight >= self.opt.max_in_flight:
            self.drop(ev, sched, f"dropped: max-in-flight {self.opt.max_in_flight} reached")
            return
        cap = self.caps.get(target)
        if cap is not None and not cap.take(now()):
            self.drop(ev, sched, f"dropped: rate cap {cap.rate:g}/s on {target}")
            return
        captured = None
        if ev.after is not None:
            a = ev.after
            if a in self.pending:  # still in flight: send when it answers
                waiters = self.pending[a]
                if waiters is None:
                    waiters = self.pending[a] = []
                waiters.append((ev, sched))
                self.in_flight += 1  # it holds its place
                return
            if a in self.failed:
                self._failed(ev)
                self.drop(ev, sched, f"dropped: dependency seq {a} failed")
                return
            captured = self.captured.get(a)
        self.send(ev, sched, captured)

    def _failed(self, ev: Event) -> None:
        if ev.target is not None and ev.target.startswith("stripe:"):
            self.failed.add(ev.seq)

    def drop(self, ev: Event, sched: float, why: str) -> None:
        """Record an event not sent (a dropped_events row)."""
        self.stats.dropped += 1
        self._failed(ev)
        t = self.us(now())
        self.sink(
            (
                ev.seq,
                ev.target,
                ev.kind,
                ev.actor,
                self.us(sched),
                t,
                t,
                0,
                why,
                0,
                0,
                None,
                ev.expect,
                DROPPED_EVENTS,
                group_of(ev),
            )
        )

    def send(self, ev: Event, sched: float, captured: dict[str, Any] | None) -> None:
        """Build the request and hand it to the transport now."""
        try:
            req = build_request(self.ctx, ev, int(time.time()), captured)
        except BuildError as e:
            self._failed(ev)
            t = self.us(now())
            self.stats.errors += 1
            self.sink(
                (
                    ev.seq,
                    ev.target,
                    ev.kind,
                    ev.actor,
                    self.us(sched),
                    t,
                    t,
                    0,
                    str(e),
                    0,
                    0,
                    None,
                    ev.expect,
                    None,
                    group_of(ev),
                )
            )
            return
        self.in_flight += 1
        self.stats.sent += 1
        self.pending[ev.seq] = None
        target: str = ev.target  # type: ignore[assignment]
        okey = self._outcome_keys.get(target)
        if okey is None:
            okey = self._outcome_keys[target] = self.ctx.profile.spec(target).outcome
        group = group_of(ev) if ev.expect in GROUPED_EXPECTS else None

        def done(
            sent_t: float,
            done_t: float,
            status: int,
            body: bytes,
            nsent: int,
            nrecv: int,
            error: str | None,
        ) -> None:
            self.in_flight -= 1
            outcome, cap = parse_outcome(target, status, body, okey)
            st = self.stats
            st.done += 1
            failed = status == 0 or status >= 400
            if failed:
                st.errors += 1
                self._failed(ev)
            elif cap:
                self.captured[ev.seq] = cap
            self.sink(
                (ev.seq, target, ev.kind, ev.actor, self.us(sched), self.us(sent_t), self.us(done_t),
                 status, error, nsent, nrecv, outcome, ev.expect, None, group)
            )  # fmt: skip
            if ev.kind == VIEW:
                self._view_done(ev, sched, sent_t, done_t, status, error)
            if self.realtime is not None and not failed:
                self.realtime.note_write(ev, done_t, body)
            waiters = self.pending.pop(ev.seq, None)
            if waiters:
                for wev, wsched in waiters:
                    self.in_flight -= 1
                    if failed:
                        self._failed(wev)
                        self.drop(wev, wsched, f"dropped: dependency seq {ev.seq} failed")
                    else:
                        self.send(wev, wsched, cap)
            if not self.in_flight:
                self._idle.set()

        self.transport.send(req, done)

    def _view_done(
        self, ev: Event, sched: float, sent_t: float, done_t: float, status: int, error: str | None
    ) -> None:
        try:
            load = unpack_payload(ev.payload).get("load")
        except Exception:  # noqa: BLE001 - a view without a readable load id is its own load
            load = None
        key = (ev.actor, load if load is not None else ("seq", ev.seq))
        agg = self.loads.get(key)
        if agg is None:
            self.loads[key] = [ev.seq, sched, sent_t, done_t, status, error]
        else:
            if sched < agg[1]:
                agg[0], agg[1], agg[2] = ev.seq, sched, min(agg[2], sent_t)
            agg[3] = max(agg[3], done_t)
            agg[4] = status if status == 0 or (agg[4] != 0 and status > agg[4]) else agg[4]
            agg[5] = agg[5] or error

    def flush_loads(self) -> None:
        """Write one dashboard_load row per load (the views of one actor sharing a load id)."""
        for (actor, _), (seq, sched, sent_t, done_t, status, error) in self.loads.items():
            self.sink(
                (seq, DASHBOARD_TARGET, VIEW, actor, self.us(sched), self.us(sent_t), self.us(done_t),
                 status, error, 0, 0, None, None, DASHBOARD_LOAD, None)
            )  # fmt: skip
        self.loads.clear()
