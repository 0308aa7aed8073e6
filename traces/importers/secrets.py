"""Secrets found anywhere in a recorded value, and the scrubbing that keeps them out of a trace.

A credential is looked for in the whole of a value, not only at its start: Stripe keys and
restricted keys, webhook endpoint secrets, Supabase's new-style keys, JWTs (legacy anon and
service_role keys, user access tokens) and `Bearer` / `Basic` credentials, also when the value is
percent-encoded. What matches is replaced by REDACTED; the rest of the value is kept.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_plus

# Query parameters, body fields and header names whose value is a credential, whatever it looks like.
SECRET_KEYS = frozenset(
    {
        "apikey",
        "api_key",
        "access_token",
        "refresh_token",
        "token",
        "authorization",
        "password",
        "secret",
        "client_secret",
        "signature",
        "stripe-signature",
        "stripe_signature",
        "jwt",
        "key",
        "cookie",
        "set-cookie",
        "proxy-authorization",
    }
)
REDACTED = "[redacted]"

_SECRET = re.compile(
    r"(?:Bearer|Basic)\s+\S+"
    r"|(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z_\-]*"
    r"|whsec_[0-9A-Za-z_+/=\-]*"
    r"|sb_(?:secret|publishable)_[0-9A-Za-z_\-]*"
    r"|eyJ[0-9A-Za-z_\-]*\.[0-9A-Za-z_\-]+(?:\.[0-9A-Za-z_\-]*)?",
    re.IGNORECASE,
)
# `apikey=...`, `"token": "..."` in free text: the value after a secret name is a secret too
_NAMED = re.compile(
    r"(?i)\b(apikey|api_key|access_token|refresh_token|client_secret|password|secret|token)"
    r"(\s*[=:]\s*\"?)([^\s&\"',;]+)"
)


def has_secret(text: str) -> bool:
    """Whether a string holds a credential anywhere (also percent-encoded)."""
    return bool(_SECRET.search(text) or _NAMED.search(text)) or (
        "%" in text and text != (u := unquote_plus(text)) and has_secret(u)
    )


def scrub_text(text: str) -> str:
    """The string with every credential in it replaced by REDACTED (decoded first if that hides one)."""
    if "%" in text:
        decoded = unquote_plus(text)
        if decoded != text and has_secret(decoded):
            text = decoded
    out = _SECRET.sub(REDACTED, text)
    return _NAMED.sub(lambda m: m[1] + m[2] + REDACTED, out)


def scrub(obj: Any) -> Any:
    """A copy of a decoded value with secret fields dropped and every credential in a string redacted."""
    if isinstance(obj, dict):
        return {
            scrub_text(k) if isinstance(k, str) else k: scrub(v)
            for k, v in obj.items()
            if not (isinstance(k, str) and k.lower() in SECRET_KEYS)
        }
    if isinstance(obj, list | tuple):
        return [scrub(v) for v in obj]
    if isinstance(obj, str):
        return scrub_text(obj)
    if isinstance(obj, bytes):
        return scrub_text(obj.decode("utf-8", "replace")).encode()
    return obj
