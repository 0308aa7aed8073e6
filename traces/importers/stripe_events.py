"""Import a list of Stripe events (`stripe events list`, GET /v1/events) as webhook deliveries.

Each event object becomes a `webhook` event to fn:stripe-webhook from the actor `stripe`, at its
`created` time, with the whole event object as the payload, stored unsigned: replay signs each
delivery at send time. Stripe lists newest first; the trace is in time order, and an event id
seen again is a duplicate delivery (`expect` duplicate), as the stripe-webhook function must
treat it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from traces import event as ev
from traces.event import Event, TraceError
from traces.header import TraceHeader
from traces.importers import ImportReport, Record, build, read_text
from traces.importers.endpoints import scrub

STRIPE_ACTOR = "stripe"


def import_stripe_events(path: Path) -> tuple[TraceHeader, list[Event], ImportReport]:
    """Read a Stripe events list (a list object, a JSON array, or JSON lines) into a trace."""
    path = Path(path)
    text = read_text(path, "Stripe events list")
    items = _items(path, text)
    report = ImportReport("stripe-events", str(path))
    # Stripe lists newest first: walk oldest first so `seen` marks the later copies as duplicates.
    valid = []
    for n, obj in items:
        reason = _problem(obj)
        if reason:
            report.skip(reason, n)
        else:
            valid.append((n, obj))
    newest_first = _newest_first(valid)
    ordered = list(reversed(valid)) if newest_first else valid
    seen: set[str] = set()
    records = []
    for i, (_n, obj) in enumerate(ordered):
        expect = ev.DUPLICATE if obj["id"] in seen else ev.PROCESSED
        seen.add(obj["id"])
        records.append(
            Record(
                int(obj["created"]) * 1_000_000,
                ev.WEBHOOK,
                STRIPE_ACTOR,
                ev.TARGET_WEBHOOK,
                scrub(obj),
                expect,
                order=i,
            )
        )
    header, events = build(records, "stripe-events", report)
    return header, events, report


def _items(path: Path, text: str) -> list[tuple[int, Any]]:
    try:
        doc = json.loads(text)
    except ValueError as e:
        lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
        out = []
        for n, line in lines:
            try:
                out.append((n, json.loads(line)))
            except ValueError:
                out.append((n, None))
        if not lines or all(o is None for _, o in out):
            raise TraceError(f"{path}: not a Stripe events list: invalid JSON ({e})") from None
        return out
    if isinstance(doc, dict) and doc.get("object") == "list" and isinstance(doc.get("data"), list):
        return list(enumerate(doc["data"], start=1))
    if isinstance(doc, dict) and doc.get("object") == "event":
        return [(1, doc)]
    if isinstance(doc, list):
        return list(enumerate(doc, start=1))
    raise TraceError(
        f"{path}: not a Stripe events list: expected a list object with 'data', an array, or JSON lines"
    )


def _problem(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return "not a JSON object"
    if obj.get("object") != "event":
        return "not a Stripe event (object != 'event')"
    if not isinstance(obj.get("id"), str) or not isinstance(obj.get("type"), str):
        return "event without id or type"
    if not isinstance(obj.get("created"), int) or isinstance(obj.get("created"), bool):
        return "event without an integer 'created' time"
    if not isinstance(obj.get("data"), dict):
        return "event without data"
    return None


def _newest_first(items: list[tuple[int, dict[str, Any]]]) -> bool:
    """Stripe's order is newest first; a file someone sorted oldest first is kept as it is."""
    created = [obj["created"] for _, obj in items]
    return len(created) > 1 and created[0] > created[-1]
