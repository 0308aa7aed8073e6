"""The result log: one row per replayed request, written as the run goes, readable while it runs.

Format (version 2)
------------------
Two files hold the same rows:

* ``.grr``: an Arrow IPC stream (any Arrow reader opens it: ``pyarrow.ipc.open_stream``). Its
  schema is :data:`judge.rows.SCHEMA` with the header (:class:`ResultHeader` as JSON, with
  ``"format": "gaterush-results"``) in the schema metadata key ``gaterush.results``; then one
  record batch per flush (at most every :data:`FLUSH_S` seconds or
  :data:`judge.rows.FLUSH_ROWS` rows); at a clean close a last batch of no rows whose custom
  metadata key ``gaterush.end`` holds the trailer as JSON (``end_us``, ``rows``, and the
  :data:`TRAILER_FIELDS` known only at the end: ``end_state``, ``sender``, ``lost``), then the
  end-of-stream marker. A batch reaches the file whole (one write, then a flush), so a crash loses
  at most the rows of the last flush and a file cut anywhere reads up to its last complete batch.
  Rows are in completion order, not sorted. A worker sends the parent each batch as the bytes of
  its IPC message (:func:`batch_message`), which the parent appends to the stream as they are.
* ``.parquet``: the columns below, the header as JSON in the file metadata key
  ``gaterush.results`` (completed with the trailer). Parquet cannot be read before its footer
  exists, so while a run writes ``out.parquet`` its rows go to the stream ``out.parquet.grr``
  (readable while running, and what survives a crash); at the end the stream is read back (memory
  mapped) and written as Parquet in one write, and removed.

Older gaterush wrote ``.grr`` as a msgpack stream (one map, the header; one array per row in
:data:`COLUMNS` order; at a clean close ``{"end": {...}}``): such files are still read (an IPC
stream starts with the bytes ``ff ff ff ff``, which no msgpack map does).

Columns (times are integer microseconds relative to the run start, the instant every worker agreed
on, ``header.start_unix_us`` in wall-clock time):

=================  =======  ==================================================================
seq                int64    the event's seq in the trace
target             string   the event's target (``rpc:scan_ticket_atomic``) or a measurement's
kind               string   the event's kind (``scan``, ``webhook``, ...)
actor              string   the event's actor
scheduled_us       int64    when the open-loop schedule said to send it (origin + t / speed)
sent_us            int64    when its first byte was handed to the socket
done_us            int64    when the whole response had arrived (or the error happened)
status             int32    HTTP status; 0 for a transport error, a drop or a measurement
error              string?  null when the request got an HTTP response; else why not
bytes_sent         int64    request bytes on the wire (line, headers, body)
bytes_received     int64    response bytes on the wire
outcome            string?  parsed from the response: a scan's outcome, ``processed``, ...
expect             string?  the event's ``expect`` (checks compare it with ``outcome``)
metric             string?  null for a request row; else the measurement the row holds (below)
group              string?  what a check judges over a group of rows (judge.checks), not one row:
                            ``evt:<Stripe event id>`` for webhook deliveries, ``ticket:<event>/<code>``
                            for scans; null for a check of one request
=================  =======  ==================================================================

Version 1 files have no ``group`` column (14 fields per msgpack row): they read with nulls there.

So ``http_req_duration = done_us - sent_us``, ``latency = done_us - scheduled_us`` and
``schedule_lag = sent_us - scheduled_us``, over the rows whose ``metric`` is null.

Rows whose ``metric`` is not null are not HTTP requests and count in no ``http_*`` metric:

* ``dropped_events``: an event the sender did not send (``--max-in-flight`` full, a per-target rate
  cap, or an ``after`` dependency that failed); one row per event, the event's own seq, target,
  kind, actor and expect; ``sent_us == done_us`` = when it was dropped; ``error`` says why.
* ``dashboard_load``: one row per dashboard load (the ``view`` events sharing a ``load`` id of one
  actor); ``target`` is ``dashboard``, ``seq`` the first view's seq, ``scheduled_us``/``sent_us``
  the first view's, ``done_us`` the last view's completion; the value is ``done_us - scheduled_us``;
  ``status`` is the worst (highest) status of its views, ``error`` the first error.
* ``realtime_update_latency``: one row per postgres_changes message a viewer received that matches
  a write this run made; ``target`` the subscription's target (``realtime:tickets``), ``actor`` the
  viewer, ``seq`` the write's seq, ``sent_us`` the write's completion, ``done_us`` the message's
  arrival; the value is ``done_us - sent_us``. A viewer's shard writes a ``realtime_message`` row
  for a message about another shard's write; reading makes it one of these
  (judge.realtime_messages).
* ``realtime_join``: one row per subscription attempt (``status`` 200 when joined; ``error`` the
  reason otherwise), the value ``done_us - sent_us``.

Progress: with each batch a sender reports its :class:`RowCounts` (rows, requests, failed ones by
the judge's rule, drops, the batch's p95), so the live line never needs the rows themselves.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import msgpack
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from judge.metrics import percentile, request_failed
from judge.realtime_messages import time_messages

# The columns' types and the `metric` values are shared with sim/'s predicted rows.
from judge.rows import (  # noqa: F401 - re-exported for replay/
    DASHBOARD_LOAD,
    DASHBOARD_TARGET,
    DROPPED_EVENTS,
    OPTIONAL_COLUMNS,
    POOL,
    REALTIME_JOIN,
    REALTIME_UPDATE_LATENCY,
    SCHEMA,
    RowBuffer,
)
from traces.outputs import atomic

RESULT_FORMAT = "gaterush-results"
RESULT_VERSION = 2
# seconds between flushes: each costs ~0.4 ms warm and several times that in a sender woken cold
# between deadlines (every 0.2 s was 4% of a sender's CPU at 1,000 requests/s)
FLUSH_S = 1.0
PARQUET_META_KEY = b"gaterush.results"  # the header: Parquet file metadata, IPC schema metadata
TRAILER_KEY = b"gaterush.end"  # the trailer: custom metadata of the stream's last (empty) batch
_IPC_MAGIC = b"\xff\xff\xff\xff"  # an IPC message's continuation marker: what a stream starts with
_IPC_END = _IPC_MAGIC + b"\x00\x00\x00\x00"  # the end-of-stream marker


class ResultRow(NamedTuple):
    """One row of the result log (see the module docstring for each field)."""

    seq: int
    target: str
    kind: str
    actor: str
    scheduled_us: int
    sent_us: int
    done_us: int
    status: int
    error: str | None
    bytes_sent: int
    bytes_received: int
    outcome: str | None
    expect: str | None
    metric: str | None = None
    group: str | None = None


COLUMNS = ResultRow._fields
assert tuple(SCHEMA.names) == COLUMNS, "ResultRow and judge.rows.SCHEMA must list the same columns"


@dataclass(frozen=True, slots=True)
class ResultHeader:
    """What a result log is: which run, at what, from which trace, at what speed. Never a key."""

    run_id: str
    target_url: str  # scheme://host:port[/path] only: never a key, never a query string
    trace_path: str
    speed: float = 1.0
    start_unix_us: int = 0  # wall-clock time of the run start (times in rows are relative to it)
    scenario: str | None = None  # the trace's scenario name
    thresholds: dict[str, list[str]] = field(default_factory=dict)  # from the trace header
    expected_requests: int = 0  # events with a target that this run was to send
    workers: int = 1
    max_in_flight: int = 0
    stripe: str = "standin"  # standin | real | URL | skip
    trace_duration_us: int = 0  # last event's t_us (trace time, before --speed)
    shard: int | None = None  # which shard wrote this file (None: the whole run in one file)
    clocks: list[dict[str, Any]] = field(default_factory=list)  # per shard: see replay.clocksync
    # from the trailer: the shards whose worker died (replay.shards)
    lost: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = False  # set by the reader when the trailer was found (a clean close)
    end_us: int | None = None  # from the trailer: when the run ended, relative to start
    # from the trailer: the stand-in's end state when the run was at --target local (for verify)
    end_state: dict[str, Any] | None = None
    # from the trailer: the sender's own cost (cpu_s, wall_s) for the faithfulness check
    sender: dict[str, Any] = field(default_factory=dict)
    format: str = RESULT_FORMAT
    version: int = RESULT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The header as a plain dict (msgpack / JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResultHeader:
        """Build from to_dict's output, ignoring unknown keys (newer writers)."""
        known = {k: v for k, v in d.items() if k in cls.__slots__}
        return cls(**known)

    def closed(self, end: dict[str, Any]) -> ResultHeader:
        """This header completed by a trailer (``end_us`` and the TRAILER_FIELDS it holds)."""
        d = self.to_dict()
        d.update(complete=True, end_us=end.get("end_us"))
        d.update({k: end[k] for k in TRAILER_FIELDS if k in end})
        return ResultHeader.from_dict(d)


TRAILER_FIELDS = ("end_state", "sender", "lost")  # lost: shards whose worker died (shards)


class ResultLogError(Exception):
    """A result file is unreadable: the message names the file and why."""


_HEADER_TYPES = {"run_id": str, "target_url": str, "trace_path": str, "speed": (int, float),
                 "start_unix_us": int, "scenario": (str, type(None)), "thresholds": dict,
                 "expected_requests": int, "workers": int, "max_in_flight": int, "stripe": str,
                 "trace_duration_us": int, "complete": bool, "end_us": (int, type(None)),
                 "end_state": (dict, type(None)), "sender": dict}  # fmt: skip
_OPT_STR = (str, type(None))
_ROW_TYPES = (int, str, str, str, int, int, int, int, _OPT_STR, int, int, _OPT_STR, _OPT_STR,
              _OPT_STR, _OPT_STR)  # fmt: skip


def checked_header(obj: Any, where: Path) -> ResultHeader:
    """A ResultHeader from a stored dict whose format, version and field types are checked."""
    if not isinstance(obj, dict) or obj.get("format") != RESULT_FORMAT:
        got = obj.get("format") if isinstance(obj, dict) else None
        raise ResultLogError(f"{where}: not a gaterush result log (format {got!r})")
    version = obj.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ResultLogError(f"{where}: bad result log version {version!r}")
    if version > RESULT_VERSION:
        raise ResultLogError(
            f"{where}: result log version {version} is newer than this gaterush reads "
            f"(1 to {RESULT_VERSION}); upgrade gaterush to read it"
        )
    for key, types in _HEADER_TYPES.items():
        v = obj.get(key)
        if key in obj and (not isinstance(v, types) or (isinstance(v, bool) and types is int)):
            raise ResultLogError(f"{where}: header field {key!r} has a bad value {v!r:.60}")
    for key in ("run_id", "target_url", "trace_path"):
        if key not in obj:
            raise ResultLogError(f"{where}: header field {key!r} is missing")
    speed = obj.get("speed", 1.0)
    if not (isinstance(speed, int | float) and 0 < speed < float("inf")):
        raise ResultLogError(f"{where}: header field 'speed' has a bad value {speed!r}")
    th = obj.get("thresholds") or {}
    if not all(isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v)
               for k, v in th.items()):  # fmt: skip
        raise ResultLogError(f"{where}: header field 'thresholds' is not a table of string lists")
    return ResultHeader.from_dict(obj)


# --- what a sender reports with each batch ------------------------------------------------------


class RowCounts(NamedTuple):
    """What one batch of rows adds to the progress line (a tuple, so it travels in any message)."""

    rows: int = 0  # rows in the batch
    requests: int = 0  # request rows (no `metric`): requests sent and answered, or failed
    failed: int = 0  # requests that count in http_req_failed (judge.metrics.request_failed)
    dropped: int = 0  # dropped_events rows
    p95_ms: float | None = None  # p95 of http_req_duration over the batch's requests


def summarize(batch: pa.RecordBatch) -> RowCounts:
    """The RowCounts of a batch of SCHEMA rows, by the judge's failure rule and percentile.

    Tens of microseconds for a batch of requests: a sender computes it between deadlines.
    """
    n = batch.num_rows
    metric = batch.column("metric")
    requests = metric.null_count  # a request row has no metric
    dropped = 0
    if requests < n:
        dropped = metric.drop_null().to_pylist().count(DROPPED_EVENTS)
    if not requests:
        return RowCounts(n, 0, 0, dropped, None)
    is_req = metric.is_null().to_numpy(zero_copy_only=False)
    status = batch.column("status").to_numpy(zero_copy_only=False)
    maybe = (status == 0) | (status >= 400)
    error = batch.column("error")
    if error.null_count < n:
        maybe |= error.is_valid().to_numpy(zero_copy_only=False)
    # the rule's cheap part by column; its exceptions (an expected 402, http_<status>) row by row
    candidates = np.flatnonzero(is_req & maybe)
    failed = 0
    if len(candidates):
        idx = pa.array(candidates)
        cols = [pc.take(batch.column(c), idx).to_pylist()
                for c in ("target", "status", "error", "outcome", "expect")]  # fmt: skip
        failed = sum(request_failed(*r) for r in zip(*cols, strict=True))
    done = batch.column("done_us").to_numpy(zero_copy_only=False)
    sent = batch.column("sent_us").to_numpy(zero_copy_only=False)
    took = (done - sent) if requests == n else (done - sent)[is_req]
    return RowCounts(n, requests, failed, dropped, percentile(took / 1000.0, 0.95))


def batch_message(batch: pa.RecordBatch) -> bytes:
    """A batch as the bytes of its IPC stream message: what a worker sends, what the log appends."""
    return batch.serialize(memory_pool=POOL).to_pybytes()


_EMPTY = pa.RecordBatch.from_arrays([pa.array([], f.type) for f in SCHEMA], schema=SCHEMA)


def _trailer_message(end: dict[str, Any]) -> bytes:
    """The stream's last message: an empty batch whose custom metadata is the trailer."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, SCHEMA) as w:
        w.write_batch(_EMPTY, custom_metadata={TRAILER_KEY: json.dumps(end).encode()})
    messages = pa.ipc.MessageReader.open_stream(sink.getvalue())
    messages.read_next_message()  # the schema
    return messages.read_next_message().serialize().to_pybytes()


# --- writing ------------------------------------------------------------------------------------


class ResultWriter:
    """Append rows to a result log as they complete: Arrow record batches on an IPC stream.

    A sender with its own RowBuffer hands whole batches to ``write_batch`` (or, from another
    process, their bytes to ``write_message``); ``add`` takes one row (a ResultRow or a tuple in
    COLUMNS order) into the writer's own buffer, written when FLUSH_S has passed since the last
    write, on ``flush()`` and on ``close()``. Each batch is one write; ``flush`` hands it to the OS.
    """

    def __init__(self, path: str | os.PathLike[str], header: ResultHeader) -> None:
        self.path = Path(path)
        self.header = header
        self.parquet = self.path.suffix == ".parquet"
        if not self.parquet and self.path.suffix != ".grr":
            raise ValueError(f"{self.path}: result file must end in .parquet or .grr")
        self.stream_path = (
            self.path.with_name(self.path.name + ".grr") if self.parquet else self.path
        )
        self.rows = 0
        self.buffer = RowBuffer(full=self.flush)
        self._table: pa.Table | None = None
        self._file: BinaryIO = open(self.stream_path, "wb")  # noqa: SIM115 - closed in close()
        schema = SCHEMA.with_metadata({PARQUET_META_KEY: json.dumps(header.to_dict()).encode()})
        with self._naming_the_file():
            self._file.write(schema.serialize().to_pybytes())
            self._file.flush()
        self._last_flush = time.monotonic()
        self._closed = False

    def add(self, row: Iterable[Any]) -> None:
        """Append one row (a ResultRow or a tuple in COLUMNS order; metric, group optional)."""
        self.buffer.append(*row)
        if time.monotonic() - self._last_flush >= FLUSH_S:
            self.flush()

    def write_batch(self, batch: pa.RecordBatch) -> None:
        """Append a batch of SCHEMA rows (reaches the OS at the next flush)."""
        self.write_message(batch_message(batch), batch.num_rows)

    def write_message(self, data: bytes, rows: int) -> None:
        """Append a batch already serialized by batch_message (from a worker process)."""
        if data[:4] != _IPC_MAGIC:
            raise ValueError(f"{self.stream_path}: not an Arrow IPC message ({data[:8]!r})")
        with self._naming_the_file():
            self._file.write(data)
        self.rows += rows

    def flush(self) -> None:
        """Write buffered rows to the file (and the OS), so readers and crashes see them."""
        batch = self.buffer.take()
        if batch is not None:
            self.write_batch(batch)
        with self._naming_the_file():
            self._file.flush()
        self._last_flush = time.monotonic()

    @contextlib.contextmanager
    def _naming_the_file(self) -> Iterator[None]:
        """An OSError from a write (a full disk) carries the file's name, for its one-line message."""
        try:
            yield
        except OSError as e:
            if e.filename is not None:
                raise
            raise OSError(e.errno, e.strerror or str(e), str(self.stream_path)) from None

    def close(self, end_us: int | None = None, **trailer: Any) -> None:
        """Write the trailer, and for a .parquet target write the Parquet file and remove the stream.

        `trailer` holds what is known only at the end (TRAILER_FIELDS of the header: end_state,
        sender, lost); afterwards ``header`` is the completed header a reader of the file gets.
        """
        if self._closed:
            return
        self._closed = True
        self.flush()
        extra = {k: v for k, v in trailer.items() if k in TRAILER_FIELDS and v is not None}
        end = {"end_us": end_us, "rows": self.rows, **extra}
        with self._naming_the_file():
            self._file.write(_trailer_message(end) + _IPC_END)
            self._file.close()
        self.header = self.header.closed(end)
        if self.parquet:
            self._table = _stream_to_parquet(self.stream_path, self.path, self.header)
            self.stream_path.unlink()

    def table(self) -> pa.Table:
        """Every row written, after close: the table a reader of the file gets, without reading
        Parquet back (a .grr stream is memory-mapped; nothing is copied until it is used)."""
        if not self._closed:
            raise RuntimeError("ResultWriter.table() before close()")
        if self._table is None:
            self._table = _read_stream(self.stream_path, validate=False)[1]  # it wrote them itself
        return time_messages(self._table)

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rows_to_ipc(rows: Iterable[Iterable[Any]]) -> bytes:
    """Rows (COLUMNS order; metric, group optional) as one Arrow IPC stream of one record batch."""
    buf = RowBuffer(limit=2**62)
    for r in rows:
        buf.append(*r)
    batch = buf.take() or _EMPTY
    return SCHEMA.serialize().to_pybytes() + batch_message(batch) + _IPC_END


def rows_from_ipc(data: bytes) -> list[ResultRow]:
    """The rows of an Arrow IPC stream written by rows_to_ipc."""
    return list(_table_rows(pa.ipc.open_stream(data).read_all()))


def _table_rows(t: pa.Table | pa.RecordBatch) -> Iterator[ResultRow]:
    return (ResultRow(*r) for r in zip(*(t.column(c).to_pylist() for c in COLUMNS), strict=True))


SHARD_GLOB = "shard-*-of-*"


def shard_file(directory: str | os.PathLike[str], shard: int, shards: int) -> Path:
    """Where shard `shard` of `shards` writes its own result file under ``--out DIR``."""
    return Path(directory) / f"shard-{shard:03d}-of-{shards:03d}.parquet"


def result_files(paths: list[str | os.PathLike[str]]) -> list[Path]:
    """The result files named by `paths`: a directory stands for the shard files in it."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            out.append(p)
            continue
        # a crashed shard left only its .parquet.grr stream, which reading its .parquet name finds
        names = sorted({f.name.removesuffix(".grr") if f.name.endswith(".parquet.grr") else f.name
                        for f in p.glob(SHARD_GLOB) if f.name.endswith((".parquet", ".grr"))})  # fmt: skip
        if not names:
            raise ResultLogError(f"{p}: a directory with no shard result files ({SHARD_GLOB})")
        out.extend(p / n for n in names)
    return out


def _stream_to_parquet(src: Path, dst: Path, final: ResultHeader) -> pa.Table:
    """Write the rows of the stream `src` as the Parquet file `dst` (one write); the table."""
    table = _read_stream(src, validate=False)[1]  # the writer's own stream, just written
    # a slow run's many small flushes: Parquet writes one long chunk faster than many short ones
    if table.num_rows < 1024 * table.column(0).num_chunks:
        table = table.combine_chunks()
    meta = {PARQUET_META_KEY: json.dumps(final.to_dict()).encode()}
    try:
        # a file object, not a path: on a failed write pyarrow would remove the path (a link)
        with atomic(dst) as tmp, open(tmp, "wb") as f:
            pq.write_table(table.replace_schema_metadata(meta), f)
    except (OSError, pa.ArrowException) as e:
        raise ResultLogError(
            f"{dst}: cannot write the result log ({' '.join(str(e).split())}); its rows are in {src}"
        ) from None
    return table


# --- reading ------------------------------------------------------------------------------------


def header_after(header: ResultHeader, rows: Iterator[ResultRow]) -> ResultHeader:
    """The header completed with the trailer, once `rows` (from iter_rows) is exhausted."""
    return getattr(rows, "final_header", None) or header


def _read_stream(path: Path, validate: bool = True) -> tuple[ResultHeader, pa.Table]:
    """(header completed by the trailer if there is one, table) of an IPC stream result log.

    Read up to the last complete batch: a file cut anywhere (a crash, a run still writing) gives
    the rows of every batch that reached it whole. The file is memory-mapped: no row is copied
    until it is used. `validate` checks every batch's offsets and UTF-8 (a damaged or hostile
    file is an error, not a crash later).
    """
    try:
        reader = pa.ipc.open_stream(pa.memory_map(str(path)))
    except (pa.ArrowException, OSError, ValueError) as e:
        raise ResultLogError(f"{path}: no result header (cut before its end?): {e}") from None
    if not reader.schema.equals(SCHEMA, check_metadata=False):
        raise ResultLogError(f"{path}: its columns are not a gaterush result log's")
    raw = (reader.schema.metadata or {}).get(PARQUET_META_KEY)
    if raw is None:
        raise ResultLogError(f"{path}: an Arrow stream without a gaterush result header")
    header = checked_header(_json(raw, path, "header"), path)
    batches = []
    while True:
        try:
            batch, meta = reader.read_next_batch_with_custom_metadata()
        except StopIteration:
            break
        except (pa.ArrowException, OSError):  # the last batch is incomplete: stop before it
            break
        if meta is not None and TRAILER_KEY in meta:
            end = _json(meta[TRAILER_KEY], path, "trailer")
            header = header.closed(end if isinstance(end, dict) else {})
            continue
        try:
            if validate:
                batch.validate(full=True)
        except pa.ArrowException as e:
            at = sum(map(len, batches))
            raise ResultLogError(f"{path}: a damaged batch after {at} rows: {e}") from None
        batches.append(batch)
    return header, pa.Table.from_batches(batches, schema=SCHEMA)


def _json(raw: bytes, path: Path, what: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as e:
        raise ResultLogError(f"{path}: the result {what} is not JSON ({e})") from None


def _is_stream(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == _IPC_MAGIC


def _checked_row(obj: list, where: Path, at: int) -> ResultRow:
    if len(obj) != len(COLUMNS):
        raise ResultLogError(
            f"{where}: row near byte {at} has {len(obj)} fields, expected {len(COLUMNS)}"
        )
    for name, v, t in zip(COLUMNS, obj, _ROW_TYPES, strict=True):
        if not isinstance(v, t) or (
            t is int and (isinstance(v, bool) or not -(2**63) <= v < 2**63)
        ):
            raise ResultLogError(
                f"{where}: row near byte {at}: field {name!r} has a bad value {v!r:.60}"
            )
    return ResultRow(*obj)


def _batches(rows: Iterator[ResultRow], n: int) -> Iterator[pa.RecordBatch]:
    buf = RowBuffer(limit=2**62)
    for count, row in enumerate(rows, 1):
        buf.append(*row)
        if count % n == 0:
            yield buf.take()  # type: ignore[misc]
    yield buf.take() or _EMPTY


class _RowStream:
    """Iterator over the rows of a msgpack .grr file; sets `final_header` when the trailer is read."""

    def __init__(self, path: Path, header: ResultHeader, unpacker: msgpack.Unpacker, f: BinaryIO):
        self.path = path
        self.header = header
        self.final_header: ResultHeader | None = None
        self._u = unpacker
        self._f = f

    def __iter__(self) -> _RowStream:
        return self

    def __next__(self) -> ResultRow:
        while True:
            try:
                obj = next(self._u)
            except StopIteration:
                self._f.close()
                if self.final_header is None:
                    self.final_header = self.header
                raise
            except (msgpack.UnpackValueError, msgpack.ExtraData, ValueError, TypeError) as e:
                # TypeError: a map whose key is a list or a map (unhashable), as junk can hold
                self._f.close()
                raise ResultLogError(
                    f"{self.path}: corrupt row near byte {self._u.tell()}: {e}"
                ) from e
            if isinstance(obj, list):
                if len(obj) == _V1_FIELDS:
                    obj.append(None)  # a version 1 row: no group
                try:
                    return _checked_row(obj, self.path, self._u.tell())
                except ResultLogError:
                    self._f.close()
                    raise
            if isinstance(obj, dict) and "end" in obj:
                end = obj["end"] if isinstance(obj["end"], dict) else {}
                self.final_header = self.header.closed(end)
                continue
            raise ResultLogError(f"{self.path}: unexpected object near byte {self._u.tell()}")


def _open_grr(path: Path) -> tuple[ResultHeader, _RowStream]:
    f = open(path, "rb")  # noqa: SIM115 - the row stream closes it
    u = msgpack.Unpacker(f, raw=False, strict_map_key=False, max_buffer_size=64 << 20)
    try:
        head = next(u)
    except (StopIteration, msgpack.UnpackException, ValueError, TypeError) as e:
        f.close()
        raise ResultLogError(f"{path}: no result header (empty or not a .grr result log)") from e
    try:
        header = checked_header(head, path)
    except ResultLogError:
        f.close()
        raise
    return header, _RowStream(path, header, u, f)


_V1_FIELDS = len(COLUMNS) - 1  # version 1 rows had no `group`


def _resolve(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.suffix == ".parquet" and not p.exists():
        live = p.with_name(p.name + ".grr")
        if live.exists():  # the run is still going (or crashed): read its stream
            return live
    if not p.exists():
        raise ResultLogError(f"{p}: no such result file")
    if not p.is_file():
        raise ResultLogError(f"{p}: not a file")
    if p.suffix not in (".parquet", ".grr"):
        raise ResultLogError(f"{p}: a result log ends in .parquet or .grr")
    return p


def _parquet_file(p: Path) -> pq.ParquetFile:
    """The Parquet file, its schema checked; ResultLogError naming the file if it is damaged."""
    try:
        pf = pq.ParquetFile(p)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as e:  # damaged footer: names too
        raise ResultLogError(f"{p}: not a readable Parquet result log ({e})") from None
    have = pf.schema_arrow
    for f in SCHEMA:
        got = have.field(f.name) if f.name in have.names else None
        if (got is None and f.name not in OPTIONAL_COLUMNS) or (got and got.type != f.type):
            raise ResultLogError(f"{p}: column {f.name!r} is not a gaterush result log's")
    return pf


def iter_rows(path: str | os.PathLike[str]) -> tuple[ResultHeader, Iterator[ResultRow]]:
    """Stream a result log: (header, iterator of ResultRow).

    For a msgpack .grr the header's ``complete``/``end_us`` are known once the iterator is
    exhausted: ``header_after(header, rows)`` returns the completed header. Memory does not grow
    with the length of a Parquet file or a msgpack .grr; an IPC stream is memory-mapped.
    """
    p = _resolve(path)
    if p.suffix == ".parquet":
        pf = _parquet_file(p)
        header = _parquet_header(p, pf)

        def gen() -> Iterator[ResultRow]:
            try:
                for batch in pf.iter_batches(batch_size=65536):
                    batch.validate(full=True)  # UTF-8 and offsets: damage is an error, not a crash
                    yield from _table_rows(_with_optional_columns(batch))
            except (pa.ArrowException, OSError) as e:
                raise ResultLogError(f"{p}: damaged Parquet data ({e})") from None

        return header, gen()
    if _is_stream(p):
        header, table = _read_stream(p)
        return header, _table_rows(table)
    return _open_grr(p)


def _parquet_header(p: Path, pf: pq.ParquetFile) -> ResultHeader:
    raw = (pf.schema_arrow.metadata or {}).get(PARQUET_META_KEY)
    if raw is None:
        raise ResultLogError(f"{p}: parquet file has no gaterush result header")
    return checked_header(_json(raw, p, "header"), p)


def _with_optional_columns(t: Any) -> Any:
    """A table or batch with the OPTIONAL_COLUMNS it lacks (older files) added as nulls."""
    for c in OPTIONAL_COLUMNS:
        if c not in t.schema.names:
            t = t.append_column(SCHEMA.field(c), pa.nulls(len(t), pa.string()))
    return t


def read_results(path: str | os.PathLike[str]) -> tuple[ResultHeader, pa.Table]:
    """Read a whole result log (.grr or .parquet, finished, running or truncated) as (header, Table).

    The table has :data:`SCHEMA`. For a running or crashed run it holds every complete row written
    so far and ``header.complete`` is False.
    """
    p = _resolve(path)
    if p.suffix == ".parquet":
        pf = _parquet_file(p)
        header = _parquet_header(p, pf)
        try:
            table = _with_optional_columns(pf.read().replace_schema_metadata(None))
            table.validate(full=True)  # UTF-8 and offsets, as an IPC stream's batches are checked
            return header, time_messages(table)
        except (pa.ArrowException, OSError) as e:
            raise ResultLogError(f"{p}: damaged Parquet data ({e})") from None
    if _is_stream(p):
        header, table = _read_stream(p)
        return header, time_messages(table)
    header, rows = _open_grr(p)
    batches = list(_batches(rows, 262144))
    return header_after(header, rows), time_messages(pa.Table.from_batches(batches, schema=SCHEMA))
