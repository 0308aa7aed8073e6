"""The stand-in's end state (the keys of traces.projection, for verify) and the cleanup of a run's rows."""

from __future__ import annotations

import sqlite3
from typing import Any


def _where_run(run_id: str | None, alias: str = "") -> tuple[str, tuple[Any, ...]]:
    if run_id is None:
        return "", ()
    col = f"{alias}.run_id" if alias else "run_id"
    return f" AND {col} = ?", (run_id,)


def end_state(conn: sqlite3.Connection, run_id: str | None = None) -> dict[str, Any]:
    """What the target holds, with traces.projection's keys: scans by outcome, admissions, orders,
    tickets sold, revenue, refunds, webhooks processed and duplicate, payments; per event too.

    With `run_id`, only rows that run created count (the `inside` figure is always venue-wide).
    Read in one transaction, so the figures agree with each other.
    """
    w, a = _where_run(run_id)
    wo, ao = _where_run(run_id, "o")
    conn.execute("BEGIN")
    try:
        scans = {
            r[0]: r[1]
            for r in conn.execute(
                f"SELECT outcome, COUNT(*) FROM scans WHERE 1{w} GROUP BY outcome ORDER BY outcome",
                a,
            )
        }
        admitted, reentries = conn.execute(
            f"SELECT COALESCE(SUM(reentry = 0), 0), COALESCE(SUM(reentry = 1), 0) FROM scans WHERE outcome = 'valid'{w}",
            a,
        ).fetchone()
        inside = conn.execute("SELECT COUNT(*) FROM tickets WHERE inside = 1").fetchone()[0]
        orders, revenue, refunds, refunded = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(amount_cents), 0), COALESCE(SUM(status = 'refunded'), 0),"
            f" COALESCE(SUM(CASE WHEN status = 'refunded' THEN amount_cents END), 0) FROM orders WHERE 1{w}",
            a,
        ).fetchone()
        tickets_sold = conn.execute(
            f"SELECT COUNT(*) FROM tickets t JOIN orders o ON o.id = t.order_id WHERE 1{wo}", ao
        ).fetchone()[0]
        processed, deliveries = conn.execute(
            f"SELECT COUNT(*), COALESCE(SUM(deliveries), 0) FROM webhook_events WHERE 1{w}", a
        ).fetchone()
        checkouts, succeeded, declined = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(json_extract(object, '$.status') = 'succeeded'), 0),"
            " COALESCE(SUM(json_extract(object, '$.last_payment_error') IS NOT NULL), 0)"
            f" FROM payment_intents WHERE 1{w}",
            a,
        ).fetchone()
        by_event: dict[str, dict[str, int]] = {}

        def per(eid: Any) -> dict[str, int]:
            return by_event.setdefault(
                str(eid), {"admitted": 0, "orders": 0, "revenue_cents": 0, "tickets_sold": 0}
            )

        for eid, n in conn.execute(
            f"SELECT event_id, COUNT(*) FROM scans WHERE outcome = 'valid' AND reentry = 0{w} GROUP BY event_id",
            a,
        ):
            per(eid)["admitted"] = n
        for eid, n, rev in conn.execute(
            "SELECT event_id, COUNT(*), COALESCE(SUM(CASE WHEN status = 'paid' THEN amount_cents ELSE 0 END), 0)"
            f" FROM orders WHERE 1{w} GROUP BY event_id",
            a,
        ):
            per(eid).update(orders=n, revenue_cents=rev)
        for eid, n in conn.execute(
            f"SELECT o.event_id, COUNT(*) FROM tickets t JOIN orders o ON o.id = t.order_id WHERE 1{wo}"
            " GROUP BY o.event_id",
            ao,
        ):
            per(eid)["tickets_sold"] = n
    finally:
        conn.execute("COMMIT")
    return {
        "admitted": admitted,
        "by_event": {k: dict(sorted(v.items())) for k, v in sorted(by_event.items())},
        "checkouts": checkouts,
        "exits": scans.get("exited", 0),
        "inside": inside,
        "orders": orders,
        "payments_declined": declined,
        "payments_succeeded": succeeded,
        "reentries": reentries,
        "refunded_cents": refunded,
        "refunds": refunds,
        "revenue_cents": revenue - refunded,
        "scans": scans,
        "tickets_sold": tickets_sold,
        "webhooks": deliveries,
        "webhooks_duplicate": deliveries - processed,
        "webhooks_processed": processed,
    }


def delete_run_job(conn: sqlite3.Connection, changes: list[Any], run_id: str) -> dict[str, int]:
    """Remove every row a run created and undo its scans' effect on pre-existing tickets; counts per table."""
    deleted: dict[str, int] = {}
    order_ids = [r[0] for r in conn.execute("SELECT id FROM orders WHERE run_id = ?", (run_id,))]
    touched = {
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT ticket_id FROM scans WHERE run_id = ? AND ticket_id IS NOT NULL",
            (run_id,),
        )
    }
    deleted["scans"] = conn.execute("DELETE FROM scans WHERE run_id = ?", (run_id,)).rowcount
    n_tickets = 0
    for oid in order_ids:
        ids = [r[0] for r in conn.execute("SELECT id FROM tickets WHERE order_id = ?", (oid,))]
        conn.executemany("DELETE FROM scans WHERE ticket_id = ?", ((i,) for i in ids))
        n_tickets += conn.execute("DELETE FROM tickets WHERE order_id = ?", (oid,)).rowcount
        touched.difference_update(ids)
    n_tickets += conn.execute("DELETE FROM tickets WHERE run_id = ?", (run_id,)).rowcount
    deleted["tickets"] = n_tickets
    deleted["orders"] = conn.execute("DELETE FROM orders WHERE run_id = ?", (run_id,)).rowcount
    for table in ("webhook_events", "pending_refunds", "payment_intents", "stripe_objects"):
        deleted[table] = conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,)).rowcount
    for tid in touched:
        _replay_ticket(conn, tid)
    deleted["tickets_restored"] = len(touched)
    return deleted


def _replay_ticket(conn: sqlite3.Connection, ticket_id: int) -> None:
    """Recompute a ticket's admission state from the scans that remain."""
    first = None
    inside = False
    admissions = 0
    for outcome, at in conn.execute(
        "SELECT outcome, scanned_at FROM scans WHERE ticket_id = ? AND outcome IN ('valid', 'exited') ORDER BY id",
        (ticket_id,),
    ):
        if outcome == "valid":
            first = first or at
            admissions += 1
            inside = True
        else:
            inside = False
    conn.execute(
        "UPDATE tickets SET first_scanned_at = ?, inside = ?, admissions = ? WHERE id = ?",
        (first, int(inside), admissions, ticket_id),
    )
