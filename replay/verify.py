"""Compare a target's end state with the trace's expected end state, and say exactly what differs.

The expected state is the trace header's ``expected`` (traces.projection); the target's comes from
the result file of a ``--target local`` run (the stand-in's end state, kept in its trailer), a
running stand-in's admin API (:func:`standin_end_state`) or, for a real Supabase project,
PostgREST reads of the rows tagged with the run id (:func:`rest_end_state`).

What must hold: every webhook processed once (``webhooks_processed`` equal, duplicates not
processed again), no ticket admitted twice (``admitted`` equal and, when the target can tell,
``tickets_admitted_twice`` zero), orders, tickets sold and revenue equal.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# The keys compared by default (traces.projection's names), in report order.
KEYS = (
    "orders",
    "tickets_sold",
    "revenue_cents",
    "refunds",
    "refunded_cents",
    "admitted",
    "reentries",
    "exits",
    "scans",
    "webhooks_processed",
    "webhooks_duplicate",
    "by_event",
)
# Invariants a target may report beyond the projection: each must be 0.
INVARIANTS = {
    "tickets_admitted_twice": "tickets admitted more than once (without a pass-out between)",
    "webhooks_processed_twice": "webhook events whose effect was applied more than once",
}

_WHY = {
    (
        "webhooks_processed",
        1,
    ): "a duplicate delivery was processed again (not idempotent on event id)",
    ("webhooks_processed", -1): "webhook events were lost or rejected",
    ("webhooks_duplicate", -1): "duplicate deliveries were not recognised as duplicates",
    ("admitted", 1): "more admissions than valid first scans: a ticket admitted twice?",
    ("admitted", -1): "valid tickets were refused at the gate",
    ("orders", 1): "more orders than succeeded payments: an order created twice?",
    ("orders", -1): "paid orders are missing",
    ("tickets_sold", 1): "more tickets issued than bought",
    ("tickets_sold", -1): "bought tickets were not issued",
    ("revenue_cents", 1): "revenue counted twice somewhere",
    ("revenue_cents", -1): "revenue missing",
}


@dataclass(frozen=True, slots=True)
class Difference:
    """One figure that differs: its dotted key, both values, and what it likely means."""

    key: str
    expected: Any
    actual: Any
    note: str = ""

    def __str__(self) -> str:
        text = f"{self.key}: expected {self.expected}, target has {self.actual}"
        if isinstance(self.expected, int | float) and isinstance(self.actual, int | float):
            text += f" ({self.actual - self.expected:+g})"
        return text + (f": {self.note}" if self.note else "")


@dataclass(frozen=True, slots=True)
class Verification:
    """The comparison: differences (empty = the end state is right), what was and was not checked."""

    differences: tuple[Difference, ...]
    checked: tuple[str, ...]
    missing: tuple[str, ...]  # expected keys the target did not report (not judged)

    @property
    def ok(self) -> bool:
        """Whether every checked figure matched (and at least one was checked)."""
        return not self.differences and bool(self.checked)

    def render(self) -> str:
        """A terminal report: ✓ or ✗ per difference, then a verdict line."""
        lines = []
        for d in self.differences:
            lines.append(f"  ✗ {d}")
        if self.missing:
            lines.append(f"  · not reported by the target (not checked): {', '.join(self.missing)}")
        if self.ok:
            lines.append(f"  ✓ end state matches the trace ({', '.join(self.checked)})")
        elif not self.checked:
            lines.append("  ✗ nothing to compare: the target reported none of the expected figures")
        else:
            lines.append(f"  ✗ end state differs in {len(self.differences)} figure(s)")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        """The verification as JSON-ready data."""
        return {
            "ok": self.ok,
            "checked": list(self.checked),
            "missing": list(self.missing),
            "differences": [
                {"key": d.key, "expected": d.expected, "actual": d.actual, "note": d.note}
                for d in self.differences
            ],
        }


def _diff(key: str, expected: Any, actual: Any, out: list[Difference]) -> None:
    if isinstance(expected, Mapping) or isinstance(actual, Mapping):
        e = expected if isinstance(expected, Mapping) else {}
        a = actual if isinstance(actual, Mapping) else {}
        for k in sorted(set(e) | set(a), key=str):
            _diff(f"{key}.{k}", e.get(k, 0), a.get(k, 0), out)
        return
    if expected == actual:
        return
    sign = 0
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        sign = 1 if actual > expected else -1
    out.append(Difference(key, expected, actual, _WHY.get((key.rsplit(".", 1)[-1], sign), "")))


def compare(
    expected: Mapping[str, Any], actual: Mapping[str, Any], keys: Sequence[str] = KEYS
) -> Verification:
    """Compare the keys of an expected end state (projection) with a target's; nested dicts by key."""
    diffs: list[Difference] = []
    checked: list[str] = []
    missing: list[str] = []
    for key in keys:
        if key not in expected:
            continue
        if key not in actual:
            missing.append(key)
            continue
        checked.append(key)
        _diff(key, expected[key], actual[key], diffs)
    for key, what in INVARIANTS.items():
        if key in actual:
            checked.append(key)
            if actual[key]:
                diffs.append(Difference(key, 0, actual[key], what))
    return Verification(tuple(diffs), tuple(checked), tuple(missing))


# --- a real Supabase project, through PostgREST --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tables:
    """Table names the end state is read from (the stand-in's schema by default)."""

    scans: str = "scans"
    orders: str = "orders"
    tickets: str = "tickets"
    webhook_events: str = "webhook_events"


class EndStateError(Exception):
    """The target's end state could not be read; the message says which request and why (no key)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def auth_headers(api_key: str) -> dict[str, str]:
    headers = {"apikey": api_key, "Accept": "application/json"}
    if api_key.count(".") == 2:  # a legacy JWT key also goes as a Bearer token; sb_ keys do not
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _get(url: str, headers: Mapping[str, str], timeout: float) -> tuple[Any, Mapping[str, str]]:
    return request("GET", url, headers, timeout)


def request(
    method: str, url: str, headers: Mapping[str, str], timeout: float
) -> tuple[Any, Mapping[str, str]]:
    """One HTTP request to a target: (JSON body or None, response headers); EndStateError naming
    the method and the URL without its query (never a key) on failure."""
    req = urllib.request.Request(url, headers=dict(headers), method=method)
    shown = public(url)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - http(s) only, checked
            return json.loads(resp.read() or b"null"), dict(resp.headers)
    except urllib.error.HTTPError as e:
        body = e.read()[:300].decode("utf-8", "replace")
        raise EndStateError(f"{method} {shown}: HTTP {e.code}: {body}", e.code) from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise EndStateError(f"{method} {shown}: {reason}") from None
    except json.JSONDecodeError as e:
        raise EndStateError(f"{method} {shown}: response is not JSON ({e})") from None


def _rows(
    base: str, table: str, select: str, filters: Mapping[str, str], headers: Mapping[str, str],
    timeout: float, page: int = 1000,
) -> list[dict[str, Any]]:  # fmt: skip
    """Every row of a PostgREST read, page by page (limit/offset; Supabase caps pages at 1,000)."""
    out: list[dict[str, Any]] = []
    offset = 0
    while True:
        q = {"select": select, **filters, "order": "id", "limit": str(page), "offset": str(offset)}
        data, _ = _get(f"{base}/rest/v1/{table}?{urllib.parse.urlencode(q)}", headers, timeout)
        if not isinstance(data, list):
            raise EndStateError(f"GET {base}/rest/v1/{table}: expected a JSON array of rows")
        out.extend(data)
        if len(data) < page:
            return out
        offset += len(data)


def _count(
    base: str, table: str, filters: Mapping[str, str], headers: Mapping[str, str], timeout: float
) -> int:
    """A row count through `Prefer: count=exact` (PostgREST's Content-Range: 0-0/N)."""
    q = {"select": "id", **filters, "limit": "1"}
    h = {**headers, "Prefer": "count=exact"}
    _, resp_headers = _get(f"{base}/rest/v1/{table}?{urllib.parse.urlencode(q)}", h, timeout)
    cr = {k.lower(): v for k, v in resp_headers.items()}.get("content-range", "")
    total = cr.rpartition("/")[2]
    if not total.isdigit():
        raise EndStateError(f"GET {base}/rest/v1/{table}: no row count in Content-Range {cr!r}")
    return int(total)


def public(url: str) -> str:
    """A URL as it may be printed: scheme, host, port and path; never userinfo or a query."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else "(not a URL)"


def base_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EndStateError(f"target {url!r}: expected an http(s) URL of a Supabase project")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def standin_end_state(
    url: str, *, run_id: str | None, api_key: str, timeout: float = 30.0
) -> dict[str, Any] | None:
    """A gaterush stand-in's own end state (`GET /admin/v1/state?run=`), or None if `url` is not one.

    The stand-in reports every projection key (webhooks included); a real project answers 404 here.
    """
    base = base_url(url)
    q = f"?{urllib.parse.urlencode({'run': run_id})}" if run_id else ""
    try:
        data, _ = _get(f"{base}/admin/v1/state{q}", auth_headers(api_key), timeout)
    except EndStateError as e:
        if e.status == 404:
            return None
        raise
    if not isinstance(data, dict):
        return None
    return data


def end_state_at(
    url: str, *, run_id: str | None, api_key: str, timeout: float = 30.0
) -> dict[str, Any]:
    """A target's end state: the stand-in's admin endpoint if it is one, else PostgREST by run id."""
    got = standin_end_state(url, run_id=run_id, api_key=api_key, timeout=timeout)
    if got is not None:
        return got
    if not run_id:
        raise EndStateError(
            "reading a Supabase project's end state needs the run id (--run or --results)"
        )
    return rest_end_state(url, run_id=run_id, api_key=api_key, timeout=timeout)


def rest_end_state(
    url: str,
    *,
    run_id: str,
    api_key: str,
    tables: Tables = Tables(),  # noqa: B008 - frozen
    timeout: float = 30.0,
) -> dict[str, Any]:
    """The end state of the rows a run created, read through PostgREST (`run_id=eq.<run>` on each table).

    Scans give ``scans`` by outcome, ``admitted`` (valid, not a re-entry), ``reentries``, ``exits`` and
    ``tickets_admitted_twice``; orders give ``orders``, ``revenue_cents`` (paid minus refunded),
    ``refunds``, ``refunded_cents``; tickets with an order give ``tickets_sold``; webhook events (when
    the table is exposed: a 404 leaves these out) give ``webhooks_processed`` (distinct event ids)
    and ``webhooks_duplicate`` (further deliveries).
    """
    base = base_url(url)
    headers = auth_headers(api_key)
    run = {"run_id": f"eq.{run_id}"}

    scans: dict[str, int] = {}
    admitted = reentries = 0
    first_admissions: dict[str, int] = {}
    for r in _rows(base, tables.scans, "id,ticket_code,outcome,reentry", run, headers, timeout):
        outcome = str(r.get("outcome"))
        scans[outcome] = scans.get(outcome, 0) + 1
        if outcome == "valid":
            if r.get("reentry"):
                reentries += 1
            else:
                admitted += 1
                code = str(r.get("ticket_code"))
                first_admissions[code] = first_admissions.get(code, 0) + 1
    orders = revenue = refunds = refunded = 0
    for r in _rows(base, tables.orders, "id,amount_cents,status", run, headers, timeout):
        orders += 1
        amount = int(r.get("amount_cents") or 0)
        revenue += amount
        if r.get("status") == "refunded":
            refunds += 1
            refunded += amount
    tickets_sold = _count(
        base, tables.tickets, {**run, "order_id": "not.is.null"}, headers, timeout
    )
    state: dict[str, Any] = {}
    try:
        events = _rows(base, tables.webhook_events, "id,deliveries", run, headers, timeout)
    except EndStateError as e:
        if e.status != 404:
            raise
        # The project does not expose its webhook log through the API: the webhook figures stay
        # unreported (verify lists them as not checked); orders still show double fulfilment.
    else:
        processed = len(events)
        deliveries = sum(int(r.get("deliveries") or 1) for r in events)
        state.update(webhooks_processed=processed, webhooks_duplicate=deliveries - processed)
    return state | {
        "admitted": admitted,
        "exits": scans.get("exited", 0),
        "orders": orders,
        "reentries": reentries,
        "refunded_cents": refunded,
        "refunds": refunds,
        "revenue_cents": revenue - refunded,
        "scans": dict(sorted(scans.items())),
        "tickets_admitted_twice": sum(1 for n in first_admissions.values() if n > 1),
        "tickets_sold": tickets_sold,
    }
