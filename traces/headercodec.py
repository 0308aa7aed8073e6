"""How a TraceHeader is stored in a file: one JSON-normalised dict, the same in both formats.

Normalising through JSON (tuples become lists, keys strings) is what makes .parquet and .grt
convertible without loss: both store exactly this dict. A header value JSON cannot hold (a
datetime, a set) is refused with a TraceError naming it rather than silently turned into a string.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from traces.event import FORMAT_NAME, FORMAT_VERSION, TraceError
from traces.header import TraceHeader
from traces.limits import MAX_EVENT_ID, MAX_PRICE_CENTS, MAX_TICKETS, allow_huge
from traces.projection import Projection


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
    return _inventory_problem(header.inventory)


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


def finished(header: TraceHeader, projection: Projection) -> TraceHeader:
    """The header with counts, targets and expected end state taken from the folded events."""
    return normalized(
        dataclasses.replace(
            header,
            counts=projection.sorted_counts(),
            targets=projection.sorted_targets(),
            expected=projection.result(),
        )
    )


def cleared(header: TraceHeader) -> TraceHeader:
    """The header without the projections a writer recomputes (what a stream writes first)."""
    return dataclasses.replace(header, counts={}, targets={}, expected={})
