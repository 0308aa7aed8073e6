"""The Arrow schema of a trace and the conversions between Event lists and record batches.

Both formats go through these functions, so a trace means the same thing in .parquet and .grt:
`check_events` is the one definition of a well-formed, sorted run of events.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import repeat

import numpy as np
import pyarrow as pa

from traces.event import COLUMNS, Event, TraceError

_DICT = pa.dictionary(pa.int32(), pa.string())

SCHEMA = pa.schema(
    [
        pa.field("t_us", pa.int64(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("kind", _DICT, nullable=False),
        pa.field("actor", _DICT, nullable=False),
        pa.field("target", _DICT, nullable=True),
        pa.field("payload", pa.binary(), nullable=False),
        pa.field("after", pa.int64(), nullable=True),
        pa.field("expect", _DICT, nullable=True),
    ]
)
"""The trace schema (DESIGN.md, "The event"): strings dictionary-encoded, payload msgpack bytes."""

assert tuple(SCHEMA.names) == COLUMNS

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_STRING_COLUMNS = frozenset({"kind", "actor", "target", "expect"})
_NOT_NULL = frozenset({"t_us", "seq", "kind", "actor", "payload"})


@contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic GC while building many tuples that cannot form cycles (a 4x speed-up)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _bad(e: object, why: str) -> TraceError:
    seq = e[1] if isinstance(e, tuple) and len(e) > 1 else "?"
    return TraceError(f"event seq={seq!r}: {why}")


def check_event(e: object) -> None:
    """Raise TraceError naming the field if `e` is not a well-formed Event-shaped tuple."""
    if not isinstance(e, tuple) or len(e) != 8:
        raise _bad(e, f"expected an Event (8 fields), got {type(e).__name__}")
    t, s, k, a, tg, p, af, ex = e
    for name, v, nullable in (("t_us", t, False), ("seq", s, False), ("after", af, True)):
        if v is None and nullable:
            continue
        if type(v) is not int:
            raise _bad(e, f"{name} must be an int, got {type(v).__name__}")
        if not INT64_MIN <= v <= INT64_MAX:
            raise _bad(e, f"{name} {v} does not fit in int64")
    for name, v, nullable in (
        ("kind", k, False),
        ("actor", a, False),
        ("target", tg, True),
        ("expect", ex, True),
    ):
        if v is None and nullable:
            continue
        if type(v) is not str:
            raise _bad(e, f"{name} must be a str, got {type(v).__name__}")
        try:
            v.encode("utf-8")
        except UnicodeEncodeError as err:
            raise _bad(e, f"{name} is not encodable as UTF-8: {err.reason}") from None
    if type(p) is not bytes:
        raise _bad(e, f"payload must be bytes (msgpack), got {type(p).__name__}")


def check_events(events: Sequence[Event], last: tuple[int, int] | None) -> tuple[int, int] | None:
    """Check a run of events is well formed and sorted by strictly increasing (t_us, seq).

    `last` is the (t_us, seq) of the event written before this run (None at the start); returns
    the new last pair. Raises TraceError naming the offending event.
    """
    _int, _str, _bytes = int, str, bytes
    lo, hi = INT64_MIN, INT64_MAX
    pt, ps = last if last is not None else (None, None)
    for e in events:
        # One fast test for the common case; the slow path finds and names the bad field.
        try:
            t, s, k, a, tg, p, af, ex = e
            ok = (
                type(t) is _int
                and type(s) is _int
                and type(k) is _str
                and type(a) is _str
                and (tg is None or type(tg) is _str)
                and type(p) is _bytes
                and (af is None or (type(af) is _int and lo <= af <= hi))
                and (ex is None or type(ex) is _str)
                and lo <= t <= hi
                and lo <= s <= hi
            )
        except (TypeError, ValueError):
            ok = False
        if not ok:
            check_event(e)
        if pt is not None and (t < pt or (t == pt and s <= ps)):
            raise _bad(
                e,
                f"events must be sorted by (t_us, seq) with unique seq: ({t}, {s}) comes after ({pt}, {ps})",
            )
        pt, ps = t, s
    return (pt, ps) if pt is not None else None


def events_to_batch(events: Sequence[Event]) -> pa.RecordBatch:
    """Columns of already-checked events as one RecordBatch of SCHEMA (one conversion per column)."""
    if not events:
        return pa.RecordBatch.from_pylist([], schema=SCHEMA)
    with no_gc():
        cols = list(zip(*events, strict=True))
    try:
        arrays = [
            pa.array(cols[0], pa.int64()),
            pa.array(cols[1], pa.int64()),
            pa.array(cols[2], _DICT),
            pa.array(cols[3], _DICT),
            pa.array(cols[4], _DICT),
            pa.array(cols[5], pa.binary()),
            pa.array(cols[6], pa.int64()),
            pa.array(cols[7], _DICT),
        ]
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as err:
        for e in events:
            check_event(e)  # names the event and field when it can
        raise TraceError(f"events cannot be stored: {err}") from None
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


def _strings(arr: pa.Array) -> list:
    """A dictionary (or plain) string column as a Python list, None for nulls, decoded cheaply."""
    if pa.types.is_dictionary(arr.type):
        values = arr.dictionary.to_pylist()
        if arr.null_count:
            values.append(None)
            idx = arr.indices.fill_null(len(values) - 1)
        else:
            idx = arr.indices
        table = np.array(values, dtype=object)
        return table[idx.to_numpy(zero_copy_only=False)].tolist()
    return arr.to_pylist()


def _ints(arr: pa.Array) -> list:
    if arr.null_count:
        return arr.to_pylist()
    return arr.to_numpy(zero_copy_only=False).tolist()


def batch_to_events(batch: pa.RecordBatch) -> list[Event]:
    """The events of a RecordBatch of SCHEMA (or a compatible one), built column-wise."""
    with no_gc():
        cols = batch.columns
        # tuple.__new__ over zip builds the namedtuples in C (namedtuple's __new__ is Python code)
        return list(
            map(
                tuple.__new__,
                repeat(Event, batch.num_rows),
                zip(
                    _ints(cols[0]),
                    _ints(cols[1]),
                    _strings(cols[2]),
                    _strings(cols[3]),
                    _strings(cols[4]),
                    cols[5].to_pylist(),
                    _ints(cols[6]),
                    _strings(cols[7]),
                    strict=True,
                ),
            )
        )


def conform(batch: pa.RecordBatch, where: str) -> pa.RecordBatch:
    """Check a batch read from a file and cast it to SCHEMA, or raise TraceError naming `where`.

    Accepts plain strings for the dictionary columns and large types (files written by other
    tools). Validates fully (dictionary indices, UTF-8, nulls): a damaged file must be an error,
    not events that are silently wrong.
    """
    if not batch.schema.equals(SCHEMA):
        arrays = []
        for field in SCHEMA:
            i = batch.schema.get_field_index(field.name)
            if i < 0:
                raise TraceError(f"{where}: missing column {field.name!r}")
            col = batch.column(i)
            try:
                if not col.type.equals(field.type):
                    if field.name in _STRING_COLUMNS and pa.types.is_dictionary(col.type):
                        col = col.dictionary_decode()
                    col = col.cast(field.type)
            except pa.ArrowException as err:
                raise TraceError(
                    f"{where}: column {field.name!r} has type {col.type}, expected {field.type}: {err}"
                ) from None
            arrays.append(col)
        batch = pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)
    try:
        batch.validate(full=True)
    except pa.ArrowException as err:
        raise TraceError(f"{where}: corrupt data: {err}") from None
    for name in _NOT_NULL:
        col = batch.column(name)
        if col.null_count:
            raise TraceError(f"{where}: column {name!r} has {col.null_count} null value(s)")
    return batch
