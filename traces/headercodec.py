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
        return TraceHeader.from_dict(obj)
    except (TypeError, ValueError, AttributeError) as err:
        raise TraceError(f"{where}: malformed header: {err}") from None


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
