"""The .grt trace format: a msgpack stream that is written and read as it goes.

Layout (every part is one msgpack object, so the whole file is a plain msgpack stream):

    header map      {"format": "gaterush-trace", "version": 1, "scenario": ..., ...}
                    (counts, targets and expected are empty here: they are not known yet)
    event arrays    [t_us, seq, kind, actor, target, payload, after, expect], one per event
    trailer map     {"trailer": {"events": N, "crc32": C, "counts": ..., "targets": ..., "expected": ...,
                                 "duration_us": ..., "peak_rps": ..., "peak_rps_by_target": ...}}
                    (C is the CRC-32 of every byte before the trailer, so damage is noticed)
    trailer offset  uint64 in its fixed 9-byte form (0xcf + 8 bytes big-endian): where the
                    trailer map starts, so a reader finds the header stats without a scan

The trailer is written on close. A file without it was not finished (a crash, or a recording in
progress): readers yield every complete event and then raise TraceError saying so; `append=True`
resumes such a file. A writer's `flush()` hands everything written so far to the OS, so a
recorder that writes then flushes each event loses at most the event it was writing.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import msgpack
import pyarrow as pa

from traces.event import Event, TraceError
from traces.header import (
    TIMING_FIELDS,
    Timing,
    TraceHeader,
    cleared,
    finished,
    header_from_obj,
    header_to_obj,
)
from traces.projection import Projection
from traces.schema import check_event, check_events, events_to_batch, no_gc

# read size; iterating decodes a chunk whole (~1 ms at 64 KB); paced() decodes it PACED_EVENTS at a time
CHUNK_BYTES = 1 << 16
PACED_EVENTS = 64  # paced(): events per step, decoded in tens of microseconds
BATCH_ROWS = 65_536  # events per RecordBatch from batches()
_POINTER = struct.Struct(">BQ")
_POINTER_TAG = 0xCF
_MAX_HEADER_BYTES = 64 << 20
_UNPACK_ERRORS = (ValueError, msgpack.exceptions.UnpackException, TypeError)


def _strip_array_header(packed: bytes) -> memoryview:
    """Bytes of a packed list without its array header: the concatenation of its items."""
    tag = packed[0]
    skip = 1 if 0x90 <= tag <= 0x9F else 3 if tag == 0xDC else 5
    return memoryview(packed)[skip:]


class GrtWriter:
    """Streams events into a .grt file; use as a context manager (see module docstring)."""

    def __init__(
        self, path: str | os.PathLike, header: TraceHeader, *, append: bool = False
    ) -> None:
        self.path = Path(path)
        self._packer = msgpack.Packer(use_bin_type=True)
        self._projection = Projection()
        self._timing = Timing()
        self._last: tuple[int, int] | None = None
        self._closed = False
        self._crc = 0
        if append and self.path.exists() and self.path.stat().st_size > 0:
            self.header = self._resume()
        else:
            self.header = header
            head = self._packer.pack(
                header_to_obj(cleared(header))
            )  # refused before the file exists
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
            self._file.write(head)
            self._crc = zlib.crc32(head)

    def _resume(self) -> TraceHeader:
        """Reopen an existing file to add events: fold what it holds, cut any trailer or torn tail.

        A damaged file is refused (TraceError) rather than cut at the damage, which would lose
        the events after it; `gaterush trace convert --salvage` keeps what can be kept.
        """
        reader = GrtReader(self.path)
        header = reader.header
        end = reader.events_start
        for events, offset in reader.scan(stop_at_cut=True):
            end = offset
            self._projection.add_many(events)
            self._timing.add_many(events)
            if events:
                self._last = (events[-1].t_us, events[-1].seq)
        self._file = open(self.path, "r+b")  # noqa: SIM115 - closed in close()
        self._file.truncate(end)
        self._file.seek(0)
        while data := self._file.read(min(CHUNK_BYTES, end - self._file.tell())):
            self._crc = zlib.crc32(data, self._crc)
        self._file.seek(end)
        return cleared(header)

    def write(self, event: Event) -> None:
        """Append one event (it must sort after every event written before)."""
        self.write_many((event,))

    def write_many(self, events: Iterable[Event]) -> None:
        """Append events in order; a list is written in one go, other iterables in chunks."""
        if not isinstance(events, list | tuple):
            it = iter(events)
            while chunk := list(itertools.islice(it, BATCH_ROWS)):
                self.write_many(chunk)
            return
        if not events:
            return
        if self._closed:
            raise TraceError(f"{self.path}: write after close")
        last = check_events(events, self._last)
        try:
            packed = self._packer.pack(events if isinstance(events, list) else list(events))
        except (ValueError, TypeError, OverflowError) as err:
            for e in events:
                check_event(e)
            raise TraceError(f"{self.path}: an event cannot be stored: {err}") from None
        data = _strip_array_header(packed)
        self._file.write(data)
        self._crc = zlib.crc32(data, self._crc)
        self._last = last
        self._projection.add_many(events)
        self._timing.add_many(events)

    def flush(self, fsync: bool = False) -> None:
        """Hand everything written so far to the OS (and to the disk with fsync=True)."""
        self._file.flush()
        if fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Write the trailer (header counts, targets, expected end state) and close the file."""
        if self._closed:
            return
        self._closed = True
        self.header = h = finished(self.header, self._projection, self._timing)
        trailer = {
            "trailer": {
                "events": self._projection.events,
                "crc32": self._crc,
                "counts": h.counts,
                "targets": h.targets,
                "expected": h.expected,
                **{k: getattr(h, k) for k in TIMING_FIELDS},
            }
        }
        at = self._file.tell()
        self._file.write(self._packer.pack(trailer))
        self._file.write(_POINTER.pack(_POINTER_TAG, at))
        self._file.close()

    def abort(self) -> None:
        """Close without a trailer: the file reads as an unfinished trace that append=True resumes."""
        if not self._closed:
            self._closed = True
            self._file.close()

    def __enter__(self) -> GrtWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _unpack_one(data: bytes, where: str) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except _UNPACK_ERRORS as err:
        raise TraceError(f"{where}: {err}") from None


class GrtReader:
    """Reads a .grt file: `.header`, iteration over Events, `.batches()` of RecordBatches."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self.size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                start, self.events_start = self._read_header(f)
                trailer_at, trailer = self._find_trailer(f)
        except OSError as err:
            raise TraceError(f"{self.path}: cannot read: {err.strerror or err}") from None
        self.trailer_at = trailer_at
        header = header_from_obj(start, str(self.path))
        self.complete = trailer is not None
        self.num_events: int | None = None
        self.crc32: int | None = None
        if trailer is not None:
            self.num_events = trailer.get("events")
            self.crc32 = trailer.get("crc32")
            header = TraceHeader.from_dict(
                {
                    **header.to_dict(),
                    **{k: trailer.get(k) or {} for k in ("counts", "targets", "expected")},
                    **{k: trailer.get(k) for k in TIMING_FIELDS},  # None: an older writer's
                }
            )
        self.header = header

    def _read_header(self, f) -> tuple[Any, int]:
        unpacker = msgpack.Unpacker(
            raw=False, strict_map_key=False, max_buffer_size=_MAX_HEADER_BYTES
        )
        fed = 0
        while fed < _MAX_HEADER_BYTES:
            data = f.read(CHUNK_BYTES)
            if not data:
                break
            unpacker.feed(data)
            fed += len(data)
            try:
                obj = unpacker.unpack()
            except msgpack.OutOfData:
                continue
            except _UNPACK_ERRORS as err:
                raise TraceError(
                    f"{self.path}: not a gaterush trace (unreadable header: {err})"
                ) from None
            return obj, unpacker.tell()
        if fed == 0:
            raise TraceError(f"{self.path}: empty file, not a gaterush trace")
        raise TraceError(f"{self.path}: truncated at byte {fed}: the header is incomplete")

    def _find_trailer(self, f) -> tuple[int | None, dict | None]:
        if self.size < self.events_start + _POINTER.size:
            return None, None
        f.seek(self.size - _POINTER.size)
        tag, at = _POINTER.unpack(f.read(_POINTER.size))
        if tag != _POINTER_TAG or not self.events_start <= at < self.size - _POINTER.size:
            return None, None
        f.seek(at)
        try:
            obj = msgpack.unpackb(
                f.read(self.size - _POINTER.size - at), raw=False, strict_map_key=False
            )
        except _UNPACK_ERRORS:
            return None, None
        if not isinstance(obj, dict) or not isinstance(obj.get("trailer"), dict):
            return None, None
        return at, obj["trailer"]

    def scan(
        self, stop_at_cut: bool = False, piece: int | None = None
    ) -> Iterator[tuple[list[Event], int]]:
        """Chunks of events (those of CHUNK_BYTES of the file, or at most `piece` of them) with
        the byte offset just after each chunk's last complete event.

        Raises TraceError naming the file and the byte offset of the first incomplete or corrupt
        object after yielding every event before it. With stop_at_cut (resuming a file), a file
        that is only cut short (a torn last event, no trailer) ends quietly; damage still raises.
        """
        end = self.trailer_at if self.trailer_at is not None else self.size
        base = self.events_start
        tn, ev = tuple.__new__, Event
        count = 0
        good = 0  # bytes of the event stream consumed up to the end of the last good event
        problem = None
        cut = False  # the problem is only that the file ends early
        with open(self.path, "rb") as f:
            crc = zlib.crc32(f.read(base))
            unpacker = msgpack.Unpacker(
                use_list=False, raw=False, strict_map_key=False, max_buffer_size=1 << 30
            )
            tell = unpacker.tell
            remaining = end - base
            while remaining > 0 and problem is None:
                data = f.read(min(CHUNK_BYTES, remaining))
                if not data:
                    break
                remaining -= len(data)
                crc = zlib.crc32(data, crc)
                unpacker.feed(data)
                out: list[Event] = []
                # a whole chunk's tuples with the GC paused (4x faster); pieces are small, and the
                # GC must not stay paused while the consumer of a piece runs
                with no_gc() if piece is None else contextlib.nullcontext():
                    try:
                        for obj in unpacker:
                            if type(obj) is tuple and len(obj) == 8:
                                out.append(tn(ev, obj))
                            else:
                                problem = self._odd_object(obj, base + good)
                                cut = isinstance(obj, dict) and "trailer" in obj
                                break
                            good = tell()
                            if piece is not None and len(out) >= piece:
                                count += len(out)
                                yield out, base + good
                                out = []
                    except _UNPACK_ERRORS as err:
                        problem = f"corrupt data at byte {base + good}: {err}"
                count += len(out)
                yield out, base + good
            at = base + good
            if problem is None and at < end:
                cut = True
                problem = f"truncated at byte {at} of {self.size}: an incomplete record after {count} complete events"
            if problem is None and self.trailer_at is None:
                cut = True
                problem = (
                    f"ends at byte {at} without a trailer: the writer did not finish "
                    f"(a crash or a recording in progress); {count} complete events were read"
                )
            if problem is None and self.num_events is not None and self.num_events != count:
                problem = f"the trailer says {self.num_events} events but the file holds {count}"
            if problem is None and self.crc32 is not None and self.crc32 != crc:
                problem = (
                    f"checksum mismatch in bytes 0-{end}: the file was damaged or edited "
                    "after it was written"
                )
        if problem is not None and not (stop_at_cut and cut):
            raise TraceError(f"{self.path}: {problem}")

    def _odd_object(self, obj: Any, at: int) -> str:
        if isinstance(obj, dict) and "trailer" in obj:
            return f"truncated at byte {self.size}: the trailer at byte {at} has no offset after it"
        return f"corrupt data at byte {at}: expected an event array of 8 fields, got {type(obj).__name__}"

    def close(self) -> None:
        """Release the file (iteration opens it afresh, so a reader can be iterated again)."""

    def __enter__(self) -> GrtReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Event]:
        return chain.from_iterable(events for events, _ in self.scan())

    def paced(self) -> Iterator[Event]:
        """The events for a consumer that keeps deadlines (a replay): decoded PACED_EVENTS at a
        time, so no step costs more than tens of microseconds (a whole 64 KB chunk costs about a
        millisecond). The file is still read a chunk at a time: read 4 KB at a time instead, a
        replay of a 1M-event trace peaked at 300 MB instead of 163 MB. The same events and checks
        as iterating the reader."""
        return chain.from_iterable(events for events, _ in self.scan(piece=PACED_EVENTS))

    def batches(self, rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """The events as RecordBatches of traces.schema.SCHEMA, at most `rows` each."""
        pending: list[Event] = []
        try:
            for events, _ in self.scan():
                pending.extend(events)
                while len(pending) >= rows:
                    yield events_to_batch(pending[:rows])
                    del pending[:rows]
        except TraceError:
            if pending:  # every complete event before the damage, then the error
                yield events_to_batch(pending)
            raise
        if pending:
            yield events_to_batch(pending)
