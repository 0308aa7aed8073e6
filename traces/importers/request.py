"""The request as it was sent, kept in an event's payload under REQUEST (trace format version 2).

`capture` turns the parts of a recorded request into a plain map replay sends back the same way:
method, path (from the API root), query pairs, the headers that change what the server does
(KEPT_HEADERS, never a credential), and the body decoded by its content type: JSON as its value,
a form as Stripe's nested params (or its pairs when nesting would lose something), other text as
text. Every value is scrubbed (traces.importers.secrets); what replay adds (the run id in a
Stripe `metadata[gaterush_run]`, the `gaterush-<run>-` prefix of an Idempotency-Key) is taken off
again, so recording a replay gives back the recorded request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

import msgpack

from traces.importers.secrets import SECRET_KEYS, scrub, scrub_text

REQUEST = "http_request"  # the payload key holding the captured request (not "request": Stripe events have one)
KEPT_HEADERS = ("accept", "prefer", "range", "content-type", "idempotency-key")
RUN_METADATA = "metadata[gaterush_run]"
SIGNATURE_TOLERANCE_S = 300  # Stripe's default: an older signed timestamp is stale
_SIG_T = re.compile(r"(?:^|,)\s*t=(\d+)")


def query_pairs(query: str) -> list[list[str]]:
    """Query parameters in order as [name, value] pairs, secret names dropped, values scrubbed."""
    return [
        [scrub_text(k), scrub_text(v)]
        for k, v in parse_qsl(query, keep_blank_values=True)
        if k.lower() not in SECRET_KEYS
    ]


def kept_headers(headers: Iterable[tuple[str, str]], run_id: str | None = None) -> list[list[str]]:
    """The headers replay must send again, in order, values scrubbed, replay's run prefix removed."""
    out = []
    for name, value in headers:
        lname = name.lower()
        if lname not in KEPT_HEADERS:
            continue
        if lname == "idempotency-key" and run_id:
            value = value.removeprefix(f"gaterush-{run_id}-")
        out.append([lname, scrub_text(value)])
    return out


def nest_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding as nested maps: metadata[event_id]=1 -> {"metadata": {"event_id": "1"}}."""
    out: dict[str, Any] = {}
    for name, value in pairs:
        keys = re.findall(r"[^\[\]]+", name) or [name]
        node = out
        for k in keys[:-1]:
            nxt = node.get(k)
            if not isinstance(nxt, dict):
                nxt = node[k] = {}
            node = nxt
        node[keys[-1]] = value
    return out


def form_body(pairs: list[tuple[str, str]]) -> tuple[str, Any]:
    """(encoding, body) of a form: nested params when Stripe's encoder gives the same pairs back."""
    from stripe._encode import _api_encode  # the exact encoding stripe-python sends

    nested = nest_form(pairs)
    if [(k, v) for k, v in _api_encode(nested) if v is not None] == pairs:
        return "form", nested
    return "form_pairs", [list(p) for p in pairs]


def _ctype(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _packable(value: Any) -> bool:
    try:
        msgpack.packb(value, use_bin_type=True)
    except (OverflowError, TypeError, ValueError):
        return False
    return True


def body_of(body: bytes | str | None, content_type: str | None) -> tuple[str | None, Any]:
    """(encoding, decoded body) as a trace keeps it; (None, None) for no body."""
    if body is None or body in (b"", ""):
        return None, None
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    ctype = _ctype(content_type)
    if ctype.endswith("json") or (not ctype and text[:1] in "{["):
        try:
            value = scrub(json.loads(text))
        except (ValueError, RecursionError):
            return "text", scrub_text(text)
        return ("json", value) if _packable(value) else ("text", scrub_text(text))
    if ctype == "application/x-www-form-urlencoded":
        pairs = [
            (scrub_text(k), scrub_text(v))
            for k, v in parse_qsl(text, keep_blank_values=True)
            if k.lower() not in SECRET_KEYS and k != RUN_METADATA
        ]
        return form_body(pairs) if pairs else (None, None)
    return "text", scrub_text(text)


def signature_state(headers: Iterable[tuple[str, str]], status: int | None, now_unix: float) -> str:
    """How a webhook delivery was signed, judged from its header and the receiver's answer.

    `none` (no Stripe-Signature), `stale` (the signed time is older than the tolerance), `bad`
    (the receiver refused it with 400/401), else `valid`. Only the state is kept, never the header.
    """
    sig = next((v for k, v in headers if k.lower() == "stripe-signature"), None)
    if sig is None:
        return "none"
    m = _SIG_T.search(sig)
    if m and now_unix - int(m[1]) > SIGNATURE_TOLERANCE_S:
        return "stale"
    if status in (400, 401):
        return "bad"
    return "valid"


def key_role(headers: Iterable[tuple[str, str]]) -> str | None:
    """The role of the Supabase key a request carried (`anon`, `service_role`, ...), never the key.

    A JWT's `role` claim (read, not verified), or the kind of a new-style key; None without one.
    """
    import base64

    for name, value in headers:
        if name.lower() not in ("apikey", "authorization"):
            continue
        token = value.strip().removeprefix("Bearer ").strip()
        if token.startswith("sb_secret_"):
            return "service_role"
        if token.startswith("sb_publishable_"):
            return "anon"
        parts = token.split(".")
        if len(parts) == 3 and token.startswith("eyJ"):
            try:
                claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
            except (ValueError, TypeError):
                continue
            role = claims.get("role") if isinstance(claims, dict) else None
            if role in ("anon", "service_role", "authenticated"):
                return role
    return None


def capture(
    method: str,
    path: str,
    query: str,
    headers: Iterable[tuple[str, str]],
    body: bytes | str | None,
    *,
    run_id: str | None = None,
) -> dict[str, Any]:
    """The request as a trace keeps it (the REQUEST map of a payload)."""
    headers = list(headers)
    ctype = next((v for k, v in headers if k.lower() == "content-type"), None)
    out: dict[str, Any] = {
        "method": method.upper(),
        "path": scrub_text(path),
        "query": query_pairs(query),
        "headers": kept_headers(headers, run_id),
    }
    role = key_role(headers)
    if role:
        out["auth"] = role
    encoding, value = body_of(body, ctype)
    if encoding is not None:
        out["encoding"] = encoding
        out["body"] = value
    return out
