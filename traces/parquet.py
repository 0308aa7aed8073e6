"""The .parquet trace format: the columns of traces.schema, the header as file metadata.

Row groups hold at most `row_group_rows` events, in time order, so a writer holds at most that
many events and a reader at most one row group. The header (with counts, targets and expected end
state folded from the events) is stored as canonical JSON under the metadata key
`gaterush.header`, written when the file is closed; the bytes depend only on the events and the
header (and the pyarrow version, which Parquet records as `created_by`).

Parquet keeps its index (the footer) at the end of the file, written on close: a file cut short
by a crash has no footer and no reader can use any of it. The reader says so in a TraceError
naming the file; record to .grt when a crash must not lose the trace. A writer leaving its `with`
block on an exception removes its file rather than leave a trace of an unknown part of the events.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from traces.event import COLUMNS, Event, TraceError
from traces.header import (
    Timing,
    TraceHeader,
    finished,
    header_from_obj,
    header_json_of,
    header_to_obj,
)
from traces.outputs import remove_partial
from traces.projection import Projection
from traces.schema import SCHEMA, batch_to_events, check_events, conform, events_to_batch

HEADER_KEY = "gaterush.header"
ROW_GROUP_ROWS = 65_536
PACED_ROWS = 4_096  # paced(): rows read and checked at a time
PACED_PIECE = 64  # ... made Events this many at a time
COMPRESSION = "zstd"
_DICT_COLUMNS = ["kind", "actor", "target", "expect"]


class ParquetTraceWriter:
    """Streams events into a .parquet trace in bounded row groups; use as a context manager."""

    def __init__(
        self,
        path: str | os.PathLike,
        header: TraceHeader,
        *,
        row_group_rows: int = ROW_GROUP_ROWS,
        compression: str = COMPRESSION,
    ) -> None:
        if row_group_rows < 1:
            raise ValueError("row_group_rows must be >= 1")
        self.path = Path(path)
        header_to_obj(header)  # refuse an unstorable header before creating the file
        self.header = header
        self._rows = row_group_rows
        self._pending: list[Event] = []
        self._last: tuple[int, int] | None = None
        self._projection = Projection()
        self._timing = Timing()
        self._closed = False
        try:
            self._writer = pq.ParquetWriter(
                self.path,
                SCHEMA,
                compression=compression,
                use_dictionary=_DICT_COLUMNS,
                write_statistics=["t_us", "seq"],
                write_page_checksum=True,  # so a damaged page is an error, not silently wrong events
            )
        except (OSError, pa.ArrowException) as err:
            raise TraceError(f"{self.path}: cannot write: {err}") from None

    def write(self, event: Event) -> None:
        """Append one event (it must sort after every event written before)."""
        self.write_many((event,))

    def write_many(self, events: Iterable[Event]) -> None:
        """Append events in order; they are converted column-wise one row group at a time."""
        if self._closed:
            raise TraceError(f"{self.path}: write after close")
        if not isinstance(events, list | tuple):
            it = iter(events)
            while chunk := list(itertools.islice(it, self._rows)):
                self.write_many(chunk)
            return
        self._last = check_events(events, self._last)
        pending = self._pending
        pending.extend(events)
        while len(pending) >= self._rows:
            self._write_group(pending[: self._rows])
            del pending[: self._rows]

    def _write_group(self, events: list[Event]) -> None:
        try:
            batch = events_to_batch(events)
        except TraceError as err:
            raise TraceError(f"{self.path}: {err}") from None
        self._projection.add_batch(batch)
        self._timing.add_batch(batch)
        self._writer.write_batch(batch, row_group_size=self._rows)

    def flush(self) -> None:
        """Write the buffered events as a (possibly short) row group; still unreadable until close."""
        if self._pending:
            self._write_group(self._pending)
            self._pending = []

    def close(self) -> None:
        """Write the last row group and the footer with the finished header."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        self.header = finished(self.header, self._projection, self._timing)
        self._writer.add_key_value_metadata(
            {HEADER_KEY: header_json_of(header_to_obj(self.header))}
        )
        self._writer.close()

    def abort(self) -> None:
        """Close and remove the file: it would hold an unknown part of the events."""
        if not self._closed:
            self._closed = True
            try:
                self._writer.close()
            finally:
                remove_partial(self.path)

    def __enter__(self) -> ParquetTraceWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class ParquetTraceReader:
    """Reads a .parquet trace: `.header`, iteration over Events, `.batches()` of RecordBatches."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        where = str(self.path)
        try:
            size = self.path.stat().st_size
            self._file = pq.ParquetFile(self.path, page_checksum_verification=True)
        except OSError as err:
            if isinstance(err, FileNotFoundError):
                raise TraceError(f"{where}: no such file") from None
            raise TraceError(f"{where}: cannot read: {err.strerror or err}") from None
        except (pa.ArrowException, UnicodeDecodeError) as err:  # a damaged footer's column names
            hint = (
                " (a Parquet file cut short, by a crash for example, has no footer and cannot be "
                "read; record to .grt to survive a crash)"
                if size >= 4
                else ""
            )
            raise TraceError(f"{where}: not a readable Parquet file: {err}{hint}") from None
        meta = self._file.metadata
        names = set(self._file.schema_arrow.names)
        missing = [c for c in COLUMNS if c not in names]
        if missing:
            raise TraceError(
                f"{where}: not a gaterush trace: missing column(s) {', '.join(missing)}"
            )
        raw = (meta.metadata or {}).get(HEADER_KEY.encode())
        if raw is None:
            raise TraceError(
                f"{where}: not a gaterush trace: no {HEADER_KEY!r} in the Parquet metadata"
            )
        try:
            obj = json.loads(raw)
        except ValueError as err:
            raise TraceError(f"{where}: malformed header metadata: {err}") from None
        header = header_from_obj(obj, where)
        if header.duration_us is None:  # written before the header kept it: the statistics say
            header = dataclasses.replace(header, duration_us=self._last_t_us())
        self.header = header
        self.num_events: int | None = meta.num_rows
        self.complete = True

    def _last_t_us(self) -> int | None:
        """The last t_us from the row groups' column statistics (None if they do not say)."""
        md = self._file.metadata
        col = md.schema.names.index("t_us")
        stats = [md.row_group(i).column(col).statistics for i in range(md.num_row_groups)]
        maxima = [int(st.max) for st in stats if st is not None and st.has_min_max]
        return max(maxima) if maxima else (0 if md.num_rows == 0 else None)

    def batches(self, rows: int = ROW_GROUP_ROWS) -> Iterator[pa.RecordBatch]:
        """The events as RecordBatches of traces.schema.SCHEMA, at most `rows` each."""
        done = 0
        it = self._file.iter_batches(batch_size=rows, columns=list(COLUMNS))
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except (OSError, pa.ArrowException) as err:
                raise TraceError(f"{self.path}: corrupt data after row {done}: {err}") from None
            batch = conform(batch, f"{self.path}: rows from {done}")
            done += batch.num_rows
            yield batch

    def close(self) -> None:
        """Release the file."""
        self._file.close()

    def __enter__(self) -> ParquetTraceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Event]:
        return chain.from_iterable(map(batch_to_events, self.batches()))

    def paced(self) -> Iterator[Event]:
        """The events for a consumer that keeps deadlines (a replay), in small steps: batches of
        PACED_ROWS rows read and checked, their dictionary columns decoded once per batch (a
        slice of a dictionary column decodes the whole row group's dictionary), made Events
        PACED_PIECE at a time. A piece costs tens of microseconds, a batch about a millisecond,
        the first batch of a row group a few (Parquet reads and decompresses the group's pages
        then, holding the GIL: a reading thread does not help); iterating the reader costs ~80 ms
        there. A .grt trace reads in even steps. The same events and errors as iterating."""
        for batch in self.batches(PACED_ROWS):
            plain = pa.RecordBatch.from_arrays(
                [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c
                 for c in batch.columns], names=batch.schema.names)  # fmt: skip
            for at in range(0, plain.num_rows, PACED_PIECE):
                yield from batch_to_events(plain.slice(at, PACED_PIECE))
