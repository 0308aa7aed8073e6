"""Sinks the models emit into: they stamp t_us from the clock, assign seq, and pack payloads in bulk.

`emit(kind, actor, target, payload, after=None, expect=None) -> seq` is the only thing a model sees.
It appends one tuple; packing (msgpack) and Event construction happen per batch in `flush`.
Models emit only at env.now, so events leave a sink already sorted by (t_us, seq).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import repeat
from typing import Any, Protocol

import msgpack
import numpy as np

from traces.event import Event

BATCH = 65536  # events buffered before they go to the consumer


class Emit(Protocol):
    """What a model calls to record one event; returns the event's seq."""

    def __call__(
        self,
        kind: str,
        actor: str,
        target: str | None,
        payload: dict[str, Any],
        after: int | None = None,
        expect: str | None = None,
    ) -> int: ...


class Clock(Protocol):
    """Anything with a `now` in seconds (a simpy.Environment)."""

    now: float


class StreamSink:
    """Buffers emitted events and hands them, packed, as lists of Event to `consumer` every `batch`."""

    def __init__(
        self, clock: Clock, consumer: Callable[[list[Event]], None], batch: int = BATCH
    ) -> None:
        self._clock = clock
        self._consumer = consumer
        self._batch = batch
        self._buf: list[tuple] = []
        self._base = 0  # seq of the first buffered event
        self.count = 0  # events flushed so far
        self.emit: Emit = self._make_emit()

    def _make_emit(self) -> Emit:
        clock, buf, limit = self._clock, self._buf, self._batch
        append, flush = buf.append, self.flush
        sink = self

        def emit(kind, actor, target, payload, after=None, expect=None):
            n = len(buf)
            append((clock.now, kind, actor, target, payload, after, expect))
            seq = sink._base + n
            if n + 1 >= limit:
                flush()
            return seq

        return emit

    def flush(self) -> None:
        """Pack the buffered events and pass them to the consumer."""
        buf = self._buf
        if not buf:
            return
        events = to_events(buf, self._base)
        self._base += len(buf)
        self.count += len(buf)
        buf.clear()
        self._consumer(events)

    @property
    def emitted(self) -> int:
        """Events emitted so far (flushed or buffered)."""
        return self._base + len(self._buf)


class ListSink(StreamSink):
    """A sink keeping every event in `events` (for tests and small runs)."""

    def __init__(self, clock: Clock, batch: int = 4096) -> None:
        self.events: list[Event] = []
        super().__init__(clock, self.events.extend, batch)


def to_events(rows: list[tuple], first_seq: int) -> list[Event]:
    """Buffered (now_s, kind, actor, target, payload_dict, after, expect) rows as packed Events."""
    now, kinds, actors, targets, payloads, afters, expects = zip(*rows, strict=True)
    # round half to even, as Python's round(now * 1e6), but for the whole batch at once
    t_us = np.rint(np.array(now, dtype=np.float64) * 1e6).astype(np.int64).tolist()
    packer = msgpack.Packer(use_bin_type=True)
    packed = list(map(packer.pack, payloads))
    seqs = range(first_seq, first_seq + len(rows))
    # tuple.__new__ over zip builds the NamedTuples in C (Event's own __new__ is Python code)
    return list(
        map(
            tuple.__new__,
            repeat(Event, len(rows)),
            zip(t_us, seqs, kinds, actors, targets, packed, afters, expects, strict=True),
        )
    )
