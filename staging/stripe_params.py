"""Reading Stripe API parameters (sans-IO): the bracket form encoding Stripe's clients send,
bounded so no request can make the decoder build a huge list, and the checks of each kind of
value with Stripe's error codes (parameter_unknown, parameter_missing, parameter_invalid_integer)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from staging.errors import StripeApiError

MAX_LIST_INDEX = 100  # `expand[200000000]=x` is refused, not padded
MAX_KEY_DEPTH = 5
MAX_PARAMS = 1000
_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")
_EXPANDABLE = frozenset({"latest_charge", "customer", "payment_method", "payment_intent", "charge"})


def decode_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's bracket notation (`metadata[event_id]=1`, `expand[]=x`, `expand[0]=x`, `a[0][b]=c`)
    as nested dicts and lists. List indices must come in order (as every Stripe client sends
    them) and stay under MAX_LIST_INDEX, so no request can make the decoder pad a huge list."""
    root: dict[str, Any] = {}
    for n, (key, value) in enumerate(pairs):
        if n >= MAX_PARAMS:
            raise StripeApiError(400, f"Too many parameters: the limit is {MAX_PARAMS}")
        m = _KEY.match(key)
        if not m:
            raise StripeApiError(400, f"Invalid parameter name: {key[:60]!r}")
        path = [m.group(1), *_PART.findall(m.group(2))]
        if len(path) > MAX_KEY_DEPTH + 1:
            raise StripeApiError(
                400, f"Parameter {key[:60]!r} nests deeper than {MAX_KEY_DEPTH} levels"
            )
        node: Any = root
        for i, part in enumerate(path):
            last = i == len(path) - 1
            nxt = path[i + 1] if not last else None
            if isinstance(node, list):
                idx = len(node) if part == "" else _index(part, key)
                if idx > len(node) or idx >= MAX_LIST_INDEX:
                    raise StripeApiError(
                        400,
                        f"Invalid array index in parameter {key[:60]!r}: indices count up from 0, below {MAX_LIST_INDEX}",
                        param=m.group(1),
                    )
                if idx == len(node):
                    node.append(None)
                if last:
                    node[idx] = value
                    break
                if not isinstance(node[idx], dict | list):
                    node[idx] = [] if nxt == "" or (nxt or "").isdigit() else {}
                node = node[idx]
                continue
            if last:
                node[part] = value
            else:
                if part not in node or not isinstance(node[part], dict | list):
                    node[part] = [] if nxt == "" or (nxt or "").isdigit() else {}
                node = node[part]
    return root


def _index(part: str, key: str) -> int:
    if not (part.isascii() and part.isdigit() and len(part) <= 6):
        raise StripeApiError(400, f"Invalid array index in parameter {key[:60]!r}")
    return int(part)


def check_params(params: dict[str, Any], allowed: frozenset[str]) -> None:
    """StripeApiError `parameter_unknown` naming the first parameter not in `allowed`."""
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise StripeApiError(
            400,
            f"Received unknown parameter: {unknown[0][:60]}",
            param=unknown[0][:60],
            code="parameter_unknown",
        )


def int_param(v: Any, name: str, lo: int, hi: int) -> int:
    """An integer parameter of ASCII digits within lo..hi."""
    if not isinstance(v, str) or not (v.isascii() and v.isdigit()) or len(v) > 12:
        raise StripeApiError(
            400, f"Invalid integer: {str(v)[:40]}", param=name, code="parameter_invalid_integer"
        )
    n = int(v)
    if not lo <= n <= hi:
        raise StripeApiError(
            400,
            f"Invalid {name}: must be between {lo} and {hi}",
            param=name,
            code="parameter_invalid_integer",
        )
    return n


def amount_param(v: Any) -> int:
    """An amount in the smallest currency unit, 1..99,999,999."""
    if not isinstance(v, str) or not (v.isascii() and v.isdigit()) or len(v) > 12:
        raise StripeApiError(
            400, f"Invalid integer: {str(v)[:40]}", param="amount", code="parameter_invalid_integer"
        )
    n = int(v)
    if n < 1 or n > 99_999_999:
        raise StripeApiError(
            400,
            "Amount must be between 1 and 99999999 in the smallest currency unit.",
            param="amount",
            code="amount_too_small" if n < 1 else "amount_too_large",
        )
    return n


def bool_param(v: Any, name: str) -> bool:
    """A boolean parameter (`true` / `false`, absent is false)."""
    if v in (None, "false"):
        return False
    if v == "true":
        return True
    raise StripeApiError(
        400, f"Invalid boolean: {str(v)[:40]}", param=name, code="parameter_invalid_boolean"
    )


def str_param(v: Any, name: str, required: bool = False) -> str | None:
    """A string parameter; empty or absent is None (or parameter_missing when required)."""
    if v is None or v == "":
        if required:
            raise StripeApiError(
                400, f"Missing required param: {name}.", param=name, code="parameter_missing"
            )
        return None
    if not isinstance(v, str):
        raise StripeApiError(
            400, f"Invalid {name}: expected a string", param=name, code="parameter_invalid"
        )
    return v


def metadata_param(v: Any) -> dict[str, str]:
    """`metadata[key]=value` pairs, at most 50."""
    if v is None or v == "":
        return {}
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise StripeApiError(
            400, "Invalid metadata: expected metadata[key]=value pairs", param="metadata"
        )
    if len(v) > 50:
        raise StripeApiError(400, "Invalid metadata: at most 50 keys", param="metadata")
    return v


def expand_paths(params: dict[str, Any], prefix: str = "") -> list[str]:
    """The `expand[]` paths of a request (with `data.` stripped for lists); unknown ones refused."""
    raw = params.get("expand") or []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise StripeApiError(400, "Invalid expand: expected expand[]=path", param="expand")
    out = []
    for p in raw:
        if not isinstance(p, str):
            raise StripeApiError(400, "Invalid expand: expected expand[]=path", param="expand")
        path = p[len(prefix) :] if prefix and p.startswith(prefix) else p
        if path not in _EXPANDABLE:
            raise StripeApiError(
                400, f"This property cannot be expanded ({p[:60]}).", param="expand"
            )
        out.append(path)
    return out


def currency_param(cur: Any) -> str:
    """A three-letter ISO currency code, lowercased."""
    if not isinstance(cur, str) or not re.fullmatch(r"[a-zA-Z]{3}", cur):
        raise StripeApiError(
            400, f"Invalid currency: {str(cur)[:20]}", param="currency", code="parameter_invalid"
        )
    return cur.lower()
