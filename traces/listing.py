"""One line per event, payload decoded: what `gaterush trace head` prints."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from typing import Any

from traces.event import Event, unpack_payload
from traces.info import clock
from traces.io import open_reader


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return "0x" + obj.hex()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def payload_text(raw: bytes) -> str:
    """The payload as compact JSON (bytes inside shown as 0x-hex), or hex if it is not msgpack."""
    try:
        obj = unpack_payload(raw)
    except Exception:
        return "0x" + raw.hex()
    return json.dumps(_jsonable(obj), ensure_ascii=False, separators=(",", ":"))


def format_event(e: Event) -> str:
    """`+0:01:02.345 #123 scan attendee:81 -> rpc:scan_ticket_atomic expect=valid {...}`."""
    parts = [f"{clock(e.t_us)}", f"#{e.seq}", e.kind, e.actor]
    if e.target is not None:
        parts.append(f"-> {e.target}")
    if e.expect is not None:
        parts.append(f"expect={e.expect}")
    if e.after is not None:
        parts.append(f"after=#{e.after}")
    parts.append(payload_text(e.payload))
    return " ".join(parts)


def event_json(e: Event) -> str:
    """The event as one JSON object (payload decoded), for `head --json`."""
    d = e._asdict()
    try:
        d["payload"] = _jsonable(unpack_payload(e.payload))
    except Exception:
        d["payload"] = "0x" + e.payload.hex()
    return json.dumps(d, ensure_ascii=False, separators=(",", ":"))


def head(path: str | os.PathLike, n: int) -> Iterator[Event]:
    """The first n events of a trace, read lazily (a cut file still gives its first events)."""
    with open_reader(path) as reader:
        yield from itertools.islice(iter(reader), n)
