"""Which gaterush target a recorded request is, and what of it a trace keeps.

Pure functions over already-parsed request parts (method, path, query, body, status): the
importers (HAR, access logs) and the recording proxy (replay/record.py) share them, so a request
maps to the same event whichever way it was captured. Secrets never pass: headers are not an
input at all, and secret-looking query parameters and body fields are dropped here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from traces import event as ev
from traces.importers.request import REQUEST, nest_form
from traces.importers.secrets import SECRET_KEYS, scrub, scrub_text

RPC_ARG_PREFIX = "p_"  # replay's default profile: payload key k is sent as RPC argument p_k

SCAN_OUTCOMES = frozenset({ev.VALID, ev.ALREADY_SCANNED, ev.INVALID, ev.WRONG_EVENT, ev.EXITED})
WEBHOOK_OUTCOMES = frozenset({ev.PROCESSED, ev.DUPLICATE})
_PI_PATH = re.compile(r"^/v1/payment_intents(?:/(?P<id>[^/]+)(?:/(?P<action>[a-z_]+))?)?/?$")
_STRIPE_PATH = re.compile(
    r"^/v1/(?P<resource>[a-z_]+)(?:/(?P<id>[^/]+)(?:/(?P<action>[a-z_]+))?)?/?$"
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a request is in trace terms: its event kind and target, before the payload."""

    kind: str
    target: str


def endpoint(method: str, path: str) -> Endpoint | None:
    """The kind and target of a request from its method and path; None when it is no target.

    /rest/v1/rpc/<fn> -> rpc:<fn>, /rest/v1/<table> -> rest:<table>, /functions/v1/<name> ->
    fn:<name>, /v1/payment_intents -> stripe:payment_intents.create (confirm, retrieve, ...),
    /realtime/v1/<rest> -> realtime:<rest>. A prefix before the Supabase roots (a gateway's
    path) is ignored; Stripe's /v1/ counts only at the start of the path.
    """
    method = method.upper()
    path = api_path(path.split("?", 1)[0])
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 4 and parts[:3] == ["rest", "v1", "rpc"]:
        fn = parts[3]
        if fn == ev.TARGET_SCAN.partition(":")[2]:
            return Endpoint(ev.SCAN, f"rpc:{fn}")
        return Endpoint(
            ev.VIEW if method == "GET" or fn == "event_revenue" else "call", f"rpc:{fn}"
        )
    if len(parts) >= 3 and parts[:2] == ["rest", "v1"]:
        return Endpoint(ev.VIEW if method in ("GET", "HEAD") else "write", f"rest:{parts[2]}")
    if len(parts) >= 3 and parts[:2] == ["functions", "v1"]:
        name = parts[2]
        return Endpoint(ev.WEBHOOK if name == "stripe-webhook" else "invoke", f"fn:{name}")
    if len(parts) >= 3 and parts[:2] == ["realtime", "v1"]:
        return Endpoint(ev.SUBSCRIBE, "realtime:" + ".".join(parts[2:]))
    m = _PI_PATH.match(path)
    if m:
        if m["id"] is None:
            return (
                Endpoint(ev.CHECKOUT, ev.TARGET_PI_CREATE)
                if method == "POST"
                else Endpoint("stripe", "stripe:payment_intents.list")
            )
        action = m["action"] or ("retrieve" if method == "GET" else "update")
        kind = ev.CONFIRM if action == "confirm" else "stripe"
        return Endpoint(kind, f"stripe:payment_intents.{action}")
    m = _STRIPE_PATH.match(path)
    if m:
        action = m["action"] or ("create" if method == "POST" and not m["id"] else "retrieve")
        return Endpoint("stripe", f"stripe:{m['resource']}.{action}")
    return None


def api_path(path: str) -> str:
    """Drop anything before the first known API root (a proxy or gateway prefix)."""
    found = [
        i
        for root in ("/rest/v1/", "/functions/v1/", "/realtime/v1/")
        if (i := path.find(root)) >= 0
    ]
    return path[min(found) :] if found else path  # Stripe's /v1/ only counts at the start


def parse_query(query: str | Iterable[tuple[str, str]] | Mapping[str, str]) -> dict[str, Any]:
    """Query parameters as a dict (a repeated name keeps every value in a list), secrets dropped."""
    pairs = (
        parse_qsl(query, keep_blank_values=True)
        if isinstance(query, str)
        else (query.items() if isinstance(query, Mapping) else query)
    )
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name.lower() in SECRET_KEYS:
            continue
        value = scrub_text(value)
        if name in out:
            prev = out[name]
            out[name] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[name] = value
    return out


def decode_body(body: bytes | str | None, content_type: str | None) -> Any:
    """A request or response body decoded: JSON, form-encoded (Stripe's nested keys), or text."""
    if body is None or body == b"" or body == "":
        return None
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if ctype.endswith("json") or (not ctype and text[:1] in "{["):
        try:
            return json.loads(text)
        except ValueError:
            return {"body": text}
    if ctype == "application/x-www-form-urlencoded" or (
        not ctype and "=" in text and " " not in text
    ):
        return nest_form(parse_qsl(text, keep_blank_values=True))
    return {"body": text}


def _int_or(value: Any) -> Any:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def payload_for(
    ep: Endpoint, method: str, path: str, query: dict[str, Any], body: Any
) -> dict[str, Any]:
    """The business content an event keeps for a request (never a header, never a secret)."""
    return scrub(_content(ep, method, path, query, scrub(body)))


def _content(
    ep: Endpoint, method: str, path: str, query: dict[str, Any], body: Any
) -> dict[str, Any]:
    if ep.kind == ev.CHECKOUT and isinstance(body, dict):
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        out: dict[str, Any] = {
            "amount": _int_or(body.get("amount")),
            "currency": body.get("currency"),
        }
        for key in ("quantity", "event_id"):
            if key in meta:
                out[key] = _int_or(meta[key])
        for key in ("buyer", "order_ref"):
            if key in meta:
                out[key] = meta[key]
        for key in ("confirm", "payment_method"):  # a one-step checkout
            if key in body:
                out[key] = body[key]
        return out
    if ep.kind == ev.CONFIRM:
        m = _PI_PATH.match(api_path(path.split("?", 1)[0]))
        out = {
            "payment_method": (body or {}).get("payment_method") if isinstance(body, dict) else None
        }
        if m and m["id"]:
            out["payment_intent"] = m["id"]
        return out
    if ep.target.startswith("rest:") and method.upper() in ("GET", "HEAD"):
        return {"query": query}
    if ep.target.startswith("rpc:"):
        args = query if method.upper() == "GET" else body
        if ep.kind == ev.VIEW:  # a dashboard read: its arguments as the query, as the models emit
            return {"query": args if isinstance(args, dict) else {}}
        if isinstance(args, dict):
            # the default target profile sends payload key k as argument p_k: undo it
            return {
                k.removeprefix(RPC_ARG_PREFIX) if isinstance(k, str) else k: v
                for k, v in args.items()
            }
    if isinstance(body, dict):
        if query and ep.kind != ev.WEBHOOK:
            return {**body, "query": query} if "query" not in body else body
        return body
    out = {"query": query} if query else {}
    if body is not None:
        out["body"] = body
    return out


def outcome(ep: Endpoint, status: int | None, response: Any) -> str | None:
    """The outcome a response shows, in the trace's `expect` vocabulary (None when unknown).

    Scans and webhooks take the outcome the body names (`status`/`result`/`outcome`); a confirm
    is succeeded or declined from the PaymentIntent's status; other 2xx answers are `ok`, and an
    error status is `http_<code>`.
    """
    if status is None or status == 0:
        return None
    named = _named_outcome(response)
    if ep.kind == ev.SCAN and named in SCAN_OUTCOMES:
        return named
    if ep.kind == ev.WEBHOOK and 200 <= status < 300:
        if named == ev.DUPLICATE or (
            isinstance(response, dict) and response.get("duplicate") is True
        ):
            return ev.DUPLICATE
        return ev.PROCESSED
    if ep.kind == ev.CONFIRM and isinstance(response, dict):
        pi_status = response.get("status")
        if pi_status == "succeeded":
            return ev.SUCCEEDED
        if pi_status in ("requires_payment_method", "canceled"):
            return ev.DECLINED
        err = response.get("error")
        if isinstance(err, dict) and err.get("code") in (
            "card_declined",
            "payment_intent_payment_attempt_failed",
        ):
            return ev.DECLINED
    if status == 402 and ep.target.startswith("stripe:"):
        return ev.DECLINED  # a card declined on a create with confirm=true too
    if 200 <= status < 300:
        return ev.OK
    return f"http_{status}"


def _named_outcome(response: Any) -> str | None:
    if isinstance(response, str):
        return response
    if isinstance(response, list) and len(response) == 1:
        return _named_outcome(response[0])
    if isinstance(response, dict):
        for key in ("status", "result", "outcome", "scan_ticket_atomic"):
            value = response.get(key)
            if isinstance(value, str):
                return value
    return None


def created_id(ep: Endpoint, response: Any) -> str | None:
    """The id a Stripe create answered with (a PaymentIntent, a refund, a customer), to link the
    calls that use it (`after`)."""
    if (
        ep.target.startswith("stripe:")
        and ep.target.endswith(".create")
        and isinstance(response, dict)
        and isinstance(response.get("id"), str)
    ):
        return response["id"]
    return None


def referenced_ids(request: dict[str, Any]) -> list[str]:
    """The ids a captured Stripe request names: its path segments, then its body's string values."""
    out = [p for p in request.get("path", "").split("/") if "_" in p]
    stack = [request.get("body")]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            stack.extend(reversed(list(v.values())))
        elif isinstance(v, list):
            stack.extend(reversed(v))
    return out


def linked_request(ep: Endpoint, payload: dict[str, Any], created: Mapping[str, Any]) -> Any | None:
    """What an event waits for: the creator of the first id its request names (then the request
    keeps that id as `ref`, for replay to put the new id in its place), else the confirm's link."""
    request = payload.get(REQUEST)
    if ep.target.startswith("stripe:") and isinstance(request, dict):
        for ident in referenced_ids(request):
            if ident in created:
                request["ref"] = ident
                return created[ident]
    needed = confirmed_id(ep, payload)
    return created.get(needed) if needed else None


def confirmed_id(ep: Endpoint, payload: dict[str, Any]) -> str | None:
    """The PaymentIntent id a confirm is for."""
    if ep.kind == ev.CONFIRM:
        pi = payload.get("payment_intent")
        return pi if isinstance(pi, str) else None
    return None


def realtime_joins(messages: Iterable[Any]) -> list[dict[str, Any]]:
    """The postgres_changes subscriptions in a Realtime client's phx_join messages.

    Each is {"table", "filter"?, "topic"}; the join's access_token is not kept.
    """
    joins = []
    for raw in messages:
        msg = raw
        if isinstance(raw, (str, bytes)):
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
        if (
            isinstance(msg, list) and len(msg) == 5
        ):  # vsn 2.0.0: [join_ref, ref, topic, event, payload]
            msg = {"topic": msg[2], "event": msg[3], "payload": msg[4]}
        if not isinstance(msg, dict) or msg.get("event") != "phx_join":
            continue
        config = (msg.get("payload") or {}).get("config") or {}
        for change in config.get("postgres_changes") or ():
            if isinstance(change, dict) and change.get("table"):
                sub = {"table": change["table"], "topic": msg.get("topic")}
                if change.get("filter"):
                    sub["filter"] = change["filter"]
                joins.append(sub)
    return joins
