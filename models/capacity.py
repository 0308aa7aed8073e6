"""Backend capacity: predicted latencies for a trace's requests, without any network.

Each target has `workers` and a service-time distribution; requests wait FIFO for the first free
worker, like a connection pool. A request whose wait reaches `timeout_s` leaves the queue as an error;
one that starts but finishes after the timeout keeps its worker busy (the server does not know) and
is an error at scheduled + timeout. An event with `after` is sent at max(its time, that one's
completion), as replay sends it.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, NamedTuple

import msgspec
import numpy as np
from msgspec import Meta

from models.distributions import Dist, batched
from traces.config import Positive, Section
from traces.event import Event
from traces.limits import MAX_WORKERS


class Backend(Section, kw_only=False):
    """One endpoint's capacity: parallel workers, service time, and the client's timeout."""

    workers: Annotated[int, Meta(ge=1, extra={"limit": MAX_WORKERS})] = 8
    service: Dist = Dist("exponential", 0.02)
    timeout_s: Positive | None = None


class CapacityConfig(Section):
    """The [capacity] table: backend capacity per target (`default` for the others)."""

    default: Backend = msgspec.field(default_factory=Backend)
    targets: dict[str, Backend] = msgspec.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CapacityParams:
    """Backends per target name; `default` serves targets not listed (None: they are not predicted)."""

    targets: tuple[tuple[str, Backend], ...] = ()
    default: Backend | None = field(default_factory=Backend)
    keep_done_s: float = 3600.0  # completions remembered for `after` (bounded memory)

    def backend(self, target: str) -> Backend | None:
        """The backend serving a target."""
        for name, b in self.targets:
            if name == target:
                return b
        return self.default


class Prediction(NamedTuple):
    """A request's predicted fate; times in microseconds since the trace origin."""

    seq: int
    target: str
    scheduled_us: int  # when it is sent: its t_us, or the completion of its `after`
    start_us: int  # when a worker takes it (== done_us for one that timed out in the queue)
    done_us: int
    ok: bool


class _Server:
    __slots__ = ("free", "service", "timeout_us")

    def __init__(self, b: Backend, rng: np.random.Generator) -> None:
        self.free = [0.0] * b.workers  # a heap of the times each worker is free
        self.service = batched(lambda: b.service.sample(rng, 4096) * 1e6)
        self.timeout_us = None if b.timeout_s is None else b.timeout_s * 1e6


def predict(
    events: Iterable[Event], params: CapacityParams, rng: np.random.Generator
) -> Iterator[Prediction]:
    """Predictions for every event with a target that a backend serves, in the order they are sent."""
    base = int(rng.integers(0, 2**63 - 1))
    servers: dict[str, _Server | None] = {}
    done: dict[int, int] = {}  # seq -> done_us of recent requests
    done_order: list[tuple[int, int]] = []  # (done_us, seq) to forget old completions
    waiting_on: dict[int, list[Event]] = {}  # seq not yet served -> events that come after it
    deferred: list[tuple[int, int, Event]] = []  # (send_us, seq, event) held by their `after`
    unserved: set[int] = set()  # seqs in `deferred` or `waiting_on`
    keep_us = params.keep_done_s * 1e6

    def server(target: str) -> _Server | None:
        s = servers.get(target, False)
        if s is False:
            b = params.backend(target)
            seed = [base, zlib.crc32(target.encode())]
            s = servers[target] = None if b is None else _Server(b, np.random.default_rng(seed))
        return s

    def serve(send_us: int, e: Event) -> Prediction:
        s = server(e.target)
        first = s.free[0]
        start = send_us if first <= send_us else first
        if s.timeout_us is not None and start - send_us >= s.timeout_us:
            end = int(round(send_us + s.timeout_us))
            p = Prediction(e.seq, e.target, send_us, end, end, False)
        else:
            finish = start + next(s.service)
            heapq.heapreplace(s.free, finish)
            ok = s.timeout_us is None or finish - send_us <= s.timeout_us
            end = int(round(finish)) if ok else int(round(send_us + s.timeout_us))
            p = Prediction(e.seq, e.target, send_us, int(round(start)), end, ok)
        done[e.seq] = p.done_us
        heapq.heappush(done_order, (p.done_us, e.seq))
        for later in waiting_on.pop(e.seq, ()):
            push(max(later.t_us, p.done_us), later)
        return p

    def push(send_us: int, e: Event) -> None:
        heapq.heappush(deferred, (send_us, e.seq, e))

    def release(until_us: float) -> Iterator[Prediction]:
        while deferred and deferred[0][0] <= until_us:
            send_us, seq, e = heapq.heappop(deferred)
            unserved.discard(seq)
            yield serve(send_us, e)

    for e in events:
        if e.target is None or server(e.target) is None:
            continue
        yield from release(e.t_us)
        while done_order and done_order[0][0] < e.t_us - keep_us:
            done.pop(heapq.heappop(done_order)[1], None)
        a = e.after
        if a is not None:
            if a in unserved:
                waiting_on.setdefault(a, []).append(e)
                unserved.add(e.seq)
                continue
            d = done.get(a)
            if d is not None and d > e.t_us:
                push(d, e)
                unserved.add(e.seq)
                continue
        yield serve(e.t_us, e)
    yield from release(float("inf"))
