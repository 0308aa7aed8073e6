"""What a trace holds, in one streaming pass: what `gaterush trace info` prints.

Besides the summary (duration, events per kind and target, peak requests per second overall and
per target, the expected end state) the pass re-folds the events and says whether the header's
counts, targets and expected end state still equal them, and checks the (t_us, seq) order.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from traces.event import TraceError
from traces.header import TraceHeader
from traces.io import open_reader, trace_format
from traces.projection import Projection


@dataclass(frozen=True, slots=True)
class Peak:
    """The busiest second: how many requests started in it, and which second (from the origin)."""

    requests: int
    second: int


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
            "expected": self.expected,
            "header": self.header.to_dict(),
            "header_consistent": not self.mismatches,
            "mismatches": list(self.mismatches),
            "complete": self.complete,
            "problem": self.problem,
        }


@dataclass(slots=True)
class _PeakTracker:
    """Requests per (second, target), kept only for the second in progress (events are sorted)."""

    names: list[str] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)
    sec: int | None = None
    current: dict[int, int] = field(default_factory=dict)
    peak: Peak | None = None
    peaks: dict[int, Peak] = field(default_factory=dict)

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
        for g, c in self.current.items():
            p = self.peaks.get(g)
            if p is None or c > p.requests:
                self.peaks[g] = Peak(c, self.sec)
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


def summarize(path: str | os.PathLike) -> TraceInfo:
    """Read a trace once and summarise it; TraceError if it cannot be opened or is out of order.

    A file that is cut short or corrupt is summarised up to the damage, with `problem` saying why.
    """
    fmt = trace_format(path)
    projection = Projection()
    peaks = _PeakTracker()
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
    mismatches = ()
    if complete:
        mismatches = tuple(
            name
            for name, mine, theirs in (
                ("counts", counts, header.counts),
                ("targets", targets, header.targets),
                ("expected", expected, header.expected),
            )
            if mine != theirs
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
        peak_by_target={peaks.names[g]: p for g, p in peaks.peaks.items()},
        expected=expected,
        mismatches=mismatches,
        problem=problem,
        complete=complete,
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
        lines.append("")
        lines.append(f"{'target':<{width}}  {'requests':>10}  {'peak/s':>7}  at")
        for t, n in sorted(info.targets.items(), key=lambda kv: (-kv[1], kv[0])):
            p = info.peak_by_target.get(t)
            at = "" if p is None else _at(h, p.second)
            lines.append(f"{t:<{width}}  {n:>10,}  {p.requests if p else 0:>7,}  {at}")
        if info.peak is not None:
            lines.append(
                f"{'all targets':<{width}}  {info.requests:>10,}  {info.peak.requests:>7,}  {_at(h, info.peak.second)}"
            )
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
        )
    return "\n".join(lines)


def _at(h: TraceHeader, second: int) -> str:
    rel = clock(second * 1_000_000)[:-4]
    wall = _wall(h.origin_unix_us, second * 1_000_000)
    return f"{rel}  ({wall})" if wall else rel


def info_json(info: TraceInfo) -> str:
    """The `--json` output."""
    return json.dumps(info.to_dict(), indent=2, sort_keys=True, ensure_ascii=False, default=str)
