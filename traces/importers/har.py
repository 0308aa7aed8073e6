"""Import a HAR file (a browser's or a proxy's export) as a trace.

Each entry to a target host (traces.importers.hosts) whose URL path is a gaterush target becomes
one event at its `startedDateTime`; the request as sent is its payload (method, path, query, the
headers replay needs, the body; traces.importers.request), the response its `expect`. Only the
kept headers are read, so `apikey`, `Authorization` and cookies cannot leak. Skips name the
entry number (1-based). A HAR is one client: its events share one
actor (`browser:<file stem>`). Realtime websockets become `subscribe` events from the client's
`phx_join` messages when the HAR carries them (Chromium's `_webSocketMessages`).
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from traces import event as ev
from traces.event import Event, TraceError
from traces.header import TraceHeader
from traces.importers import ImportReport, Record, build, read_text
from traces.importers.endpoints import (
    confirmed_id,
    created_id,
    decode_body,
    endpoint,
    outcome,
    realtime_joins,
)
from traces.importers.hosts import project_host, skip_reason
from traces.importers.recorded import recorded_payload


def iso_to_unix_us(text: str) -> int:
    """An ISO 8601 date-time (HAR's startedDateTime) as microseconds since the Unix epoch."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"date-time without a time zone: {text!r}")
    return round(dt.timestamp() * 1_000_000)


def import_har(
    path: Path, *, supabase_url: str | None = None
) -> tuple[TraceHeader, list[Event], ImportReport]:
    """Read a HAR file into a trace header, its events, and what was mapped and skipped.

    Only requests to the Supabase project (`supabase_url`, else found in the file: see
    traces.importers.hosts) and api.stripe.com are targets; CORS preflights are skipped.
    """
    path = Path(path)
    text = read_text(path, "HAR file")
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise TraceError(f"{path}: not a HAR file: invalid JSON ({e})") from None
    entries = doc.get("log", {}).get("entries") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise TraceError(f"{path}: not a HAR file: no log.entries list")
    report = ImportReport("har", str(path), unit="entry")
    actor = f"browser:{path.stem}"
    records: list[Record] = []
    project = project_host(_urls(entries), supabase_url)
    for n, entry in enumerate(entries, start=1):
        try:
            records.extend(_entry_records(entry, actor, n, report, project))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            report.skip(f"malformed entry ({type(e).__name__}: {e})", n)
    header, events = build(records, "har", report)
    return header, events, report


def _urls(entries: list[Any]) -> list[str]:
    out = []
    for entry in entries:
        req = entry.get("request") if isinstance(entry, dict) else None
        if isinstance(req, dict) and isinstance(req.get("url"), str):
            out.append(req["url"])
    return out


def _entry_records(
    entry: dict[str, Any], actor: str, n: int, report: ImportReport, project: str | None
) -> list[Record]:
    req = entry["request"]
    method = str(req["method"]).upper()
    url = urlsplit(req["url"])
    t_us = iso_to_unix_us(entry["startedDateTime"])
    if method == "OPTIONS":
        report.skip("CORS preflight (OPTIONS)", n)
        return []
    reason = skip_reason(url.hostname or "", project)
    if reason:
        report.skip(reason, n)
        return []
    ep = endpoint(method, url.path)
    if ep is None:
        report.skip("not a gaterush target", n)
        return []
    if ep.target.startswith("realtime:"):
        return _websocket_records(entry, actor, t_us, n, report)
    post = req.get("postData") or {}
    text = post.get("text")
    if text is None and post.get("params"):
        text = urlencode([(p["name"], p.get("value", "")) for p in post["params"]])
    headers = [
        (str(h["name"]), str(h.get("value", "")))
        for h in req.get("headers") or ()
        if isinstance(h, dict) and "name" in h
    ]
    if post.get("mimeType") and not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(("Content-Type", str(post["mimeType"])))
    resp = entry.get("response") or {}
    content = resp.get("content") or {}
    rtext = content.get("text")
    if rtext and content.get("encoding") == "base64":
        rtext = base64.b64decode(rtext)
    response = decode_body(rtext, content.get("mimeType"))
    status = resp.get("status")
    if status in (None, 0, -1):  # never answered (the page closed, the request was aborted)
        report.skip("request without a response", n)
        return []
    payload = recorded_payload(
        ep, method, url.path, url.query, headers, text, status, now_unix=t_us / 1e6
    )
    return [
        Record(
            t_us,
            ep.kind,
            actor,
            ep.target,
            payload,
            outcome(ep, status, response),
            provides=created_id(ep, response),
            needs=confirmed_id(ep, payload),
            order=n * 1000,
        )
    ]


def _websocket_records(
    entry: dict[str, Any], actor: str, t_us: int, n: int, report: ImportReport
) -> list[Record]:
    messages = entry.get("_webSocketMessages") or []
    sent = [(m.get("time"), m.get("data")) for m in messages if m.get("type") == "send"]
    out = []
    for i, (when, data) in enumerate(sent):
        for join in realtime_joins([data]):
            t = round(float(when) * 1_000_000) if isinstance(when, (int, float)) else t_us
            payload = {"table": join["table"]}
            if "filter" in join:
                payload["filter"] = join["filter"]
            out.append(
                Record(
                    t,
                    ev.SUBSCRIBE,
                    actor,
                    f"realtime:{join['table']}",
                    payload,
                    ev.OK,
                    order=n * 1000 + i,
                )
            )
    if not out:
        report.skip("websocket without a Realtime join", n)
    return out
