"""Property: for any text holding a secret anywhere (generated keys, JWTs, Bearer forms,
percent-encoded), nothing the importers or the recorder's payload assembly write contains it.

The recorder's own end-to-end property is in tests/replay/test_record_secrets.py (it reuses
`secret_texts()` from here)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traces.event import pack_payload
from traces.importers import import_file
from traces.importers.endpoints import endpoint
from traces.importers.recorded import recorded_payload
from traces.importers.secrets import has_secret, scrub_text

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
tokens = st.text(alphabet=_ALNUM, min_size=16, max_size=40)


def _b64(draw_bytes: bytes) -> str:
    return base64.urlsafe_b64encode(draw_bytes).decode().rstrip("=")


@st.composite
def jwts(draw: st.DrawFn) -> str:
    """A JWT: header and claims as base64url JSON, a signature of random bytes."""
    claims = {"role": draw(st.sampled_from(["anon", "service_role", "authenticated"])),
              "iss": "supabase", "exp": draw(st.integers(0, 2**40))}  # fmt: skip
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    sig = _b64(draw(st.binary(min_size=16, max_size=48)))
    return f"{head}.{_b64(json.dumps(claims).encode())}.{sig}"


@st.composite
def keys(draw: st.DrawFn) -> str:
    """A Stripe key, restricted key, webhook secret or Supabase new-style key."""
    prefix = draw(st.sampled_from([
        "sk_test_", "sk_live_", "rk_test_", "rk_live_", "whsec_", "sb_secret_", "sb_publishable_",
    ]))  # fmt: skip
    return prefix + draw(tokens)


secrets = st.one_of(keys(), jwts())


@st.composite
def secret_texts(draw: st.DrawFn) -> tuple[str, str]:
    """(text, secret): a secret in any of its forms somewhere in surrounding text."""
    secret = draw(secrets)
    form = draw(st.sampled_from(["plain", "bearer", "named", "percent", "quoted"]))
    if form == "bearer":
        shown = f"Bearer {secret}"
    elif form == "named":
        shown = f"apikey={secret}"
    elif form == "percent":
        shown = "".join(f"%{b:02X}" for b in secret.encode())
    elif form == "quoted":
        shown = quote(f'"{secret}"', safe="")
    else:
        shown = secret
    around = st.text(alphabet=" ,;:/()x-", max_size=8)
    return draw(around) + shown + draw(around), secret


def assert_absent(secret: str, written: bytes) -> None:
    """Neither the secret nor its token part (after a key's prefix) is in the bytes written."""
    assert secret.encode() not in written
    core = secret.split("_")[-1] if not secret.startswith("eyJ") else secret.split(".")[-1]
    if len(core) >= 16:
        assert core.encode() not in written


@given(secret_texts())
def test_a_secret_anywhere_in_a_string_is_found_and_scrubbed(case: tuple[str, str]) -> None:
    text, secret = case
    assert has_secret(text)
    assert_absent(secret, scrub_text(text).encode())


@settings(max_examples=150, deadline=None)
@given(secret_texts(), st.sampled_from(["query", "json", "text", "form", "header", "path"]))
def test_recorded_payloads_never_hold_a_secret(case: tuple[str, str], where: str) -> None:
    text, secret = case
    path, query, body, ctype = "/rest/v1/rpc/scan_ticket_atomic", "", None, "application/json"
    if where == "query":
        query = "select=*&note=" + quote(text, safe="")
    elif where == "json":
        body = json.dumps({"p_ticket_code": "T1-0000001", "p_note": text, "nested": [text]})
    elif where == "text":
        body, ctype = text, "text/plain"
    elif where == "form":
        path, ctype = "/v1/payment_intents", "application/x-www-form-urlencoded"
        body = "amount=100&metadata[note]=" + quote(text, safe="")
    elif where == "path":
        path = "/v1/payment_intents/" + quote(text, safe="") + "/confirm"
    headers = [("Content-Type", ctype), ("Accept", text if where == "header" else "*/*"),
               ("Idempotency-Key", text), ("Authorization", f"Bearer {secret}")]  # fmt: skip
    ep = endpoint("POST", path)
    assert ep is not None
    payload = recorded_payload(ep, "POST", path, query, headers, body, 200)
    assert_absent(secret, pack_payload(payload))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(secret_texts())
def test_importers_never_write_a_secret(tmp_path: Path, case: tuple[str, str]) -> None:
    text, secret = case
    q = quote(text, safe="")
    clf = tmp_path / "access.log"
    clf.write_text(
        f"203.0.113.7 - {quote(secret, safe='')} [10/Oct/2000:13:55:36 -0700] "
        f'"GET /rest/v1/tickets?select=*&note={q} HTTP/1.1" 200 2326\n'
        f'203.0.113.7 - - [10/Oct/2000:13:55:37 -0700] "GET /rest/v1/events?x={q} HTTP/1.1" 200 1\n'
    )
    har = tmp_path / "s.har"
    entry = {
        "startedDateTime": "2024-05-01T10:00:00.000Z",
        "request": {
            "method": "POST",
            "url": f"http://127.0.0.1:1/rest/v1/rpc/scan_ticket_atomic?note={q}",
            "headers": [{"name": "Authorization", "value": f"Bearer {secret}"},
                        {"name": "Prefer", "value": text}],  # fmt: skip
            "postData": {"mimeType": "text/plain", "text": text},
        },
        "response": {"status": 200, "content": {"mimeType": "application/json",
                                                "text": json.dumps({"token": text})}},
    }  # fmt: skip
    har.write_text(json.dumps({"log": {"entries": [entry]}}))
    logs = tmp_path / "logs.json"
    logs.write_text(json.dumps([{"timestamp": 1_700_000_000_000_000,
                                 "event_message": f"GET | 200 | 1.2.3.4 | x | /rest/v1/events?n={q} | ua"}]))  # fmt: skip
    for fmt, path in (("clf", clf), ("har", har), ("supabase", logs)):
        header, events, report = import_file(fmt, path)
        written = b"".join(e.payload + e.actor.encode() for e in events)
        written += json.dumps(header.to_dict()).encode() + json.dumps(report.to_dict()).encode()
        assert events, (fmt, report.summary())
        assert_absent(secret, written)
