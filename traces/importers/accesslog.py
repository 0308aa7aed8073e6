"""Import access logs as traces: the common/combined log format, and Supabase's API log export.

Access logs hold no bodies: an event keeps the query string as its payload, and its `expect` is
what the status code says (`ok`, `http_<code>`). One actor per client: the authenticated user
when the log names one, else the client IP (`ip:<addr>`). Lines that do not parse are counted
with their line numbers; a file with no parseable line at all is a TraceError.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from traces.event import Event, TraceError
from traces.header import TraceHeader
from traces.importers import ImportReport, Record, build, read_text
from traces.importers.endpoints import api_path, endpoint, outcome, parse_query, payload_for
from traces.importers.hosts import project_host, skip_reason
from traces.importers.request import REQUEST, capture
from traces.importers.secrets import scrub_text

# Apache's LogFormat "%h %l %u %t \"%r\" %>s %b" and, combined, "... \"%{Referer}i\" \"%{User-agent}i\"".
CLF = re.compile(
    r'^(?P<host>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<request>(?:[^"\\]|\\.)*)" '
    r'(?P<status>\d{3}|-) (?P<size>\d+|-)(?: "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)")?\s*$'
)
CLF_TIME = "%d/%b/%Y:%H:%M:%S %z"


def import_clf(path: Path) -> tuple[TraceHeader, list[Event], ImportReport]:
    """Read a common or combined log format file into a trace."""
    path = Path(path)
    text = read_text(path, "common/combined log file")
    report = ImportReport("clf", str(path))
    records: list[Record] = []
    parsed = 0
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        m = CLF.match(line)
        if not m:
            report.skip("not a common/combined log line", n)
            continue
        try:
            t_us = round(datetime.strptime(m["time"], CLF_TIME).timestamp() * 1_000_000)
        except ValueError:
            report.skip("bad time", n)
            continue
        parts = m["request"].split()
        if len(parts) < 2:
            report.skip("bad request line", n)
            continue
        parsed += 1
        user = m["user"]
        # an authuser that is a credential (a JWT, a key) is not kept as the actor's name
        named = user != "-" and scrub_text(user) == user
        actor = f"user:{user}" if named else f"ip:{scrub_text(m['host'])}"
        status = int(m["status"]) if m["status"] != "-" else None
        rec = _record(parts[0], parts[1], status, actor, t_us, n, report)
        if rec:
            records.append(rec)
    if parsed == 0 and report.total_skipped:
        raise TraceError(
            f"{path}: not a common/combined log file: no line parses (first bad line {_first(report)})"
        )
    header, events = build(records, "clf", report)
    return header, events, report


def _first(report: ImportReport) -> int:
    return min(min(v) for v in report.lines.values() if v)


def _record(
    method: str,
    url: str,
    status: int | None,
    actor: str,
    t_us: int,
    n: int,
    report: ImportReport,
    project: str | None = None,
) -> Record | None:
    parts = urlsplit(url)
    if method.upper() == "OPTIONS":
        report.skip("CORS preflight (OPTIONS)", n)
        return None
    if parts.hostname:
        reason = skip_reason(parts.hostname, project)
        if reason:
            report.skip(reason, n)
            return None
    ep = endpoint(method, parts.path)
    if ep is None:
        report.skip("not a gaterush target", n)
        return None
    query = parse_query(parts.query)
    payload = payload_for(ep, method, parts.path, query, None)
    if method.upper() in ("GET", "HEAD") and not ep.target.startswith("realtime:"):
        # a read is whole without its body: kept as sent (HEAD stays HEAD); a log has no headers
        payload[REQUEST] = capture(method, api_path(parts.path), parts.query, (), None)
    return Record(t_us, ep.kind, actor, ep.target, payload, outcome(ep, status, None), order=n)


# --- Supabase API logs (edge_logs) exported from the Logs Explorer as JSON or CSV -------------

_METHOD = re.compile(r"^[A-Z]{3,7}$")
_IP = re.compile(r"^[0-9A-Fa-f.:]{3,45}$")


def parse_message(message: str) -> dict[str, str] | None:
    """The method, status, URL and client IP of an edge_logs `event_message`, in the forms the
    Logs Explorer shows: "METHOD | STATUS | IP | ID | URL | USER-AGENT", the short "METHOD |
    STATUS | URL | USER-AGENT", and storage's "REF | METHOD | STATUS | IP | ID | PATH | AGENT"."""
    parts = [p.strip() for p in message.split(" | ")]
    at_method = next(
        (
            i
            for i in range(min(len(parts) - 2, 2))
            if _METHOD.match(parts[i]) and re.fullmatch(r"\d{3}", parts[i + 1])
        ),
        None,
    )
    if at_method is None:
        return None
    rest = parts[at_method + 2 :]
    at = next((i for i, p in enumerate(rest) if p.startswith(("http://", "https://", "/"))), None)
    if at is None:
        return None
    ip = next((p for p in rest[:at] if _IP.match(p) and any(c in p for c in ".:")), "")
    return {
        "method": parts[at_method],
        "status": parts[at_method + 1],
        "url": rest[at].split()[0],
        "ip": ip,
    }


def import_supabase(
    path: Path, *, supabase_url: str | None = None
) -> tuple[TraceHeader, list[Event], ImportReport]:
    """Read a Supabase API log export (JSON array/object, JSON lines, or CSV) into a trace.

    Rows are edge_logs rows: `timestamp` (Unix micro/milli/seconds or ISO 8601, UTC), and either
    the request and response fields (`method`, `path`/`url`, `search`, `status_code`,
    `cf_connecting_ip`), flat or nested under `metadata`, or the `event_message`
    "METHOD | STATUS | IP | ID | URL | USER-AGENT" or its short form "METHOD | STATUS | URL |
    USER-AGENT". A URL with a host other than the project's (`supabase_url`, else the most
    frequent *.supabase.co host) or api.stripe.com is skipped.
    """
    path = Path(path)
    text = read_text(path, "Supabase log export")
    report = ImportReport("supabase", str(path))
    rows = _rows(path, text)
    project = project_host(_row_urls(rows), supabase_url)
    records = []
    parsed = 0
    for n, row in rows:
        if not isinstance(row, dict):
            report.skip("row is not an object", n)
            continue
        flat = _flatten(row)
        try:
            t_us = _timestamp(flat.get("timestamp"))
        except (TypeError, ValueError):
            report.skip("missing or bad timestamp", n)
            continue
        method, url, status, ip = flat.get("method"), flat.get("url"), flat.get("status_code"), None
        m = parse_message(str(flat.get("event_message") or ""))
        if m:
            method = method or m["method"]
            url = url or m["url"]
            status = status or m["status"]
            ip = m["ip"].strip() or None
        if flat.get("path"):
            search = flat.get("search") or ""
            url = flat["path"] + (search if not search or search.startswith("?") else "?" + search)
        ip = (
            flat.get("cf_connecting_ip")
            or flat.get("x_real_ip")
            or _first_ip(flat.get("x_forwarded_for"))
            or ip
        )
        if not method or not url:
            report.skip("no method and URL (event_message or request fields)", n)
            continue
        try:
            status_i = int(status) if status not in (None, "") else None
        except ValueError:
            report.skip("bad status code", n)
            continue
        parsed += 1
        rec = _record(
            str(method),
            str(url),
            status_i,
            f"ip:{scrub_text(str(ip))}" if ip else "client:unknown",
            t_us,
            n,
            report,
            project,
        )
        if rec:
            records.append(rec)
    if parsed == 0 and report.total_skipped:
        raise TraceError(
            f"{path}: not a Supabase API log export: no row has a time, method and URL"
        )
    header, events = build(records, "supabase", report)
    return header, events, report


def _row_urls(rows: list[tuple[int, Any]]) -> list[str]:
    out = []
    for _, row in rows:
        if isinstance(row, dict):
            flat = _flatten(row)
            m = parse_message(str(flat.get("event_message") or ""))
            url = flat.get("url") or (m["url"] if m else None)
            if isinstance(url, str):
                out.append(url)
    return out


def _rows(path: Path, text: str) -> list[tuple[int, Any]]:
    stripped = text.lstrip()
    if not stripped:
        raise TraceError(f"{path}: empty file")
    if stripped[0] in "[{":
        try:
            doc = json.loads(text)
        except ValueError:
            return _json_lines(path, text)
        if isinstance(doc, dict):
            for key in ("result", "data", "rows", "logs"):
                if isinstance(doc.get(key), list):
                    doc = doc[key]
                    break
            else:
                doc = [doc]
        if not isinstance(doc, list):
            raise TraceError(
                f"{path}: not a Supabase log export: JSON is neither rows nor an object of rows"
            )
        return list(enumerate(doc, start=1))
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "timestamp" not in reader.fieldnames:
        raise TraceError(
            f"{path}: not a Supabase log export: neither JSON nor CSV with a 'timestamp' column"
        )
    rows = []
    try:
        for row in reader:
            rows.append((reader.line_num, {k: _maybe_json(v) for k, v in row.items() if k}))
    except csv.Error as e:
        raise TraceError(f"{path}: bad CSV at line {reader.line_num}: {e}") from None
    return rows


def _json_lines(path: Path, text: str) -> list[tuple[int, Any]]:
    rows: list[tuple[int, Any]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((n, json.loads(line)))
        except ValueError:
            rows.append((n, None))
    if all(r is None for _, r in rows):
        raise TraceError(f"{path}: not a Supabase log export: invalid JSON")
    return rows


def _maybe_json(value: str | None) -> Any:
    if value and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _flatten(obj: Any, out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Leaf fields by their own name (first one wins): edge_logs nests request/response in lists."""
    out = {} if out is None else out
    if isinstance(obj, list):
        for item in obj:
            _flatten(item, out)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if key == "headers" and isinstance(value, (list, dict)):
                _flatten(value, out)  # only the IP headers are read out of them
            elif isinstance(value, (dict, list)):
                _flatten(value, out)
            elif key not in out and value not in (None, ""):
                out[key] = value
    return out


def _first_ip(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.split(",")[0].strip()
    return None


def _timestamp(value: Any) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)
        if v > 1e17:  # nanoseconds
            return round(v / 1000)
        if v > 1e14:  # microseconds
            return round(v)
        if v > 1e11:  # milliseconds
            return round(v * 1000)
        return round(v * 1_000_000)
    if isinstance(value, str):
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace(" UTC", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)  # the Logs Explorer shows UTC
        return round(dt.timestamp() * 1_000_000)
    raise TypeError("no timestamp")
