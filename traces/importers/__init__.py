"""Importers of recorded traffic: HAR files, access logs, and Stripe event lists, to traces.

Each importer parses its file into `Record`s (wall-clock time, kind, actor, target, payload,
expect), and `build` sorts them into events relative to the first one. Unparseable lines or
entries are counted per reason with their line numbers (`ImportReport`), never a crash; a file
that is not the format at all raises `TraceError` naming the file and why.

The mapped records (not the raw file) are held in memory to sort them: recorded files are
usually not in time order (a Stripe events list is newest first).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traces.event import Event, TraceError, pack_payload
from traces.header import TraceHeader
from traces.importers.endpoints import Endpoint, linked_request
from traces.importers.inventory import infer_inventory

MAX_LINES_KEPT = 20  # line numbers remembered per skip reason (all are counted)


@dataclass(slots=True)
class Record:
    """One mapped request before it gets its place in the trace."""

    t_unix_us: int
    kind: str
    actor: str
    target: str | None
    payload: dict[str, Any]
    expect: str | None = None
    provides: str | None = None  # an id this request created (a PaymentIntent)
    needs: str | None = None  # an id created by an earlier request this one needs (-> `after`)
    order: int = 0  # position in the file: ties on time keep it


@dataclass(slots=True)
class ImportReport:
    """What an import mapped (per target) and skipped (per reason, with line numbers)."""

    format: str
    source: str
    mapped: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    lines: dict[str, list[int]] = field(default_factory=dict)
    unit: str = "line"  # what the numbers count: a line of a log, an entry of a HAR

    def skip(self, reason: str, line: int) -> None:
        """Count one skipped line or entry and remember where it was."""
        self.skipped[reason] += 1
        kept = self.lines.setdefault(reason, [])
        if len(kept) < MAX_LINES_KEPT:
            kept.append(line)

    @property
    def total_skipped(self) -> int:
        """How many lines or entries were skipped, all reasons together."""
        return sum(self.skipped.values())

    def summary(self) -> str:
        """A few human lines: mapped per target, skipped per reason with line numbers."""
        out = [f"imported {sum(self.mapped.values())} events from {self.source} ({self.format})"]
        for target, n in sorted(self.mapped.items()):
            out.append(f"  {n:>8}  {target}")
        if self.skipped:
            out.append(f"skipped {self.total_skipped}:")
            for reason, n in self.skipped.most_common():
                where = ", ".join(map(str, self.lines.get(reason, [])))
                more = " ..." if n > len(self.lines.get(reason, [])) else ""
                out.append(f"  {n:>8}  {reason} ({self.unit} {where}{more})")
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (for --json)."""
        return {
            "format": self.format,
            "source": self.source,
            "unit": self.unit,
            "mapped": dict(self.mapped),
            "skipped": {
                r: {"count": n, "lines": self.lines.get(r, [])} for r, n in self.skipped.items()
            },
        }


def build(
    records: Iterable[Record], fmt: str, report: ImportReport
) -> tuple[TraceHeader, list[Event]]:
    """Sort records by time (file order on ties) into events with seq, `after` links and origin."""
    recs = sorted(records, key=lambda r: (r.t_unix_us, r.order))
    origin = recs[0].t_unix_us if recs else 0
    created: dict[str, int] = {}
    events = []
    for seq, r in enumerate(recs):
        after = None
        if r.target is not None:
            after = linked_request(Endpoint(r.kind, r.target), r.payload, created)
        if after is None and r.needs:
            after = created.get(r.needs)
        if r.provides:
            created[r.provides] = seq
        events.append(
            Event(
                r.t_unix_us - origin,
                seq,
                r.kind,
                r.actor,
                r.target,
                pack_payload(r.payload),
                after,
                r.expect,
            )
        )
        report.mapped[r.target or f"({r.kind})"] += 1
    header = TraceHeader(
        origin_unix_us=origin,
        source=f"import:{fmt}",
        scenario={},
        inventory=infer_inventory(events),
    )
    return header, events


def read_text(path: Path, what: str) -> str:
    """A text file's content; binary junk or a missing file is a TraceError naming the file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise TraceError(f"{path}: cannot read: {e.strerror or e}") from None
    if b"\x00" in raw[:4096]:
        raise TraceError(f"{path}: not a {what}: binary content (NUL bytes)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TraceError(f"{path}: not a {what}: not UTF-8 text at byte {e.start}") from None


Importer = Callable[..., tuple[TraceHeader, list[Event], ImportReport]]


def importers() -> dict[str, Importer]:
    """The import formats by name (the FORMAT of `gaterush trace import`)."""
    from traces.importers import accesslog, har, stripe_events

    return {
        "har": har.import_har,
        "supabase": accesslog.import_supabase,
        "clf": accesslog.import_clf,
        "stripe-events": stripe_events.import_stripe_events,
    }


def import_file(
    fmt: str, path: Path, *, supabase_url: str | None = None
) -> tuple[TraceHeader, list[Event], ImportReport]:
    """Import a recorded-traffic file of a named format; TraceError on an unknown format.

    `supabase_url` names the project whose requests are targets (HAR and Supabase logs; by
    default the file's most frequent Supabase host); api.stripe.com always is one.
    """
    table = importers()
    if fmt not in table:
        raise TraceError(f"unknown import format {fmt!r}: expected one of {', '.join(table)}")
    if fmt in ("har", "supabase"):
        return table[fmt](Path(path), supabase_url=supabase_url)
    return table[fmt](Path(path))
