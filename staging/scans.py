"""The `scan_ticket_atomic` RPC: argument checks and the admission job run on the single writer."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from staging.errors import PostgrestError
from staging.schema import now_iso
from staging.values import INT4, int_in_range, storable_text
from traces.event import ALREADY_SCANNED, EXITED, INVALID, VALID, WRONG_EVENT

SCAN_ARGS = ("p_ticket_code", "p_event_id", "p_gate", "p_lane", "p_direction")


@dataclass(frozen=True, slots=True)
class ScanArgs:
    """Validated arguments of one scan."""

    ticket_code: str
    event_id: int
    gate: str | None
    lane: str | None
    direction: str  # "in" | "out"


def _as_int(v: Any, name: str) -> int:
    return int_in_range(v, INT4, name)  # PostgreSQL's integer: ASCII digits, 32 bits


def _as_text(v: Any, name: str) -> str | None:
    if v is None:
        return None
    if isinstance(v, (bool, dict | list)):
        raise PostgrestError(
            400,
            "22P02",
            f"invalid input syntax for type text: {v!r}",
            f"argument {name} must be a string",
        )
    return storable_text(str(v), name)


def parse_scan_args(body: Any) -> ScanArgs:
    """ScanArgs from the RPC's JSON body; PostgrestError naming the argument when one is wrong."""
    if not isinstance(body, dict):
        raise PostgrestError(
            400, "PGRST102", "Invalid body: expected a JSON object of named arguments"
        )
    unknown = sorted(set(body) - set(SCAN_ARGS))
    missing = [a for a in ("p_ticket_code", "p_event_id") if body.get(a) is None]
    if unknown or missing:
        given = ", ".join(sorted(body))
        detail = []
        if missing:
            detail.append(f"missing required argument(s): {', '.join(missing)}")
        if unknown:
            detail.append(f"unknown argument(s): {', '.join(unknown)}")
        raise PostgrestError(
            404,
            "PGRST202",
            f"Could not find the function public.scan_ticket_atomic({given}) in the schema cache",
            "; ".join(detail),
            "expected arguments: p_ticket_code text, p_event_id integer, p_gate text, p_lane text, p_direction text ('in' or 'out')",
        )
    code = body["p_ticket_code"]
    if isinstance(code, str):
        storable_text(code, "p_ticket_code")
    else:
        raise PostgrestError(
            400,
            "22P02",
            f"invalid input syntax for type text: {code!r}",
            "argument p_ticket_code must be a string",
        )
    direction = body.get("p_direction") or "in"
    if direction not in ("in", "out"):
        raise PostgrestError(
            400, "22023", f"invalid p_direction {direction!r}", "expected 'in' or 'out'"
        )
    return ScanArgs(
        code,
        _as_int(body["p_event_id"], "p_event_id"),
        _as_text(body.get("p_gate"), "p_gate"),
        _as_text(body.get("p_lane"), "p_lane"),
        direction,
    )


TICKET_COLUMNS = (
    "id",
    "code",
    "event_id",
    "order_id",
    "status",
    "first_scanned_at",
    "inside",
    "admissions",
    "created_at",
    "updated_at",
    "run_id",
)
_SELECT = (
    "SELECT t.id, t.code, t.event_id, t.order_id, t.status, t.first_scanned_at, t.inside,"
    " t.admissions, t.created_at, t.updated_at, t.run_id, e.allow_reentry"
    " FROM tickets t LEFT JOIN events e ON e.id = t.event_id WHERE t.code = ?"
)


def ticket_record(row: tuple[Any, ...]) -> dict[str, Any]:
    """A ticket row (in TICKET_COLUMNS order) as JSON, booleans as booleans."""
    rec = dict(zip(TICKET_COLUMNS, row, strict=False))
    rec["inside"] = bool(rec["inside"])
    return rec


def scan_job(
    conn: sqlite3.Connection,
    changes: list[Any],
    a: ScanArgs,
    run_id: str | None,
    publish: frozenset[str],
) -> dict[str, Any]:
    """Decide and record one scan; runs on the writer, so the check-and-set is atomic.

    Outcomes: invalid (unknown or refunded code), wrong_event, valid (first admission, or a
    re-entry after a pass-out where the event allows it), already_scanned (inside already, or
    admitted before and re-entry not allowed), exited (a pass-out of a ticket inside).
    """
    now = now_iso()
    row = conn.execute(_SELECT, (a.ticket_code,)).fetchone()
    reentry = False
    updated = False
    if row is None:
        outcome = INVALID
    elif row[2] != a.event_id:
        outcome = WRONG_EVENT
    elif row[4] != "valid":
        outcome = INVALID
    elif a.direction == "in":
        if row[6]:
            outcome = ALREADY_SCANNED
        elif row[5] is None:
            outcome, updated = VALID, True
            conn.execute(
                "UPDATE tickets SET first_scanned_at=?, inside=1, admissions=1, updated_at=? WHERE id=?",
                (now, now, row[0]),
            )
        elif row[11]:
            outcome, updated, reentry = VALID, True, True
            conn.execute(
                "UPDATE tickets SET inside=1, admissions=admissions+1, updated_at=? WHERE id=?",
                (now, row[0]),
            )
        else:
            outcome = ALREADY_SCANNED
    elif row[6] and row[11]:
        outcome, updated = EXITED, True
        conn.execute("UPDATE tickets SET inside=0, updated_at=? WHERE id=?", (now, row[0]))
    else:
        # a pass-out of a ticket not inside, or at an event without re-entry: refused
        outcome = INVALID if row[5] is None or not row[11] else ALREADY_SCANNED
    cur = conn.execute(
        "INSERT INTO scans(ticket_code, ticket_id, event_id, gate, lane, direction, outcome, reentry,"
        " scanned_at, run_id) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            a.ticket_code,
            row[0] if row else None,
            a.event_id,
            a.gate,
            a.lane,
            a.direction,
            outcome,
            int(reentry),
            now,
            run_id,
        ),
    )
    ticket = None
    if row is not None:
        if updated:
            row = conn.execute(_SELECT, (a.ticket_code,)).fetchone()
            if "tickets" in publish:
                changes.append(("tickets", "UPDATE", ticket_record(row), {"id": row[0]}, now))
        ticket = ticket_record(row)
    if "scans" in publish:
        changes.append(
            (
                "scans",
                "INSERT",
                {
                    "id": cur.lastrowid,
                    "ticket_code": a.ticket_code,
                    "ticket_id": row[0] if row else None,
                    "event_id": a.event_id,
                    "gate": a.gate,
                    "lane": a.lane,
                    "direction": a.direction,
                    "outcome": outcome,
                    "reentry": reentry,
                    "scanned_at": now,
                    "run_id": run_id,
                },
                None,
                now,
            )
        )
    return {
        "outcome": outcome,
        "ticket": ticket,
        "first_scanned_at": ticket["first_scanned_at"] if ticket else None,
    }
