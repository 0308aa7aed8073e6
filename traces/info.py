"""What a trace holds, in one streaming pass: what `gaterush trace info` prints.

Besides the summary (duration, events per kind and target, peak requests per second and per
minute overall and per target, a timeline of requests per time bucket, the expected end state) the
pass re-folds the events and says whether the header's counts, targets and expected end state
still equal them, and checks the (t_us, seq) order.

Memory is bounded by the timeline's rows (at most MAX_ROWS with the automatic bucket), the last
60 seconds of per-target counts and the projection's state; never by the number of events.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import textwrap
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from traces import durations
from traces.event import (
    ARRIVE,
    EXITED,
    TARGET_PI_CONFIRM,
    TARGET_PI_CREATE,
    TARGET_REST_EVENTS,
    TARGET_REST_TICKETS,
    TARGET_REVENUE,
    TARGET_SCAN,
    TARGET_WEBHOOK,
    VIEW,
    TraceError,
)
from traces.header import TraceHeader
from traces.io import open_reader, trace_format
from traces.projection import Projection

SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
MAX_ROWS = 60  # the automatic bucket widens until the timeline has at most this many rows
MAX_ASKED_ROWS = 10_000  # a bucket asked for (--bucket) that gives more rows is refused

# Automatic bucket widths; each divides the next, so counts re-bin exactly as a timeline widens.
_LADDER = (
    *(n * SECOND for n in (1, 5, 10, 30)),
    *(n * MINUTE for n in (1, 5, 10, 30)),
    *(n * HOUR for n in (1, 2, 6, 12)),
    DAY,
)

# Timeline columns. "pass-outs" (scans expected `exited`) are also counted in "scan"; "requests"
# is the sum of the columns that have a target (all but "arrive" and "pass-outs").
TIMELINE_COLUMNS = (
    "arrive",
    "scan",
    "pass-outs",
    "webhook",
    "create",
    "confirm",
    "dashboard",
    "realtime",
    "other",
)
_ARRIVE, _SCAN, _PASSOUT, _WEBHOOK, _CREATE, _CONFIRM, _DASH, _REALTIME, _OTHER = range(9)
_REQUEST_COLUMNS = (_SCAN, _WEBHOOK, _CREATE, _CONFIRM, _DASH, _REALTIME, _OTHER)
_BY_TARGET = {
    TARGET_SCAN: _SCAN,
    TARGET_WEBHOOK: _WEBHOOK,
    TARGET_PI_CREATE: _CREATE,
    TARGET_PI_CONFIRM: _CONFIRM,
    TARGET_REST_EVENTS: _DASH,
    TARGET_REST_TICKETS: _DASH,
    TARGET_REVENUE: _DASH,
}
COLUMN_HELP = (
    "arrive = attendees reaching the gates (no request); pass-outs = scans expected `exited`"
    " (also in scan); create/confirm = Stripe PaymentIntents; dashboard = views of rest:events,"
    " rest:tickets, rpc:event_revenue; realtime = subscriptions; other = any other target;"
    " requests = all targets"
)


@dataclass(frozen=True, slots=True)
class Peak:
    """A busiest window: how many requests started in it, and its first second from the origin.

    For the peak second the window is that second; for the peak minute it is the 60 s from it.
    """

    requests: int
    second: int


@dataclass(frozen=True, slots=True)
class Bucket:
    """One timeline row: the bucket's start (µs from the origin) and its counts per column."""

    start_us: int
    counts: tuple[int, ...]  # in TIMELINE_COLUMNS order

    @property
    def requests(self) -> int:
        """Events with a target in this bucket: what replay sends."""
        return sum(self.counts[i] for i in _REQUEST_COLUMNS)

    def to_dict(self) -> dict[str, int]:
        """The row for `--json`: start and one key per column, plus requests."""
        return {
            "start_us": self.start_us,
            **dict(zip(TIMELINE_COLUMNS, self.counts, strict=True)),
            "requests": self.requests,
        }


@dataclass(frozen=True, slots=True)
class Timeline:
    """Requests (and arrivals, pass-outs) per time bucket; only buckets with traffic have a row."""

    bucket_us: int
    auto: bool  # True: chosen from the trace's length and MAX_ROWS; False: asked for (--bucket)
    rows: tuple[Bucket, ...]

    def total(self, column: str) -> int:
        """The column's sum over every row."""
        i = TIMELINE_COLUMNS.index(column)
        return sum(r.counts[i] for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for `--json`."""
        return {
            "bucket_us": self.bucket_us,
            "bucket": bucket_label(self.bucket_us),
            "auto": self.auto,
            "columns": [*TIMELINE_COLUMNS, "requests"],
            "rows": [r.to_dict() for r in self.rows],
        }


_FRACTIONAL = re.compile(r"\d[.e]|\.\d")  # a bucket is a whole number of its unit
_UNIT_US = {"ms": 1000, "s": SECOND, "sec": SECOND, "m": MINUTE, "min": MINUTE, "h": HOUR, "d": DAY}
_MAX_BUCKET_US = 366 * DAY


def parse_bucket(text: str, what: str = "bucket") -> int:
    """A bucket width such as 500ms, 10s, 5m, 1h or 1d (a bare number is seconds), in µs.

    ValueError naming `what` and the text when it is not one, is zero, or is longer than a year.
    """
    try:
        us = durations.parse_us(text, bare="s")
    except ValueError:
        us = None
    if us is None or _FRACTIONAL.search(text.lower()):
        raise ValueError(
            f"{what} {text!r}: expected a whole number and a unit (ms, s, m, h, d), e.g. 10s or 5m"
        )
    if us <= 0:
        raise ValueError(f"{what} {text!r}: must be longer than 0")
    if us > _MAX_BUCKET_US:
        raise ValueError(f"{what} {text!r}: at most 366d")
    return us


def bucket_label(us: int) -> str:
    """A bucket width in the largest whole unit: 10 s -> '10s', 600 s -> '10m'."""
    for unit in ("d", "h", "m", "s"):
        if us % _UNIT_US[unit] == 0:
            return f"{us // _UNIT_US[unit]}{unit}"
    return f"{us / 1000:g}ms"


def auto_floor(duration_us: int) -> int:
    """The finest automatic bucket for a trace this long: 1 s under 2 min, 10 s under 20 min,
    1 min under 3 h, else 10 min (then widened until the timeline has at most MAX_ROWS rows)."""
    if duration_us < 2 * MINUTE:
        return SECOND
    if duration_us < 20 * MINUTE:
        return 10 * SECOND
    if duration_us < 3 * HOUR:
        return MINUTE
    return 10 * MINUTE


def _wider(us: int) -> int:
    """The next automatic width after `us` (doubling beyond a day)."""
    return next((w for w in _LADDER if w > us), 2 * us)


def _column_of_target(name: str | None) -> int:
    if name is None:
        return -1
    col = _BY_TARGET.get(name)
    if col is not None:
        return col
    return _REALTIME if name.startswith("realtime:") else _OTHER


def _per_row(col: pa.Array, fn: Any, null: Any) -> np.ndarray:
    """fn(value) of each row of a (dictionary) string column, computed once per distinct value;
    `null` for null rows."""
    if not pa.types.is_dictionary(col.type):
        col = col.dictionary_encode()
    values = [fn(v) for v in col.dictionary.to_pylist()] + [null]
    idx = col.indices.fill_null(len(values) - 1).to_numpy(zero_copy_only=False)
    return np.asarray(values)[idx]


@dataclass(slots=True)
class _TimelineBuilder:
    """Counts per (bucket, column), folded batch by batch; auto mode widens as the trace grows.

    The rows held are at most MAX_ROWS (+ the batch being added) in auto mode, else the rows the
    asked-for bucket gives, at most MAX_ASKED_ROWS (ValueError beyond): never the events.
    """

    bucket_us: int
    auto: bool
    first_us: int | None = None
    rows: dict[int, list[int]] = field(default_factory=dict)  # bucket index -> counts
    last: int | None = None  # highest bucket index held

    def add(self, batch: pa.RecordBatch) -> None:
        t = batch.column("t_us").to_numpy()
        if self.first_us is None:
            self.first_us = int(t[0])
        by_target = _per_row(batch.column("target"), _column_of_target, -1)
        is_view = _per_row(batch.column("kind"), lambda k: k == VIEW, False)
        is_arrive = _per_row(batch.column("kind"), lambda k: k == ARRIVE, False)
        col = np.where(
            by_target >= 0,
            np.where(is_view & (by_target == _OTHER), _DASH, by_target),
            np.where(is_arrive, _ARRIVE, -1),
        )
        passout = _per_row(batch.column("expect"), lambda x: x == EXITED, False)
        keep = col >= 0
        t_col = np.concatenate([t[keep], t[passout]])
        if self.auto:  # a batch with nothing to count still makes the trace longer
            self._widen(t_col, int(t[-1]))
        if t_col.size == 0:
            return
        cols = np.concatenate([col[keep], np.full(int(passout.sum()), _PASSOUT)])
        b = np.floor_divide(t_col, self.bucket_us)
        keys, tally = np.unique(b * len(TIMELINE_COLUMNS) + cols, return_counts=True)
        rows, width = self.rows, len(TIMELINE_COLUMNS)
        for key, n in zip(keys.tolist(), tally.tolist(), strict=True):
            bucket, c = divmod(key, width)
            row = rows.get(bucket)
            if row is None:
                row = rows[bucket] = [0] * width
            row[c] += n
        top = int(b.max())
        self.last = top if self.last is None else max(self.last, top)
        if not self.auto and len(rows) > MAX_ASKED_ROWS:
            raise ValueError(
                f"{bucket_label(self.bucket_us)} buckets give more than {MAX_ASKED_ROWS:,} rows"
                " with traffic; choose a wider bucket"
            )

    def _widen(self, t: np.ndarray, last_us: int) -> None:
        """Widen the bucket until the trace so far fits in MAX_ROWS rows and the length's floor."""
        assert self.first_us is not None
        floor = auto_floor(last_us - self.first_us)
        while True:
            if self.bucket_us >= floor:
                if not t.size:
                    return
                held = np.unique(np.floor_divide(t, self.bucket_us))
                n = len(self.rows) + held.size - int(held[0] == self.last)
                if n <= MAX_ROWS:
                    return
            self._rebin(_wider(self.bucket_us))

    def _rebin(self, width_us: int) -> None:
        merged: dict[int, list[int]] = {}
        for b, counts in self.rows.items():
            nb = b * self.bucket_us // width_us
            row = merged.get(nb)
            if row is None:
                merged[nb] = counts
            else:
                merged[nb] = [x + y for x, y in zip(row, counts, strict=True)]
        self.rows = merged
        self.last = None if self.last is None else self.last * self.bucket_us // width_us
        self.bucket_us = width_us

    def result(self) -> Timeline:
        return Timeline(
            bucket_us=self.bucket_us,
            auto=self.auto,
            rows=tuple(Bucket(b * self.bucket_us, tuple(self.rows[b])) for b in sorted(self.rows)),
        )


@dataclass(frozen=True, slots=True)
class TraceInfo:
    """Summary of one trace file (see the module docstring)."""

    path: str
    format: str
    size_bytes: int
    header: TraceHeader
    events: int
    first_us: int | None
    last_us: int | None
    counts: dict[str, int]
    targets: dict[str, int]
    requests: int  # events with a target: what replay sends
    peak: Peak | None
    peak_by_target: dict[str, Peak]
    expected: dict[str, Any]  # folded from the events
    mismatches: tuple[str, ...] = ()  # header fields that disagree with the events
    problem: str | None = None  # why reading stopped early (truncated or corrupt file)
    complete: bool = True
    peak_minute: Peak | None = None  # the busiest 60 s (whole seconds) over all targets
    peak_minute_by_target: dict[str, Peak] = field(default_factory=dict)
    timeline: Timeline | None = None

    @property
    def duration_us(self) -> int:
        """Time from the first to the last event."""
        return 0 if self.first_us is None or self.last_us is None else self.last_us - self.first_us

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for `--json`."""
        return {
            "path": self.path,
            "format": self.format,
            "size_bytes": self.size_bytes,
            "events": self.events,
            "first_us": self.first_us,
            "last_us": self.last_us,
            "duration_s": self.duration_us / 1e6,
            "requests": self.requests,
            "counts": self.counts,
            "targets": self.targets,
            "peak_rps": None
            if self.peak is None
            else {"requests": self.peak.requests, "second": self.peak.second},
            "peak_rps_by_target": {
                t: {"requests": p.requests, "second": p.second}
                for t, p in sorted(self.peak_by_target.items())
            },
            "peak_rpm": _peak_dict(self.peak_minute),
            "peak_rpm_by_target": {
                t: _peak_dict(p) for t, p in sorted(self.peak_minute_by_target.items())
            },
            "timeline": None if self.timeline is None else self.timeline.to_dict(),
            "expected": self.expected,
            "header": self.header.to_dict(),
            "header_consistent": not self.mismatches,
            "mismatches": list(self.mismatches),
            "complete": self.complete,
            "problem": self.problem,
        }


def _peak_dict(p: Peak | None) -> dict[str, int] | None:
    return None if p is None else {"requests": p.requests, "second": p.second}


@dataclass(slots=True)
class _Minute:
    """Requests in the last 60 whole seconds, and the busiest such 60 s so far."""

    secs: deque[tuple[int, int]] = field(default_factory=deque)
    total: int = 0
    best: Peak | None = None

    def add(self, sec: int, n: int) -> None:
        q = self.secs
        while q and q[0][0] <= sec - 60:
            self.total -= q.popleft()[1]
        q.append((sec, n))
        self.total += n
        if self.best is None or self.total > self.best.requests:
            self.best = Peak(self.total, q[0][0])


@dataclass(slots=True)
class _PeakTracker:
    """Requests per (second, target), kept only for the second in progress (events are sorted),
    and per target the last 60 seconds of them for the busiest minute."""

    names: list[str] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)
    sec: int | None = None
    current: dict[int, int] = field(default_factory=dict)
    peak: Peak | None = None
    peaks: dict[int, Peak] = field(default_factory=dict)
    minute: _Minute = field(default_factory=_Minute)
    minutes: dict[int, _Minute] = field(default_factory=dict)

    def add(self, batch: pa.RecordBatch) -> None:
        target = batch.column("target")
        if target.null_count == len(target):
            return
        if not pa.types.is_dictionary(target.type):
            target = target.dictionary_encode()
        gids = np.array([self._id(v) for v in target.dictionary.to_pylist()] + [-1], dtype=np.int64)
        idx = target.indices.fill_null(len(gids) - 1).to_numpy(zero_copy_only=False)
        gid = gids[idx]
        mask = gid >= 0
        secs = np.floor_divide(batch.column("t_us").to_numpy()[mask], 1_000_000)
        pairs, tally = np.unique(np.stack([secs, gid[mask]], axis=1), axis=0, return_counts=True)
        for (sec, g), c in zip(pairs.tolist(), tally.tolist(), strict=True):
            if sec != self.sec:
                self.finish()
                self.sec = sec
            self.current[g] = self.current.get(g, 0) + c

    def _id(self, name: str | None) -> int:
        if name is None:
            return -1
        i = self.ids.get(name)
        if i is None:
            i = self.ids[name] = len(self.names)
            self.names.append(name)
        return i

    def finish(self) -> None:
        if self.sec is None or not self.current:
            return
        total = sum(self.current.values())
        if self.peak is None or total > self.peak.requests:
            self.peak = Peak(total, self.sec)
        self.minute.add(self.sec, total)
        for g, c in self.current.items():
            p = self.peaks.get(g)
            if p is None or c > p.requests:
                self.peaks[g] = Peak(c, self.sec)
            m = self.minutes.get(g)
            if m is None:
                m = self.minutes[g] = _Minute()
            m.add(self.sec, c)
        self.current = {}


def _check_order(
    batch: pa.RecordBatch, last: tuple[int, int] | None, done: int, path: str
) -> tuple[int, int] | None:
    if batch.num_rows == 0:
        return last
    t = batch.column("t_us").to_numpy()
    s = batch.column("seq").to_numpy()
    if last is not None:
        t = np.concatenate([[last[0]], t])
        s = np.concatenate([[last[1]], s])
    dt_, ds = np.diff(t), np.diff(s)
    bad = np.flatnonzero((dt_ < 0) | ((dt_ == 0) & (ds <= 0)))
    if bad.size:
        i = int(bad[0]) + 1
        row = done + i - (1 if last is not None else 0)
        raise TraceError(
            f"{path}: row {row}: events are not sorted by (t_us, seq) with unique seq: "
            f"({int(t[i])}, {int(s[i])}) after ({int(t[i - 1])}, {int(s[i - 1])})"
        )
    return int(t[-1]), int(s[-1])


def summarize(path: str | os.PathLike, bucket_us: int | None = None) -> TraceInfo:
    """Read a trace once and summarise it; TraceError if it cannot be opened or is out of order.

    `bucket_us` is the timeline's bucket width (see parse_bucket); None chooses it from the
    trace's length (auto_floor) and widens it until the timeline has at most MAX_ROWS rows.
    ValueError if the asked-for width gives more than MAX_ASKED_ROWS rows.
    A file that is cut short or corrupt is summarised up to the damage, with `problem` saying why.
    """
    if bucket_us is not None and bucket_us <= 0:
        raise ValueError(f"bucket_us must be > 0, got {bucket_us}")
    fmt = trace_format(path)
    projection = Projection()
    peaks = _PeakTracker()
    timeline = _TimelineBuilder(bucket_us or SECOND, auto=bucket_us is None)
    first = last = None
    order: tuple[int, int] | None = None
    problem = None
    with open_reader(path) as reader:
        header = reader.header
        try:
            for batch in reader.batches():
                if batch.num_rows == 0:
                    continue
                order = _check_order(batch, order, projection.events, str(path))
                if first is None:
                    first = int(batch.column("t_us")[0].as_py())
                last = order[0]
                projection.add_batch(batch)
                peaks.add(batch)
                timeline.add(batch)
        except TraceError as err:
            if "not sorted" in str(err):
                raise
            problem = str(err)
        complete = reader.complete and problem is None
    peaks.finish()
    counts, targets, expected = (
        projection.sorted_counts(),
        projection.sorted_targets(),
        projection.result(),
    )
    peak_by_target = {peaks.names[g]: p for g, p in peaks.peaks.items()}
    mismatches = ()
    if complete:
        timing = {  # a trace written before the header kept its timing has None there
            "duration_us": last if last is not None else 0,
            "peak_rps": 0 if peaks.peak is None else peaks.peak.requests,
            "peak_rps_by_target": {t: p.requests for t, p in sorted(peak_by_target.items())},
        }
        mismatches = tuple(
            name
            for name, mine, theirs in (
                ("counts", counts, header.counts),
                ("targets", targets, header.targets),
                ("expected", expected, header.expected),
                *((k, v, getattr(header, k)) for k, v in timing.items()),
            )
            if mine != theirs and theirs is not None
        )
    return TraceInfo(
        path=str(path),
        format=fmt,
        size_bytes=os.path.getsize(path),
        header=header,
        events=projection.events,
        first_us=first,
        last_us=last,
        counts=counts,
        targets=targets,
        requests=sum(targets.values()),
        peak=peaks.peak,
        peak_by_target=peak_by_target,
        expected=expected,
        mismatches=mismatches,
        problem=problem,
        complete=complete,
        peak_minute=peaks.minute.best,
        peak_minute_by_target={peaks.names[g]: m.best for g, m in peaks.minutes.items()},
        timeline=timeline.result(),
    )


def clock(us: int) -> str:
    """Microseconds from the origin as +H:MM:SS.mmm (negative times get a minus sign)."""
    sign = "-" if us < 0 else "+"
    ms = abs(us) // 1000
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{sign}{h}:{m:02d}:{s:02d}.{ms:03d}"


def _wall(origin_unix_us: int, offset_us: int) -> str:
    if not origin_unix_us:
        return ""
    try:
        when = dt.datetime.fromtimestamp((origin_unix_us + offset_us) / 1e6, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return ""
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _flat(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.extend(_flat(v, f"{prefix}{k}."))
        else:
            out.append((f"{prefix}{k}", v))
    return out


def format_info(info: TraceInfo) -> str:
    """The human-readable table `gaterush trace info` prints."""
    h = info.header
    lines = [
        f"trace     {info.path}  ({info.format}, {_size(info.size_bytes)}, {h.format} v{h.version})"
    ]
    name = h.scenario.get("name") if isinstance(h.scenario, dict) else None
    bits = (
        [f"source {h.source}"]
        + ([f"scenario {name}"] if name else [])
        + ([f"seed {h.seed}"] if h.seed is not None else [])
    )
    lines.append("made by   " + ", ".join(bits))
    if h.origin_unix_us:
        lines.append(f"origin    {_wall(h.origin_unix_us, 0)}")
    if info.first_us is None:
        lines.append("events    0")
    else:
        lines.append(
            f"events    {info.events:,} from {clock(info.first_us)} to {clock(info.last_us)}"
            f" ({clock(info.duration_us)[1:]} long)"
        )
    lines.append(f"requests  {info.requests:,} (events with a target; replay sends these)")
    for ev in h.inventory.events:
        lines.append(
            f"venue     event {ev.id} {ev.name!r}: capacity {ev.capacity:,}, {ev.presold:,} pre-sold, "
            f"{ev.price_cents / 100:.2f} {ev.currency}"
        )
    if h.inventory.events:
        lines.append(f"re-entry  {'allowed' if h.inventory.allow_reentry else 'not allowed'}")
    lines.append("")
    width = max([len(k) for k in info.counts] + [len(t) for t in info.targets] + [12])
    lines.append(f"{'kind':<{width}}  {'events':>10}")
    for k, n in sorted(info.counts.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"{k:<{width}}  {n:>10,}")
    if info.targets:
        rows = [
            (t, n, info.peak_by_target.get(t), info.peak_minute_by_target.get(t))
            for t, n in sorted(info.targets.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        if info.peak is not None:
            rows.append(("all targets", info.requests, info.peak, info.peak_minute))
        at_w = max(len(_at(h, p.second)) for _, _, p, _ in rows if p is not None)
        lines.append("")
        lines.append(
            f"{'target':<{width}}  {'requests':>10}  {'peak/s':>7}  {'at':<{at_w}}"
            f"  {'peak/min':>8}  60 s from"
        )
        for t, n, p, m in rows:
            at = "" if p is None else _at(h, p.second)
            at_m = "" if m is None else _at(h, m.second)
            lines.append(
                f"{t:<{width}}  {n:>10,}  {p.requests if p else 0:>7,}  {at:<{at_w}}"
                f"  {m.requests if m else 0:>8,}  {at_m}".rstrip()
            )
    if info.timeline is not None and info.timeline.rows:
        lines.append("")
        lines.extend(format_timeline(info.timeline, h))
    lines.append("")
    lines.append("expected end state")
    for k, v in _flat(info.expected):
        lines.append(f"  {k:<28} {v:,}" if isinstance(v, int) else f"  {k:<28} {v}")
    lines.append("")
    if info.problem:
        lines.append(f"PROBLEM   {info.problem}")
        lines.append("          (the summary covers the complete events before it)")
    elif info.mismatches:
        lines.append(
            "header    DIFFERS from the events in: "
            + ", ".join(info.mismatches)
            + " (the file was edited after it was written?)"
        )
    else:
        lines.append(
            "header    ok: its counts, targets and expected end state equal a fold over the events"
            + ("" if h.peak_rps is None else ", and so do its duration and peaks")
        )
    return "\n".join(lines)


def _at(h: TraceHeader, second: int) -> str:
    """+H:MM:SS from the origin, and the wall-clock time of day when the origin is known."""
    rel = clock(second * SECOND)[:-4]
    wall = _wall(h.origin_unix_us, second * SECOND)
    return f"{rel} ({wall[11:19]})" if wall else rel


_BLOCKS = " ▏▎▍▌▋▊▉█"
BAR_WIDTH = 20


def bar(n: int, most: int, width: int = BAR_WIDTH) -> str:
    """`n` out of `most` as a bar of unicode blocks `width` cells long at most (1/8 cell steps);
    any n > 0 shows at least a sliver."""
    if n <= 0 or most <= 0:
        return ""
    eighths = max(1, round(n * width * 8 / most))
    full, part = divmod(eighths, 8)
    return "█" * full + (_BLOCKS[part] if part else "")


def format_timeline(tl: Timeline, h: TraceHeader) -> list[str]:
    """The timeline section of `trace info`: one row per bucket with traffic, and a totals row."""
    shown = [i for i, c in enumerate(TIMELINE_COLUMNS) if tl.total(c)]
    label = bucket_label(tl.bucket_us)
    how = f"automatic (at most {MAX_ROWS} rows; --bucket to choose)" if tl.auto else "--bucket"
    lines = [f"timeline  per {label} bucket, {how}; only buckets with traffic"]
    sub_second = tl.bucket_us % SECOND != 0
    wall_chars = 8 if tl.bucket_us % MINUTE or sub_second else 5

    def at(us: int) -> str:
        rel = clock(us) if sub_second else clock(us)[:-4]
        wall = _wall(h.origin_unix_us, us)
        return f"{rel} {wall[11 : 11 + wall_chars]}" if wall else rel

    stamps = [at(r.start_us) for r in tl.rows]
    at_w = max(len(x) for x in [*stamps, "total"])
    totals = [sum(r.counts[i] for r in tl.rows) for i in range(len(TIMELINE_COLUMNS))]
    requests = sum(r.requests for r in tl.rows)
    widths = [max(len(TIMELINE_COLUMNS[i]), len(f"{totals[i]:,}")) for i in shown]
    req_w = max(len("requests"), len(f"{requests:,}"))
    most = max(r.requests for r in tl.rows)
    head = "  ".join(f"{TIMELINE_COLUMNS[i]:>{w}}" for i, w in zip(shown, widths, strict=True))
    lines.append(f"{'at':<{at_w}}  {head}  {'requests':>{req_w}}")
    for stamp, r in zip(stamps, tl.rows, strict=True):
        cells = "  ".join(f"{r.counts[i]:>{w},}" for i, w in zip(shown, widths, strict=True))
        lines.append(
            f"{stamp:<{at_w}}  {cells}  {r.requests:>{req_w},} {bar(r.requests, most)}".rstrip()
        )
    cells = "  ".join(f"{totals[i]:>{w},}" for i, w in zip(shown, widths, strict=True))
    lines.append(f"{'total':<{at_w}}  {cells}  {requests:>{req_w},}")
    lines.append(f"{'':<{at_w}}  bar: requests, full width = {most:,}")
    lines.extend(textwrap.wrap(COLUMN_HELP, 100, initial_indent="  ", subsequent_indent="  "))
    return lines


def info_json(info: TraceInfo) -> str:
    """The `--json` output."""
    return json.dumps(info.to_dict(), indent=2, sort_keys=True, ensure_ascii=False, default=str)
