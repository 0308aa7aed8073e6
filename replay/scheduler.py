"""The open-loop scheduler: send each event at start + t / speed, whatever earlier requests do.

Every deadline is absolute (``start + t_us / speed``): a late send never shifts later ones, so
error does not accumulate. A pacer (``replay.pacer``) wakes the loop at each deadline: a timerfd
armed in nanoseconds and watched by the event loop, so waiting costs no CPU; the requests due at a
wake-up go out together, written straight to keep-alive connections. While it has slack the loop
reads ahead from the event source and builds the requests it read (``prepare_request``: bytes
ready, a webhook's signature left to the send), so at a deadline only the write is left. The rest
of a sender's work (result batches, collections) runs a step at a time in what slack is left
(replay.slack), so no deadline waits for it.

The loop only paces and dispatches; the policies are collaborators it calls: ``after``
dependencies and Stripe failure propagation (replay.dependencies), realtime events and the writes
viewers watch for (replay.routing), rate caps (TokenBucket), dashboard-load grouping.

An event held back by ``max_in_flight`` or a per-target rate cap is recorded as a
``dropped_events`` row, never sent late. An event with ``after`` waits for that request: it is sent
at max(its time, that request's completion), with what the response captured (a PaymentIntent id).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from judge.checks import GROUPED_EXPECTS, group_in, group_of
from judge.loads import Loads
from judge.resultlog import DASHBOARD_LOAD, DASHBOARD_TARGET, DROPPED_EVENTS
from judge.rows import RowSink
from replay.builders import (
    BuildContext,
    BuildError,
    Prepared,
    Preparer,
    build_request,
    event_payload,
    parse_outcome,
)
from replay.dependencies import Dependencies
from replay.http1 import Request, RequestError
from replay.pacer import due, make_pacer
from replay.routing import RealtimeRoute, is_realtime
from replay.slack import YOUNG, Job, Slack
from traces.event import VIEW, Event, unpack_payload

now = time.monotonic
Sink = RowSink  # a row's columns in judge.rows.SCHEMA order (a RowBuffer's append)
LOW_WATER = 512  # events read ahead below which the loop reads on even without slack
# the loop reads ahead once this many events have gone since it last did (or half its lookahead):
# read and built one at a time, at each wake-up, an event's build costs several times what it
# costs among others (a sender's caches go cold between deadlines)
READ_AHEAD_BATCH = 256
# objects the interpreter tracks for an event read ahead (the Event, its (request, group) pair, the
# Prepared): the young generation they fill is told to the slack (replay.slack)
READ_AHEAD_OBJECTS = 3
SLACK_MARGIN_S = 0.00015  # work in the slack ends this long before the next deadline
# answers nothing waits for are kept and taken together in the slack (Scheduler._answered):
ANSWER_BATCH = 64  # a pass is asked for once this many are kept,
ANSWER_WAIT_S = 0.1  # or once the oldest has waited this long;
ANSWER_STEP = 16  # it takes this many a step
ANSWER_MOST = 1024  # more than this kept (no slack for a pass): taken at once
KEEP_IF_IDLE_S = 0.0005  # ... and an answer is kept only if the next deadline is this far off


def shard_of(actor: str, workers: int) -> int:
    """The worker (0..workers-1) that sends an actor's events: stable across processes and runs."""
    return zlib.crc32(actor.encode()) % workers if workers > 1 else 0


@dataclass(frozen=True, slots=True)
class ScheduleOptions:
    """How to pace a replay."""

    speed: float = 1.0
    max_in_flight: int = 10_000
    rate_caps: Mapping[str, float] = field(default_factory=dict)  # target -> req/s
    pacer: str = "auto"  # "timerfd" (Linux), "loop" (timers, then a spin), "auto": timerfd if any
    lead_s: float = 0.00005  # timerfd: wake this long before a deadline, wait out the rest
    spin_s: float = 0.002  # loop pacer: timers until this long before a deadline, then spin
    batch: int = 64  # at most this many due requests per wake-up (more when behind schedule)
    lookahead: int = 8192  # events read ahead of the clock
    drain_s: float = 60.0  # after the last send, wait at most this long for answers

    def __post_init__(self) -> None:
        if not (self.speed > 0 and math.isfinite(self.speed)):
            raise ValueError(f"speed: expected a number > 0, got {self.speed}")
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight: expected an integer >= 1, got {self.max_in_flight}")
        if self.pacer not in ("auto", "timerfd", "loop"):
            raise ValueError(f"pacer: expected auto, timerfd or loop, got {self.pacer!r}")
        if self.batch < 1:
            raise ValueError(f"batch: expected an integer >= 1, got {self.batch}")
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
    """Running counts of one scheduler (the live p95 comes with each row batch: judge.resultlog)."""

    scheduled: int = 0
    sent: int = 0
    done: int = 0
    errors: int = 0
    dropped: int = 0


def warm_builders(
    prepare: Callable[[Event], tuple], events: Iterable[Event], limit: int = 4096
) -> int:
    """Build (and sign) one request per target among the first `limit` events the way the run
    will (`prepare`: the scheduler's), and throw them away; how many targets.

    A builder's first call can cost milliseconds (lazy imports, a first signature); paid before
    the start, it does not delay the first requests of that kind.
    """
    seen: set[str] = set()
    for n, ev in enumerate(events):
        if n >= limit:
            break
        t = ev.target
        if t is None or t in seen or is_realtime(t):
            continue
        seen.add(t)
        with contextlib.suppress(BuildError, KeyError, ValueError):
            req, _ = prepare(ev)
            if type(req) is Prepared:
                req.wire(int(time.time()))
    return len(seen)


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
        slack: Slack | None = None,
    ) -> None:
        self.ctx = ctx
        self.transport = transport
        self.sink = sink
        self.start = start
        self.opt = options
        self.k = 1e-6 / options.speed
        self.stats = Stats()
        self.slack = slack if slack is not None else Slack()  # result batches, collections
        self.in_flight = 0
        self.deps = Dependencies()
        self.loads = Loads()  # dashboard loads being aggregated (judge.loads: the one rule)
        self.caps = {t: TokenBucket(r, start) for t, r in options.rate_caps.items()}
        self.realtime = RealtimeRoute(realtime, self.caps, self.drop)
        # a transport that writes bytes gets requests built ahead; another builds them at the send
        self.ahead = hasattr(transport, "send_bytes")
        self.preparer = Preparer(ctx)  # requests built ahead, with what is fixed per target kept
        self._idle = asyncio.Event()
        self._idle.set()
        self._outcome_keys: dict[str, str] = {}
        self.answers: deque[tuple] = deque()  # kept to be taken together (see _answered)
        self.next_deadline = 0.0  # the pacer's, while pacing

    def us(self, t: float) -> int:
        """A monotonic time as integer microseconds since the run start."""
        return round((t - self.start) * 1e6)

    async def run(self, events: Iterable[Event]) -> Stats:
        """Send every event with a target at its time; return when all have answered (or drain_s)."""
        it = iter(events)
        buf: deque[Event] = deque()  # events read ahead, in trace order
        dl: deque[float] = deque()  # their deadlines
        pre: deque[tuple | None] = deque()  # their requests, built ahead (None: built at the send)
        exhausted = False
        k = self.k
        start = self.start
        lookahead = self.opt.lookahead
        read_at = lookahead - max(1, min(READ_AHEAD_BATCH, lookahead // 2))  # read on at this many
        batch = self.opt.batch
        dispatch = self.dispatch
        prepare = self.prepare if self.ahead else None
        pop, dpop, ppop = buf.popleft, dl.popleft, pre.popleft
        slack = self.slack
        jobs = slack.jobs
        gc_count = gc.get_count
        answers, want, answer_steps = self.answers, slack.want, self._answer_steps

        def refill(until: float) -> bool:
            n0 = len(buf)
            exhausted = read(until)
            slack.fresh += READ_AHEAD_OBJECTS * (len(buf) - n0)  # young: see replay.slack
            return exhausted

        def read(until: float) -> bool:
            append, dappend, pappend = buf.append, dl.append, pre.append
            for n, ev in enumerate(it, 1):
                if ev.target is not None:
                    append(ev)
                    dappend(start + ev.t_us * k)
                    # built now, in the slack; an `after` event needs its dependency's answer first
                    ahead = ev.after is None and prepare is not None and not is_realtime(ev.target)
                    pappend(prepare(ev, None) if ahead else None)
                    if len(buf) >= lookahead:
                        return False
                if not n & 7 and now() > until:
                    return False
            return True

        def tick() -> float | None:
            # send what is due (at most `batch`: behind schedule, answers get in between batches),
            # then read ahead in a short slice of the slack, and say when to come back
            nonlocal exhausted
            while not buf:
                if exhausted:
                    return None
                exhausted = refill(now() + 0.001)
            for _ in range(due(dl, now(), 0.0, batch)):
                dispatch(pop(), dpop(), ppop())
            if buf:
                d = dl[0]
                if not exhausted and len(buf) <= read_at:
                    t = now()
                    if d - t > 0.0004:
                        exhausted = refill(min(d - 0.0003, t + 0.002))
                    elif len(buf) < LOW_WATER:  # no slack (a high rate): top up a little at a time
                        exhausted = refill(t + 0.0001)
            elif exhausted:
                return None
            else:  # reading is behind (many events without a target): back at once, and the
                d = now()  # slack's overdue work still gets its steps below
            if answers and answers[0][5] < d - ANSWER_WAIT_S:  # [5]: when it came
                want("answers", answer_steps)
            if jobs or gc_count()[0] + slack.fresh >= YOUNG:  # the rest, in the slack left
                slack.run(d - SLACK_MARGIN_S)
            self.next_deadline = d
            return d

        # before the first deadline: read ahead, and pay each builder's first-call costs
        exhausted = refill(max(now() + 0.001, start - 0.05))
        warm_builders(lambda ev: self.prepare(ev, None), buf)
        self.pacer = make_pacer(self.opt.pacer, self.opt.spin_s, self.opt.lead_s)
        slack.held = lambda: READ_AHEAD_OBJECTS * len(buf)
        slack.start()
        try:
            await self.pacer.run(tick)
        finally:
            slack.finish()
            self.take_answers()
        await self.drain()
        return self.stats

    async def drain(self) -> None:
        """Wait until every request sent has answered, at most drain_s."""
        if self.in_flight:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.opt.drain_s)
        self.flush_loads()

    def dispatch(self, ev: Event, sched: float, built: tuple | None = None) -> None:
        """Send (or drop, or park behind its dependency) one event whose time has come.

        `built` is what prepare() made of it ahead of time (None: it is built now).
        """
        self.stats.scheduled += 1
        target: str = ev.target  # type: ignore[assignment]
        if is_realtime(target):
            self.realtime.dispatch(ev, sched)
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
            self.take_answers()  # the dependency's answer may be among those kept
            deps = self.deps
            if deps.park(ev, sched):  # still in flight: send when it answers
                self.in_flight += 1  # it holds its place
                return
            if deps.broken(ev):
                self.drop(ev, sched, f"dropped: dependency seq {ev.after} failed")
                return
            captured = deps.captured_for(ev)
        self.send(ev, sched, captured, built)

    def prepare(self, ev: Event, captured: dict[str, Any] | None) -> tuple:
        """(request, check group) of an event: Prepared bytes (or a Request for a transport that
        encodes its own, built now), or the BuildError or RequestError that stops it."""
        try:
            payload = event_payload(ev)  # decoded once: for the request and its check group
            group = group_in(ev.expect, payload) if ev.expect in GROUPED_EXPECTS else None
            if not self.ahead:
                return build_request(self.ctx, ev, int(time.time()), captured, payload), group
            return self.preparer.prepare(ev, captured, payload), group
        except (BuildError, RequestError) as e:
            return e, group_of(ev)

    def drop(self, ev: Event, sched: float, why: str) -> None:
        """Record an event not sent (a dropped_events row)."""
        self.take_answers()  # rows in the order things happened
        self.stats.dropped += 1
        self.deps.fail(ev)
        t = self.us(now())
        self.sink(
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

    def send(
        self, ev: Event, sched: float, captured: dict[str, Any] | None, built: tuple | None = None
    ) -> None:
        """Hand the event's request (built ahead, or now) to the transport now."""
        req, group = self.prepare(ev, captured) if built is None else built
        if isinstance(req, BuildError):
            e = req
            self.take_answers()  # rows in the order things happened
            self.deps.fail(ev)
            t = self.us(now())
            self.stats.errors += 1
            self.sink(ev.seq, ev.target, ev.kind, ev.actor, self.us(sched), t, t, 0, str(e), 0, 0,
                      None, ev.expect, None, group)  # fmt: skip
            return
        self.in_flight += 1
        self.stats.sent += 1
        self.deps.started(ev.seq)
        target: str = ev.target  # type: ignore[assignment]
        okey = self._outcome_keys.get(target)
        if okey is None:
            okey = self._outcome_keys[target] = self.ctx.profile.spec(target).outcome
        # what the answer is matched with: a partial of one method (two objects per request, where
        # a closure makes a function and a cell for each variable it keeps)
        done = partial(self._answered, ev, sched, okey, group)
        if type(req) is Prepared:
            # the signature of a webhook, if any, made now: its timestamp is the send's
            data = req.data if not req.signed else req.wire(int(time.time()))
            self.transport.send_bytes(req.origin, data, done)
        elif type(req) is Request:
            self.transport.send(req, done)
        else:  # RequestError: as the transport answers a head it cannot write, at once
            t = now()
            done(t, t, 0, b"", 0, 0, str(req))

    def _answered(self, *answer: Any) -> None:
        """A request's answer: the transport's done callback, bound to its event by send.

        `answer` is send's (event, schedule, outcome key, check group), then the transport's
        (sent_t, done_t, status, body, bytes sent, bytes received, error): its times are taken by
        the transport as the answer comes, whenever the rest is done. While pacing, an answer that
        no dependent waits for and no viewer may be shown is kept, and taken with the others in
        the slack (ANSWER_BATCH at a time, or after ANSWER_WAIT_S), if the loop is to sleep
        before its next deadline (KEEP_IF_IDLE_S): a sender woken from that sleep has its caches
        gone cold, and the work of taking an answer (its outcome, its row) costs several times
        what it costs in a batch (5% of the sender's CPU at 1,000 requests/s, A/B). At a
        rate with no such sleep, passes would only take slack the deadlines need. Any other
        answer is taken at once, after those kept, so the rows stay in the order the answers
        came and a dependent always finds its dependency's answer.
        """
        self.in_flight -= 1
        ev = answer[0]
        answers = self.answers
        if (
            self.slack.paced
            and self.next_deadline - answer[5] > KEEP_IF_IDLE_S  # [5]: when it came
            and len(answers) < ANSWER_MOST
            and not self.deps.waited_for(ev.seq)
            and not self.realtime.watching()
        ):
            answers.append(answer)
            if len(answers) >= ANSWER_BATCH:
                self.slack.want("answers", self._answer_steps)
        else:
            if answers:
                self.take_answers()
            self._answer(*answer)
        if not self.in_flight:
            self._idle.set()

    def take_answers(self) -> None:
        """Take every answer kept, in order."""
        answers, answer = self.answers, self._answer
        while answers:
            answer(*answers.popleft())

    def _answer_steps(self) -> Job:
        """The answers kept, taken ANSWER_STEP a step (a job in the slack)."""
        answers, answer = self.answers, self._answer
        while answers:
            for _ in range(min(ANSWER_STEP, len(answers))):
                answer(*answers.popleft())
            yield

    def _answer(self, ev: Event, sched: float, okey: str, group: str | None, sent_t: float,
                done_t: float, status: int, body: bytes, nsent: int, nrecv: int,
                error: str | None) -> None:  # fmt: skip
        """Take an answer: its outcome, its row, its dependents (sent now, or dropped)."""
        target: str = ev.target  # type: ignore[assignment]
        expect = ev.expect
        outcome, cap = parse_outcome(target, status, body, okey, expect)
        st = self.stats
        st.done += 1
        failed = status == 0 or status >= 400
        if failed:
            st.errors += 1
        waiters = self.deps.answered(ev, failed, cap)
        start = self.start  # times in the row: integer microseconds since the run start (us())
        self.sink(ev.seq, target, ev.kind, ev.actor, round((sched - start) * 1e6),
                  round((sent_t - start) * 1e6), round((done_t - start) * 1e6), status, error, nsent,
                  nrecv, outcome, expect, None, group)  # fmt: skip
        if ev.kind == VIEW:
            self._view_done(ev, sched, sent_t, done_t, status, error)
        if not failed and self.realtime.realtime is not None:
            self.realtime.note_write(ev, done_t, body)
        if waiters:
            for wev, wsched in waiters:
                self.in_flight -= 1
                if failed:
                    self.drop(wev, wsched, f"dropped: dependency seq {ev.seq} failed")
                else:
                    # its schedule is max(its time, the dependency's completion): waiting for
                    # the target's answer is the target's latency, not the sender's lag
                    self.send(wev, max(wsched, done_t), cap)

    def _view_done(
        self, ev: Event, sched: float, sent_t: float, done_t: float, status: int, error: str | None
    ) -> None:
        try:
            load = unpack_payload(ev.payload).get("load")
        except Exception:  # noqa: BLE001 - a view without a readable load id is its own load
            load = None
        self.loads.add(ev.actor, load, ev.seq, sched, sent_t, done_t, status, error)

    def flush_loads(self) -> None:
        """Write one dashboard_load row per load (judge.loads: the views of one actor sharing a
        load id)."""
        us = self.us
        for ld in self.loads.flush():
            self.sink(ld.seq, DASHBOARD_TARGET, VIEW, ld.actor, us(ld.scheduled), us(ld.sent),
                      us(ld.done), ld.status, ld.error, 0, 0, None, None, DASHBOARD_LOAD, None)  # fmt: skip
