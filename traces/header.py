"""The trace header: what a trace is, where it came from, and what its events add up to; and
how it is stored in a file.

Storage: one JSON-normalised dict, the same in both formats.

Normalising through JSON (tuples become lists, keys strings) is what makes .parquet and .grt
convertible without loss: both store exactly this dict. A header value JSON cannot hold (a
datetime, a set) is refused with a TraceError naming it rather than silently turned into a string.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from traces.event import FORMAT_NAME, FORMAT_VERSION, Event, TraceError
from traces.limits import MAX_EVENT_ID, MAX_PRICE_CENTS, MAX_TICKETS, allow_huge
from traces.projection import Projection


@dataclass(frozen=True, slots=True)
class VenueEvent:
    """One event (a match, a concert) whose tickets the trace sells and scans."""

    id: int
    name: str
    capacity: int
    presold: int  # tickets that exist before the trace starts: codes ticket_code(id, 0..presold-1)
    price_cents: int
    currency: str = "usd"


@dataclass(frozen=True, slots=True)
class Inventory:
    """The data a target must hold before replay: the stand-in seeds exactly this."""

    events: tuple[VenueEvent, ...] = ()
    allow_reentry: bool = False
    # recorded traffic: ticket codes it scanned that are not ticket_code(id, n), as (code, event id)
    tickets: tuple[tuple[str, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "events": [asdict(e) for e in self.events],
            "allow_reentry": self.allow_reentry,
        }
        if self.tickets:
            d["tickets"] = [list(t) for t in self.tickets]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Inventory:
        return cls(
            events=tuple(VenueEvent(**e) for e in d.get("events", ())),
            allow_reentry=bool(d.get("allow_reentry", False)),
            tickets=tuple((str(c), int(e)) for c, e in d.get("tickets", ())),
        )


@dataclass(frozen=True, slots=True)
class TraceHeader:
    """Header of a trace: format, scenario config, seed, origin, counts and expected end state.

    `counts`, `targets` and `expected` are projections of the events (traces.projection), and
    `duration_us`, `peak_rps` and `peak_rps_by_target` their timing (Timing); writers fill them in
    when they close, so they are empty in a header given to a writer. A trace written before the
    header kept its timing has None there (a Parquet reader fills `duration_us` from the column
    statistics); readers that need the peaks then count them from the events.
    """

    scenario: dict[str, Any] = field(default_factory=dict)  # the full, validated scenario config
    seed: int | None = None
    origin_unix_us: int = 0  # wall-clock time of t_us = 0
    inventory: Inventory = field(default_factory=Inventory)
    counts: dict[str, int] = field(default_factory=dict)  # events per kind
    targets: dict[str, int] = field(default_factory=dict)  # events per target
    expected: dict[str, Any] = field(default_factory=dict)  # expected end state (projection)
    duration_us: int | None = None  # t_us of the last event: a replay at speed 1 lasts this long
    peak_rps: int | None = None  # the most requests (events with a target) in one whole second
    peak_rps_by_target: dict[str, int] | None = None  # the same per target
    source: str = "simulate"  # simulate | record | import:<format> | transform:<name>
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = {f: getattr(self, f) for f in self.__slots__}
        d["inventory"] = self.inventory.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TraceHeader:
        known = {k: v for k, v in d.items() if k in cls.__slots__}
        known["inventory"] = Inventory.from_dict(d.get("inventory") or {})
        return cls(**known)


def _first_bad(obj: Any, path: str = "header") -> str | None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                return f"{path}: key {k!r} is not a string"
            bad = _first_bad(v, f"{path}.{k}")
            if bad:
                return bad
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            bad = _first_bad(v, f"{path}[{i}]")
            if bad:
                return bad
    elif isinstance(obj, int) and not isinstance(obj, bool) and not -(2**63) <= obj < 2**64:
        return f"{path}: {obj} is too big for a trace header (64-bit integers only)"
    elif not (obj is None or isinstance(obj, bool | int | float | str)):
        return f"{path}: a {type(obj).__name__} cannot be stored in a trace header"
    return None


def header_to_obj(header: TraceHeader) -> dict[str, Any]:
    """The header as the plain dict both formats store (JSON-normalised, keys sorted)."""
    d = header.to_dict()
    bad = _first_bad(d)
    if bad:
        raise TraceError(bad)
    return json.loads(header_json_of(d))


def header_json_of(obj: dict[str, Any]) -> str:
    """Canonical JSON text of a header dict: sorted keys, no whitespace, so bytes are deterministic."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def header_from_obj(obj: Any, where: str) -> TraceHeader:
    """A TraceHeader from a stored dict, or TraceError naming `where` and what is wrong."""
    if not isinstance(obj, dict):
        raise TraceError(f"{where}: not a gaterush trace (no header map at the start)")
    if obj.get("format") != FORMAT_NAME:
        raise TraceError(
            f"{where}: not a gaterush trace (format is {obj.get('format')!r}, expected {FORMAT_NAME!r})"
        )
    version = obj.get("version")
    if not isinstance(version, int) or version < 1:
        raise TraceError(f"{where}: bad trace format version {version!r}")
    if version > FORMAT_VERSION:
        raise TraceError(
            f"{where}: trace format version {version} is newer than this gaterush reads ({FORMAT_VERSION})"
        )
    try:
        header = TraceHeader.from_dict(obj)
    except (TypeError, ValueError, AttributeError) as err:
        raise TraceError(f"{where}: malformed header: {err}") from None
    problem = header_problem(header)
    if problem:
        raise TraceError(f"{where}: bad header: {problem}")
    return header


def _int_in(v: Any, low: int, high: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def header_problem(header: TraceHeader) -> str | None:
    """What is wrong with a decoded header's values (types, signs, ranges), or None.

    Like a scenario's, the message names the dotted key: `inventory.events[0].presold: ...`.
    """
    tops = (("scenario", dict), ("counts", dict), ("targets", dict), ("expected", dict),
            ("source", str))  # fmt: skip
    for name, tp in tops:
        if not isinstance(getattr(header, name), tp):
            return f"{name}: expected a {tp.__name__}, got {getattr(header, name)!r:.60}"
    if header.seed is not None and not _int_in(header.seed, 0, 2**64 - 1):
        return f"seed: expected an integer >= 0 or null, got {header.seed!r:.60}"
    if not _int_in(header.origin_unix_us, -(2**63), 2**63 - 1):
        return f"origin_unix_us: expected an integer, got {header.origin_unix_us!r:.60}"
    for name in ("counts", "targets"):
        for k, v in getattr(header, name).items():
            if not _int_in(v, 0, 2**63 - 1):
                return f"{name}.{k}: expected an integer >= 0, got {v!r:.60}"
    return _timing_problem(header) or _inventory_problem(header.inventory)


def _timing_problem(header: TraceHeader) -> str | None:
    if header.duration_us is not None and not _int_in(header.duration_us, -(2**63), 2**63 - 1):
        return f"duration_us: expected an integer or null, got {header.duration_us!r:.60}"
    if header.peak_rps is not None and not _int_in(header.peak_rps, 0, 2**63 - 1):
        return f"peak_rps: expected an integer >= 0 or null, got {header.peak_rps!r:.60}"
    by_target = header.peak_rps_by_target
    if by_target is None:
        return None
    if not isinstance(by_target, dict):
        return f"peak_rps_by_target: expected a dict or null, got {by_target!r:.60}"
    for k, v in by_target.items():
        if not _int_in(v, 0, 2**63 - 1):
            return f"peak_rps_by_target.{k}: expected an integer >= 0, got {v!r:.60}"
    return None


def _inventory_problem(inventory: Any) -> str | None:
    ranges = {"id": (1, MAX_EVENT_ID), "capacity": (0, None), "presold": (0, None),
              "price_cents": (0, MAX_PRICE_CENTS)}  # fmt: skip
    for i, ev in enumerate(inventory.events):
        key = f"inventory.events[{i}]"
        for name, (low, high) in ranges.items():
            v = getattr(ev, name)
            top = high if high is not None else (2**63 - 1 if allow_huge() else MAX_TICKETS)
            if not _int_in(v, low, top):
                return f"{key}.{name}: expected an integer from {low:,} to {top:,}, got {v!r:.60}"
        for name in ("name", "currency"):
            if not isinstance(getattr(ev, name), str):
                return f"{key}.{name}: expected a string, got {getattr(ev, name)!r:.60}"
    return None


def normalized(header: TraceHeader) -> TraceHeader:
    """The header as a reader will see it after a write (tuples become lists, and so on)."""
    return TraceHeader.from_dict(header_to_obj(header))


def finished(header: TraceHeader, projection: Projection, timing: Timing) -> TraceHeader:
    """The header with counts, targets, expected end state and timing taken from the folded events."""
    return normalized(
        dataclasses.replace(
            header,
            counts=projection.sorted_counts(),
            targets=projection.sorted_targets(),
            expected=projection.result(),
            **timing.result(),
        )
    )


def cleared(header: TraceHeader) -> TraceHeader:
    """The header without the folds a writer recomputes (what a stream writes first)."""
    return dataclasses.replace(header, counts={}, targets={}, expected={}, duration_us=None,
                               peak_rps=None, peak_rps_by_target=None)  # fmt: skip


TIMING_FIELDS = ("duration_us", "peak_rps", "peak_rps_by_target")


class Timing:
    """The last event's t_us and the busiest whole second (requests per target), folded in order.

    The writers fold every event they write (`add_many` for Events, `add_batch` for RecordBatches:
    the same result), so a replay's progress, result header and plan read them from the header.
    """

    __slots__ = ("last_us", "peak", "peaks", "_sec", "_current")

    def __init__(self) -> None:
        self.last_us: int | None = None
        self.peak = 0
        self.peaks: dict[str, int] = {}
        self._sec: int | None = None
        self._current: dict[str, int] = {}

    def _close_second(self) -> None:
        current = self._current
        if current:
            self.peak = max(self.peak, sum(current.values()))
            peaks = self.peaks
            for t, n in current.items():
                if n > peaks.get(t, 0):
                    peaks[t] = n
            self._current = {}

    def add_many(self, events: Iterable[Event]) -> None:
        """Fold events (sorted by t_us) one by one."""
        for e in events:
            t_us, target = e[0], e[4]
            self.last_us = t_us
            if target is None:
                continue
            sec = t_us // 1_000_000
            if sec != self._sec:
                self._close_second()
                self._sec = sec
            current = self._current
            current[target] = current.get(target, 0) + 1

    def add_batch(self, batch: pa.RecordBatch) -> None:
        """Fold a RecordBatch of traces.schema.SCHEMA (sorted by t_us) column-wise."""
        if batch.num_rows == 0:
            return
        t_us = batch.column("t_us").to_numpy()
        self.last_us = int(t_us[-1])
        target = batch.column("target")
        if target.null_count == len(target):
            return
        if not pa.types.is_dictionary(target.type):
            target = target.dictionary_encode()
        names = target.dictionary.to_pylist()
        idx = target.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        mask = idx >= 0
        secs = np.floor_divide(t_us[mask], 1_000_000)
        pairs, tally = np.unique(np.stack([secs, idx[mask]], axis=1), axis=0, return_counts=True)
        for (sec, i), n in zip(pairs.tolist(), tally.tolist(), strict=True):
            if sec != self._sec:
                self._close_second()
                self._sec = sec
            current = self._current
            current[names[i]] = current.get(names[i], 0) + n

    def result(self) -> dict[str, Any]:
        """The header's timing fields."""
        self._close_second()
        return {
            "duration_us": self.last_us if self.last_us is not None else 0,
            "peak_rps": self.peak,
            "peak_rps_by_target": dict(sorted(self.peaks.items())),
        }
