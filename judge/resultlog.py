"""The result log: one row per replayed request, written as the run goes, readable while it runs.

Format (version 1)
------------------
Two encodings hold the same rows:

* ``.grr`` (msgpack stream): one map (the header, :class:`ResultHeader` as a dict with
  ``"format": "gaterush-results"``), then one array per row in :data:`COLUMNS` order, then at a
  clean close one map ``{"end": {...}}`` (the trailer: ``end_us``, ``rows``). The writer flushes at
  most every :data:`FLUSH_S` seconds, so a crash loses at most that much; a truncated file is read
  up to its last complete row. Rows are in completion order, not sorted.
* ``.parquet``: the columns below, the header as JSON in the file metadata key
  ``gaterush.results``. Parquet cannot be read before its footer exists, so while a run writes
  ``out.parquet`` its rows go to ``out.parquet.grr`` (readable while running, and what survives a
  crash); at the end that file is converted to Parquet and removed.

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

Version 1 files have no ``group`` column (14 fields per .grr row): they read with nulls there.

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
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import msgpack
import pyarrow as pa
import pyarrow.parquet as pq

from judge.realtime_messages import time_messages

# The columns' types and the `metric` values are shared with sim/'s predicted rows.
from judge.rows import (  # noqa: F401 - re-exported for replay/
    DASHBOARD_LOAD,
    DASHBOARD_TARGET,
    DROPPED_EVENTS,
    OPTIONAL_COLUMNS,
    REALTIME_JOIN,
    REALTIME_UPDATE_LATENCY,
    SCHEMA,
)
from traces.outputs import atomic

RESULT_FORMAT = "gaterush-results"
RESULT_VERSION = 2
FLUSH_S = 0.2
PARQUET_META_KEY = b"gaterush.results"


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


def pack_row(row: tuple) -> bytes:
    """One row encoded as the .grr stream holds it (workers send these to the writer)."""
    return msgpack.packb(list(row), use_bin_type=True)


class ResultWriter:
    """Append rows to a result log as they complete, flushing at most every FLUSH_S seconds.

    ``add`` is cheap (the row is packed into a buffer); the buffer reaches the file when
    ``FLUSH_S`` has passed since the last write, on ``flush()``, and on ``close()``.
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
        self._packer = msgpack.Packer(use_bin_type=True)
        self._buf = bytearray()
        self._file: BinaryIO = open(self.stream_path, "wb")  # noqa: SIM115 - closed in close()
        with self._naming_the_file():
            self._file.write(self._packer.pack(header.to_dict()))
            self._file.flush()
        self._last_flush = time.monotonic()
        self._closed = False

    def add(self, row: tuple) -> None:
        """Append one row (a ResultRow or a tuple in COLUMNS order)."""
        self._buf += self._packer.pack(list(row))
        self.rows += 1
        if time.monotonic() - self._last_flush >= FLUSH_S:
            self.flush()

    def add_packed(self, data: bytes, rows: int) -> None:
        """Append rows already packed with pack_row (from a worker process)."""
        self._buf += data
        self.rows += rows
        if time.monotonic() - self._last_flush >= FLUSH_S:
            self.flush()

    def flush(self) -> None:
        """Write buffered rows to the file (and the OS), so readers and crashes see them."""
        with self._naming_the_file():
            if self._buf:
                self._file.write(self._buf)
                self._buf.clear()
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
        """Write the trailer, and for a .parquet target convert the stream and remove it.

        `trailer` holds what is known only at the end (TRAILER_FIELDS of the header: end_state,
        sender); the reader puts it into the header.
        """
        if self._closed:
            return
        self._closed = True
        self.flush()
        extra = {k: v for k, v in trailer.items() if k in TRAILER_FIELDS and v is not None}
        end = {"end_us": end_us, "rows": self.rows, **extra}
        self._file.write(self._packer.pack({"end": end}))
        self._file.close()
        if extra.get("lost"):
            self.header = ResultHeader.from_dict({**self.header.to_dict(), "lost": extra["lost"]})
        if self.parquet:
            final = ResultHeader.from_dict(
                {**self.header.to_dict(), "complete": True, "end_us": end_us, **extra}
            )
            _grr_to_parquet(self.stream_path, self.path, final)
            self.stream_path.unlink()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rows_to_ipc(rows: list[tuple]) -> bytes:
    """Rows (COLUMNS order) as one Arrow IPC stream of one record batch: what shards stream back."""
    n = len(COLUMNS)
    full = (
        r if len(r) == n else (*r, *[None] * (n - len(r))) for r in rows
    )  # rows without `group`
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, SCHEMA) as w:
        for batch in _batches(full, 0):  # type: ignore[arg-type]
            w.write_batch(batch)
    return sink.getvalue().to_pybytes()


def rows_from_ipc(data: bytes) -> list[ResultRow]:
    """The rows of an Arrow IPC stream written by rows_to_ipc."""
    table = pa.ipc.open_stream(data).read_all()
    return [
        ResultRow(*r) for r in zip(*(table.column(c).to_pylist() for c in COLUMNS), strict=True)
    ]


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


def _grr_to_parquet(src: Path, dst: Path, final: ResultHeader, batch_rows: int = 65536) -> None:
    _, rows = iter_rows(src)
    meta = {PARQUET_META_KEY: json.dumps(final.to_dict()).encode()}
    try:
        with atomic(dst) as tmp, pq.ParquetWriter(tmp, SCHEMA.with_metadata(meta)) as w:
            for batch in _batches(rows, batch_rows):
                w.write_batch(batch)
    except (OSError, pa.ArrowException) as e:
        raise ResultLogError(
            f"{dst}: cannot write the result log ({' '.join(str(e).split())}); its rows are in {src}"
        ) from None


def header_after(header: ResultHeader, rows: Iterator[ResultRow]) -> ResultHeader:
    """The header completed with the trailer, once `rows` (from iter_rows) is exhausted."""
    return getattr(rows, "final_header", None) or header


def _batches(rows: Iterator[ResultRow], n: int) -> Iterator[pa.RecordBatch]:
    cols: list[list[Any]] = [[] for _ in COLUMNS]
    count = 0
    for row in rows:
        for c, v in zip(cols, row, strict=True):
            c.append(v)
        count += 1
        if count == n:
            yield pa.RecordBatch.from_arrays(
                [pa.array(c, t.type) for c, t in zip(cols, SCHEMA, strict=True)], schema=SCHEMA
            )
            cols = [[] for _ in COLUMNS]
            count = 0
    if count or not n:
        yield pa.RecordBatch.from_arrays(
            [pa.array(c, t.type) for c, t in zip(cols, SCHEMA, strict=True)], schema=SCHEMA
        )


class _RowStream:
    """Iterator over the rows of a .grr file; sets `final_header` when the trailer is read."""

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
            except (msgpack.UnpackValueError, msgpack.ExtraData, ValueError) as e:
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
                d = self.header.to_dict()
                d.update(complete=True, end_us=end.get("end_us"))
                d.update({k: end[k] for k in TRAILER_FIELDS if k in end})
                self.final_header = ResultHeader.from_dict(d)
                continue
            raise ResultLogError(f"{self.path}: unexpected object near byte {self._u.tell()}")


def _open_grr(path: Path) -> tuple[ResultHeader, _RowStream]:
    f = open(path, "rb")  # noqa: SIM115 - the row stream closes it
    u = msgpack.Unpacker(f, raw=False, strict_map_key=False, max_buffer_size=64 << 20)
    try:
        head = next(u)
    except (StopIteration, msgpack.UnpackException, ValueError) as e:
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
    except (pa.ArrowException, OSError) as e:
        raise ResultLogError(f"{p}: not a readable Parquet result log ({e})") from None
    have = pf.schema_arrow
    for f in SCHEMA:
        got = have.field(f.name) if f.name in have.names else None
        if (got is None and f.name not in OPTIONAL_COLUMNS) or (got and got.type != f.type):
            raise ResultLogError(f"{p}: column {f.name!r} is not a gaterush result log's")
    return pf


def iter_rows(path: str | os.PathLike[str]) -> tuple[ResultHeader, Iterator[ResultRow]]:
    """Stream a result log: (header, iterator of ResultRow). Memory does not grow with its length.

    For a .grr (or a running .parquet's stream) the header's ``complete``/``end_us`` are known once
    the iterator is exhausted: ``header_after(header, rows)`` returns the completed header.
    """
    p = _resolve(path)
    if p.suffix == ".parquet":
        pf = _parquet_file(p)
        header = _parquet_header(p, pf)

        def gen() -> Iterator[ResultRow]:
            try:
                for batch in pf.iter_batches(batch_size=65536):
                    batch = _with_optional_columns(batch)
                    yield from (
                        ResultRow(*r)
                        for r in zip(*(batch.column(c).to_pylist() for c in COLUMNS), strict=True)
                    )
            except (pa.ArrowException, OSError) as e:
                raise ResultLogError(f"{p}: damaged Parquet data ({e})") from None

        return header, gen()
    return _open_grr(p)


def _parquet_header(p: Path, pf: pq.ParquetFile) -> ResultHeader:
    raw = (pf.schema_arrow.metadata or {}).get(PARQUET_META_KEY)
    if raw is None:
        raise ResultLogError(f"{p}: parquet file has no gaterush result header")
    try:
        obj = json.loads(raw)
    except ValueError as e:
        raise ResultLogError(f"{p}: the result header is not JSON ({e})") from None
    return checked_header(obj, p)


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
            return header, time_messages(table)
        except (pa.ArrowException, OSError) as e:
            raise ResultLogError(f"{p}: damaged Parquet data ({e})") from None
    header, rows = _open_grr(p)
    batches = list(_batches(rows, 262144))
    return header_after(header, rows), time_messages(pa.Table.from_batches(batches, schema=SCHEMA))
