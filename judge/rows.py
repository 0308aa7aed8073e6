"""The result row's columns and measurement names, and the buffer rows are appended to.

replay/ writes these rows for every request it sends (judge.resultlog documents each column);
sim/ predicts the same rows through the backend capacity model, so one set of metrics and
thresholds judges both. It lives here because both may import traces/ and neither the other.

A row is a record of the columns below, never a positional tuple kept around: a sender appends it
to a :class:`RowBuffer` (one call, each value to its column's list) and takes the buffer as an
Arrow record batch of :data:`SCHEMA` every few hundred milliseconds (or every ``limit`` rows).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Any

import pyarrow as pa

SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("target", pa.string()),
        ("kind", pa.string()),
        ("actor", pa.string()),
        ("scheduled_us", pa.int64()),
        ("sent_us", pa.int64()),
        ("done_us", pa.int64()),
        ("status", pa.int32()),
        ("error", pa.string()),
        ("bytes_sent", pa.int64()),
        ("bytes_received", pa.int64()),
        ("outcome", pa.string()),
        ("expect", pa.string()),
        ("metric", pa.string()),
        ("group", pa.string()),
    ]
)

# Columns a result file may lack (written before the column existed): read as nulls.
OPTIONAL_COLUMNS = ("metric", "group")

# Values of the `metric` column (null = an HTTP request).
DROPPED_EVENTS = "dropped_events"
DASHBOARD_LOAD = "dashboard_load"
REALTIME_UPDATE_LATENCY = "realtime_update_latency"
REALTIME_JOIN = "realtime_join"
DASHBOARD_TARGET = "dashboard"  # the target of a dashboard_load row

FLUSH_ROWS = 1024  # a RowBuffer asks to be taken at this many rows (see RowBuffer.limit): a
# sender takes a batch a column a step between deadlines, and a step must stay short (about
# 0.05 ms a column at this size, warm)

RowSink = Callable[..., None]  # RowBuffer.append's signature: the SCHEMA columns, in order

# Batches are small and short-lived: from the system allocator, which returns them, where Arrow's
# default (mimalloc) keeps ~15 MB of segments in a sender that runs for hours
POOL = pa.system_memory_pool()


class RowBuffer:
    """Result rows in columns (one Python list each), taken as Arrow record batches of SCHEMA.

    ``append(seq, target, ..., metric=None, group=None)`` takes one row's values in SCHEMA order
    and appends each to its column; it is a closure over the columns' ``list.append`` (no
    attribute look-ups, no tuple kept). When the buffer holds ``limit`` rows it calls ``full()``
    (the owner takes the batch then); else the owner takes it on its own clock.
    """

    __slots__ = ("append", "columns", "full", "limit")

    def __init__(self, limit: int = FLUSH_ROWS, full: Callable[[], None] | None = None) -> None:
        self.columns: tuple[list[Any], ...] = tuple([] for _ in SCHEMA)
        self.limit = limit
        self.full = full
        self.append: RowSink = self._appender()

    def _appender(self) -> RowSink:
        cols = self.columns
        (a_seq, a_target, a_kind, a_actor, a_sched, a_sent, a_done, a_status, a_error, a_nsent,
         a_nrecv, a_outcome, a_expect, a_metric, a_group) = (c.append for c in cols)  # fmt: skip
        first = cols[0]
        buf = self

        def append(seq: int, target: str, kind: str, actor: str, scheduled_us: int, sent_us: int,
                   done_us: int, status: int, error: str | None, bytes_sent: int, bytes_received: int,
                   outcome: str | None, expect: str | None, metric: str | None = None,
                   group: str | None = None) -> None:  # fmt: skip
            a_seq(seq)
            a_target(target)
            a_kind(kind)
            a_actor(actor)
            a_sched(scheduled_us)
            a_sent(sent_us)
            a_done(done_us)
            a_status(status)
            a_error(error)
            a_nsent(bytes_sent)
            a_nrecv(bytes_received)
            a_outcome(outcome)
            a_expect(expect)
            a_metric(metric)
            a_group(group)
            if len(first) >= buf.limit and buf.full is not None:
                buf.full()

        return append

    def __len__(self) -> int:
        return len(self.columns[0])

    def take(self) -> pa.RecordBatch | None:
        """The rows appended since the last take, as one record batch (None if there are none).

        A value that does not fit its column's type is a ValueError naming the column; the buffer
        is emptied either way, so one bad row cannot stall every later flush.
        """
        steps = self.take_steps()
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def take_steps(self, most: int | None = None) -> Generator[None, None, pa.RecordBatch | None]:
        """take() a column at a time: a generator that yields after each column and returns the
        batch, of the oldest `most` rows (None: all). The rows are taken at its first step: rows
        appended while it runs go to a later batch. A sender runs it in its slack between
        deadlines (replay.slack), so no deadline waits for a whole batch (1,000 rows cost a
        millisecond or two in one go); taking at most `limit` rows (ship_steps) keeps each step
        that short when rows have piled up (a sender behind schedule)."""
        if not self.columns[0]:
            return None
        values = []
        for c in self.columns:
            values.append(c[:most])
            del c[:most]  # the lists stay the same objects: `append` keeps writing to them
        yield
        arrays = []
        for v, f in zip(values, SCHEMA, strict=True):
            try:
                arrays.append(pa.array(v, f.type, memory_pool=POOL))
            except (pa.ArrowException, TypeError, OverflowError) as e:
                raise ValueError(f"result column {f.name!r}: {e}") from None
            yield
        return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)

    def ship_steps(
        self, ship: Callable[[pa.RecordBatch], Iterator[None]], everything: bool
    ) -> Generator[None, None, None]:
        """The rows in batches of at most `limit`, each taken a column a step (take_steps) and
        handed to `ship`, a generator that may yield between its own steps: the first batch
        whatever there is, then only full ones (a part batch waits for the next call), unless
        `everything` (the last flush of a run)."""
        while (batch := (yield from self.take_steps(self.limit))) is not None:
            yield from ship(batch)
            if not everything and len(self.columns[0]) < self.limit:
                return
