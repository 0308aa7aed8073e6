"""Strict parsing of request values as PostgreSQL and Stripe read them: ASCII digits, in range,
text PostgreSQL can store, JSON of bounded depth. Sans-IO; every failure is a PostgrestError."""

from __future__ import annotations

import json
import re
from typing import Any

from staging.errors import PostgrestError

INT4 = (-(2**31), 2**31 - 1)
INT8 = (-(2**63), 2**63 - 1)
MAX_JSON_DEPTH = 64  # deeper bodies are refused before parsing (PostgREST has no need of more)
_INT_TEXT = re.compile(r"[+-]?[0-9]{1,20}")  # ASCII only: '١' and '²' are not digits here
_PG_TYPE = {INT4: "integer", INT8: "bigint"}


def int_in_range(v: Any, bounds: tuple[int, int] = INT8, what: str = "") -> int:
    """An integer from a JSON int or a string of ASCII digits within `bounds`; 22P02/22003 otherwise."""
    pg = _PG_TYPE.get(bounds, "integer")
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise PostgrestError(
            400, "22P02", f"invalid input syntax for type {pg}: {_show(v)}", _what(what)
        )
    if isinstance(v, str):
        t = v.strip(" ")
        if not _INT_TEXT.fullmatch(t):
            raise PostgrestError(
                400, "22P02", f"invalid input syntax for type {pg}: {_show(v)}", _what(what)
            )
        v = int(t)
    if not bounds[0] <= v <= bounds[1]:
        raise PostgrestError(
            400, "22003", f'value "{_clip(str(v))}" is out of range for type {pg}', _what(what)
        )
    return v


def storable_text(v: str, what: str = "") -> str:
    """`v` if PostgreSQL can store it as text (UTF-8, no NUL); 22P05 otherwise."""
    if "\x00" in v:
        raise PostgrestError(
            400,
            "22P05",
            "unsupported Unicode escape sequence",
            "\\u0000 cannot be converted to text.",
        )
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise PostgrestError(
            400,
            "22P02",
            "invalid input syntax for type json",
            f"Unicode low surrogate must follow a high surrogate{_in(what)}.",
        ) from None
    return v


def _check_strings(obj: Any) -> None:
    if isinstance(obj, str):
        storable_text(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            storable_text(k)
            _check_strings(v)
    elif isinstance(obj, list):
        for v in obj:
            _check_strings(v)


def json_depth(raw: bytes | str) -> int:
    """The deepest nesting of arrays and objects in JSON text (brackets inside strings ignored)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    depth = deepest = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def too_deep(raw: bytes | str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests deeper than `limit` (cheap when it has few brackets)."""
    opens = raw.count(b"[" if isinstance(raw, bytes) else "[")
    opens += raw.count(b"{" if isinstance(raw, bytes) else "{")
    return opens > limit and json_depth(raw) > limit


def parse_json(raw: bytes) -> Any:
    """A request body as JSON, refused (PGRST102) when malformed, deeper than MAX_JSON_DEPTH or
    holding text PostgreSQL cannot store (a lone surrogate, NUL)."""
    if too_deep(raw):
        raise PostgrestError(
            400,
            "PGRST102",
            "Empty or invalid json",
            f"JSON nests deeper than {MAX_JSON_DEPTH} levels",
        )
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise PostgrestError(400, "PGRST102", "Empty or invalid json", str(exc)[:200]) from None
    if b"\\u" in raw or b"\\U" in raw:  # only escapes can make a lone surrogate or a NUL
        _check_strings(obj)
    return obj


def _show(v: Any) -> str:
    return '"' + _clip(v if isinstance(v, str) else json.dumps(v)) + '"'


def _clip(s: str) -> str:
    s = s.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate as \\udXXX
    return s if len(s) <= 40 else s[:37] + "..."


def _what(what: str) -> str | None:
    return f"argument {what}" if what else None


def _in(what: str) -> str:
    return f" in {what}" if what else ""
