"""The gate: lanes scanning tickets, with queues, a ticket mix, scanner errors, pass-outs and departures.

The model predicts every scan's outcome from its own state at the moment it emits the scan, the way
an atomic `scan_ticket_atomic` would answer in that order: the first copy of a shared screenshot is
admitted and later copies are `already_scanned`; a pass-out (`out`) marks the ticket outside and the
next `in` scan of it is a re-entry. So no ticket is ever admitted twice by the model's own expectations.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import Generator
from typing import Annotated, Literal

import numpy as np
import simpy
from msgspec import Meta, field

from models.distributions import Dist, uniforms
from models.sink import Emit
from models.venue import DEFAULT_EVENT, EventParams
from traces.config import NonNegative, Probability, Section
from traces.event import (
    ALREADY_SCANNED,
    ARRIVE,
    EXITED,
    INVALID,
    LEAVE,
    SCAN,
    TARGET_SCAN,
    VALID,
    WRONG_EVENT,
    ticket_code,
)
from traces.limits import MAX_LANES

GOLDEN = 0.6180339887498949
# ticket kinds an attendee can hold
HOLDER, SCREENSHOT, FORGED, OTHER_EVENT = range(4)
# ticket states (one byte per pre-sold ticket)
NEVER, INSIDE, OUTSIDE, LEFT = range(4)


Lanes = Annotated[int, Meta(ge=1, extra={"limit": MAX_LANES})]


class TicketMix(Section):
    """Weights of the tickets attendees hold."""

    valid: NonNegative = 0.95
    screenshot: NonNegative = 0.02  # a copy of someone's ticket: the first copy gets in
    invalid: NonNegative = 0.02
    wrong_event: NonNegative = 0.01

    @property
    def weights(self) -> tuple[float, float, float, float]:
        """(valid, screenshot, invalid, wrong_event)."""
        return (self.valid, self.screenshot, self.invalid, self.wrong_event)


class GateParams(Section):
    """The [gate] table: lanes, queueing, scan times, ticket mix, scanner errors, re-entry, departures."""

    name: str = "main"
    lanes: Lanes = 4
    # "shortest": a queue per lane, join the shortest; "shared": one queue
    queue: Literal["shortest", "shared"] = "shortest"
    open_spread_s: NonNegative = 0.0  # lanes open one by one over this many seconds after opening
    service: Dist = Dist("lognormal", 3.5, 1.5)
    tickets: TicketMix = field(default_factory=TicketMix)
    screenshot_gap_s: NonNegative = 60.0  # a screenshot copies a ticket held at least this earlier
    rescan_prob: Probability = 0.0  # a scanner error: the scan is repeated after rescan_delay
    rescan_delay: Dist = Dist("uniform", low=2.0, high=6.0)
    reentry_prob: Probability = 0.0  # after admission, the attendee passes out and comes back
    passout_after: Dist = Dist("exponential", 1800.0)
    away: Dist = Dist("exponential", 600.0)
    leave_after: Dist = Dist("exponential", 900.0)
    departures: bool = True  # a leave per attendee after the event ends


LEAVE_RESOLUTION_S = 1.0  # departure times are rounded up to this (0: exact)


class Gate:
    """A gate whose lanes are SimPy processes; arrivals hand it groups through `join`."""

    def __init__(
        self,
        env: simpy.Environment,
        params: GateParams,
        rng: np.random.Generator,
        emit: Emit,
        event: EventParams = DEFAULT_EVENT,
        open_s: float = 0.0,
    ):
        """`event` holds the tickets scanned here; the lanes start scanning at `open_s`."""
        self.env, self.p, self.emit = env, params, emit
        self.event_id, self.presold = event.id, event.presold
        self.wrong_event_id, self.wrong_presold = event.other_event_id, event.other_presold
        self.allow_reentry = event.allow_reentry
        self.end_s = event.end_s if params.departures else None
        mix_rng, svc_rng, u_rng, rescan_rng, out_rng, away_rng, leave_rng, open_rng = rng.spawn(8)
        self._opens = (open_s + open_rng.uniform(0, params.open_spread_s, params.lanes)).tolist()
        self._offset = float(mix_rng.random())
        self._cdf = np.cumsum(
            np.asarray(params.tickets.weights, dtype=float) / sum(params.tickets.weights)
        ).tolist()
        self._service = params.service.stream(svc_rng)
        self._u = uniforms(u_rng)
        self._rescan_delay = params.rescan_delay.stream(rescan_rng)
        self._passout_after = params.passout_after.stream(out_rng)
        self._away = params.away.stream(away_rng)
        self._leave_rng = leave_rng
        self._state = bytearray(event.presold)
        self._holder = array("q", [-1]) * event.presold  # attendee admitted with each ticket
        self._holder_t = array("d")  # arrival time of the i-th ticket holder (holds ticket i)
        self._n = 0  # attendees seen
        self._spare = 0  # unheld tickets handed to screenshots with nothing to copy yet
        self._forged = 0
        n_queues = params.lanes if params.queue == "shortest" else 1
        self.queues: list[deque] = [deque() for _ in range(n_queues)]
        self.loads = [0] * params.lanes  # in queue + in service, per lane (shortest mode)
        # lanes by load, for join-the-shortest-queue in O(1): _by_load[k] = lanes with load k
        self._by_load: list[dict[int, None]] = [dict.fromkeys(range(params.lanes))]
        self._min_load = 0
        self._wake: list[simpy.Event | None] = [None] * params.lanes  # set while a lane is idle
        self._idle: deque[int] = deque()  # idle lanes in the order they became idle (shared mode)
        self.procs = [env.process(self._lane(i)) for i in range(params.lanes)]
        if self.end_s is not None:
            env.process(self._departures())

    # -- tickets -----------------------------------------------------------------------------------
    def _ticket(self) -> tuple[int, str]:
        """(ticket index or -1, code) for the next attendee, following the mix over any run of them.

        The kinds come from a golden-ratio (Weyl) sequence with a random offset: over any n attendees
        each kind appears within about one of its share, so even a 10-scan burst has its mix.
        """
        p, now = self.p, self.env.now
        u = (self._offset + self._n * GOLDEN) % 1.0
        self._n += 1
        cdf = self._cdf
        kind = 0
        while kind < 3 and u >= cdf[kind]:
            kind += 1
        if kind == SCREENSHOT:
            m = bisect_right(self._holder_t, now - p.screenshot_gap_s)
            if m:
                i = int(next(self._u) * m)
                return i, ticket_code(self.event_id, i)
            i = self.presold - 1 - self._spare  # a ticket no attendee holds (yet): a no-show's
            self._spare += 1
            if i >= len(self._holder_t):
                return i, ticket_code(self.event_id, i)
            kind = FORGED
        if kind == HOLDER:
            i = len(self._holder_t)
            if i < self.presold - self._spare:
                self._holder_t.append(now)
                return i, ticket_code(self.event_id, i)
            kind = FORGED  # more attendees than tickets: the extra ones hold forgeries
        if kind == OTHER_EVENT:
            return -2, ticket_code(self.wrong_event_id, int(next(self._u) * self.wrong_presold))
        self._forged += 1
        return -1, f"X{self.event_id}-{self._forged:07d}"

    def join(self, actors: list[str]) -> None:
        """Attendees (one group) reach the gate and queue, each with their ticket."""
        for actor in actors:
            idx, code = self._ticket()
            self._enqueue((actor, idx, code))

    def _enqueue(self, item: tuple) -> None:
        if self.p.queue == "shortest":
            by_load, k = self._by_load, self._min_load
            while not by_load[k]:
                k += 1
            self._min_load = k
            lane = next(iter(by_load[k]))  # the lane that reached this load first
            del by_load[k][lane]
            if k + 1 == len(by_load):
                by_load.append({})
            by_load[k + 1][lane] = None
            self.loads[lane] = k + 1
            self.queues[lane].append(item)
            ev = self._wake[lane]
            if ev is not None:
                self._wake[lane] = None
                ev.succeed()
        else:
            self.queues[0].append(item)
            if self._idle:
                ev = self._wake[self._idle.popleft()]
                ev.succeed()

    # -- lanes -------------------------------------------------------------------------------------
    def _outcome_in(self, idx: int) -> str:
        if idx == -1:
            return INVALID
        if idx == -2:
            return WRONG_EVENT
        st = self._state
        s = st[idx]
        if s == NEVER or (s == OUTSIDE and self.allow_reentry):
            st[idx] = INSIDE
            return VALID
        return ALREADY_SCANNED

    def _lane(self, lane: int) -> Generator[simpy.Event, None, None]:
        env, p, emit = self.env, self.p, self.emit
        q = self.queues[lane if p.queue == "shortest" else 0]
        lane_name = str(lane + 1)
        service, u = self._service, self._u
        if self._opens[lane] > env.now:
            yield env.timeout(self._opens[lane] - env.now)
        while True:
            if not q:
                self._wake[lane] = ev = env.event()
                if p.queue != "shortest":
                    self._idle.append(lane)
                yield ev
                continue
            actor, idx, code = q.popleft()
            payload = {
                "ticket_code": code,
                "event_id": self.event_id,
                "gate": p.name,
                "lane": lane_name,
                "direction": "in",
            }
            outcome = self._outcome_in(idx)
            emit(SCAN, actor, TARGET_SCAN, payload, None, outcome)
            if p.rescan_prob and next(u) < p.rescan_prob:
                # the scanner showed an error although the request went through: staff scan again
                yield env.timeout(next(self._rescan_delay))
                emit(SCAN, actor, TARGET_SCAN, payload, None, self._outcome_in(idx))
            yield env.timeout(next(service))
            if p.queue == "shortest":
                k = self.loads[lane]
                del self._by_load[k][lane]
                self._by_load[k - 1][lane] = None
                self.loads[lane] = k - 1
                if k - 1 < self._min_load:
                    self._min_load = k - 1
            if outcome == VALID:
                self._holder[idx] = int(actor[9:])
                if self.allow_reentry and p.reentry_prob and next(u) < p.reentry_prob:
                    env.process(self._passout(actor, idx, lane_name))
            else:
                emit(LEAVE, actor, None, {"gate": p.name, "reason": "turned_away"})

    def _passout(self, actor: str, idx: int, lane: str) -> Generator[simpy.Event, None, None]:
        env, p = self.env, self.p
        out_after, away = next(self._passout_after), next(self._away)
        if self.end_s is not None and env.now + out_after + away >= self.end_s:
            return
        yield env.timeout(out_after)
        if self._state[idx] != INSIDE:
            return
        self._state[idx] = OUTSIDE
        payload = {
            "ticket_code": ticket_code(self.event_id, idx),
            "event_id": self.event_id,
            "gate": p.name,
            "lane": lane,
            "direction": "out",
        }
        self.emit(SCAN, actor, TARGET_SCAN, payload, None, EXITED)
        yield env.timeout(away)
        self.emit(ARRIVE, actor, None, {"gate": p.name, "reentry": True})
        self._enqueue((actor, idx, ticket_code(self.event_id, idx)))

    def _departures(self) -> Generator[simpy.Event, None, None]:
        env, p = self.env, self.p
        yield env.timeout(max(0.0, self.end_s - env.now))
        state = np.frombuffer(bytes(self._state), dtype=np.uint8)
        inside = np.flatnonzero(state == INSIDE)
        # who leaves when: departure offsets, stamped at leave_resolution_s (leaves are not replayed,
        # and a tick per second instead of a timeout per attendee keeps the model fast)
        res = LEAVE_RESOLUTION_S
        offsets = np.sort(p.leave_after.sample(self._leave_rng, len(inside)))
        if res > 0:
            offsets = np.ceil(offsets / res) * res
        order = self._leave_rng.permutation(len(inside))
        start = env.now
        holder, st = self._holder, self._state
        payload = {"gate": p.name, "reason": "event_end"}
        for idx, off in zip(inside[order].tolist(), offsets.tolist(), strict=True):
            wait = start + off - env.now
            if wait > 0:
                yield env.timeout(wait)
            if st[idx] != INSIDE:
                continue
            st[idx] = LEFT
            self.emit(LEAVE, f"attendee:{holder[idx]}", None, payload)
