"""Open a trace for reading or writing; the format follows the file's suffix (.parquet or .grt).

    with open_writer("day.parquet", header) as w:
        w.write_many(events)            # sorted by (t_us, seq); header counts filled on close
    with open_reader("day.grt") as r:
        r.header                        # TraceHeader
        for event in r: ...             # Events in (t_us, seq) order
        for batch in r.batches(): ...   # pyarrow RecordBatches of traces.schema.SCHEMA

Readers stream in bounded memory. A truncated or corrupt file yields every complete event
before the damage, then raises TraceError naming the file and the byte offset or row.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from traces.event import Event, TraceError
from traces.grt import GrtReader, GrtWriter
from traces.header import TraceHeader
from traces.parquet import ParquetTraceReader, ParquetTraceWriter

SUFFIXES = (".parquet", ".grt")


class TraceReader(Protocol):
    """What open_reader returns, whatever the format."""

    path: Path
    header: TraceHeader
    num_events: int | None  # known up front when the file says (Parquet metadata, .grt trailer)
    complete: bool  # False for a .grt file whose writer did not finish

    def __iter__(self) -> Iterator[Event]: ...
    def paced(self) -> Iterator[Event]: ...
    def batches(self, rows: int = ...) -> Iterator[pa.RecordBatch]: ...
    def close(self) -> None: ...
    def __enter__(self) -> TraceReader: ...
    def __exit__(self, *exc: object) -> None: ...


class TraceWriter(Protocol):
    """What open_writer returns, whatever the format."""

    path: Path
    header: TraceHeader  # the finished header (counts, targets, expected) once closed

    def write(self, event: Event) -> None: ...
    def write_many(self, events: Iterable[Event]) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> TraceWriter: ...
    def __exit__(self, *exc: object) -> None: ...


def trace_format(path: str | os.PathLike) -> str:
    """'parquet' or 'grt' from the file's suffix; TraceError naming an unknown suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        shown = f"suffix {suffix!r}" if suffix else "no suffix"
        raise TraceError(f"{path}: {shown}: a trace file ends in .parquet or .grt")
    return suffix[1:]


def open_reader(path: str | os.PathLike) -> TraceReader:
    """Open a trace for streaming reads (a context manager; also usable without `with`)."""
    fmt = trace_format(path)
    if not Path(path).exists():
        raise TraceError(f"{path}: no such file")
    if Path(path).is_dir():
        raise TraceError(f"{path}: is a directory, not a trace file")
    return GrtReader(path) if fmt == "grt" else ParquetTraceReader(path)


def in_order(events: Iterable[Event], path: str | os.PathLike) -> Iterator[Event]:
    """The events, checked as they stream: TraceError at the first one out of (t_us, seq) order.

    The same rule `trace info` applies (sorted by t_us, seq unique and increasing within a t_us),
    for a consumer that must not act on a disordered trace (replay's schedule).
    """
    last = (-(2**63) - 1, 0)
    for row, e in enumerate(events):
        key = (e.t_us, e.seq)
        if key <= last:
            raise TraceError(
                f"{path}: row {row}: events are not sorted by (t_us, seq) with unique seq: "
                f"{key} after {last}; `gaterush trace info` shows the trace"
            )
        last = key
        yield e


def open_writer(
    path: str | os.PathLike,
    header: TraceHeader,
    *,
    append: bool = False,
    row_group_rows: int | None = None,
) -> TraceWriter:
    """Open a trace for streaming writes (a context manager); the header's counts are filled on close.

    append=True (.grt only) continues an existing file, keeping its header, after its last
    complete event. row_group_rows (.parquet only) bounds the events held in memory.
    """
    fmt = trace_format(path)
    if fmt == "grt":
        if row_group_rows is not None:
            raise TraceError(f"{path}: row_group_rows applies to .parquet traces only")
        return GrtWriter(path, header, append=append)
    if append:
        raise TraceError(
            f"{path}: a .parquet trace cannot be appended to (its index is written on close); use .grt"
        )
    if row_group_rows is None:
        return ParquetTraceWriter(path, header)
    return ParquetTraceWriter(path, header, row_group_rows=row_group_rows)
