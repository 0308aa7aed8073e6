"""The stand-in's tables, the seeding of an Inventory, and the keys kept with a database file."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime

from staging.keys import Keys
from traces.event import ticket_code
from traces.header import Inventory

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    capacity INTEGER NOT NULL,
    presold INTEGER NOT NULL,
    price_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    allow_reentry BOOLEAN NOT NULL DEFAULT 0,
    starts_at TEXT
);
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY,
    payment_intent TEXT NOT NULL UNIQUE,
    event_id INTEGER NOT NULL,
    buyer TEXT,
    order_ref TEXT,
    quantity INTEGER NOT NULL,
    amount_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    stripe_event TEXT,
    created_at TEXT NOT NULL,
    refunded_at TEXT,
    run_id TEXT
);
CREATE TABLE IF NOT EXISTS tickets (
    id INTEGER PRIMARY KEY,
    code TEXT NOT NULL UNIQUE,
    event_id INTEGER NOT NULL,
    order_id INTEGER,
    status TEXT NOT NULL DEFAULT 'valid',
    first_scanned_at TEXT,
    inside BOOLEAN NOT NULL DEFAULT 0,
    admissions INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT,
    run_id TEXT
);
CREATE INDEX IF NOT EXISTS tickets_event ON tickets(event_id);
CREATE INDEX IF NOT EXISTS orders_event ON orders(event_id);
CREATE INDEX IF NOT EXISTS tickets_order ON tickets(order_id);
CREATE TABLE IF NOT EXISTS scans (
    id INTEGER PRIMARY KEY,
    ticket_code TEXT NOT NULL,
    ticket_id INTEGER,
    event_id INTEGER,
    gate TEXT,
    lane TEXT,
    direction TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reentry BOOLEAN NOT NULL DEFAULT 0,
    scanned_at TEXT NOT NULL,
    run_id TEXT
);
CREATE INDEX IF NOT EXISTS scans_run ON scans(run_id);
CREATE TABLE IF NOT EXISTS webhook_events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    object_id TEXT,
    received_at TEXT NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 1,
    run_id TEXT
);
CREATE TABLE IF NOT EXISTS pending_refunds (
    payment_intent TEXT PRIMARY KEY,
    stripe_event TEXT NOT NULL,
    received_at TEXT NOT NULL,
    run_id TEXT
);
CREATE TABLE IF NOT EXISTS payment_intents (
    id TEXT PRIMARY KEY,
    object TEXT NOT NULL,
    created_at TEXT NOT NULL,
    run_id TEXT
);
DROP VIEW IF EXISTS event_revenue;
CREATE VIEW event_revenue AS
    SELECT e.id AS event_id, e.currency AS currency,
           (SELECT COALESCE(SUM(o.amount_cents), 0) FROM orders o
             WHERE o.event_id = e.id AND o.status = 'paid') AS revenue_cents,
           (SELECT COUNT(*) FROM orders o WHERE o.event_id = e.id AND o.status = 'paid') AS orders,
           (SELECT COUNT(*) FROM tickets t JOIN orders o ON o.id = t.order_id
             WHERE o.event_id = e.id AND o.status = 'paid') AS tickets_sold
    FROM events e;
"""

# Tables and views that GET /rest/v1/{name} serves (payment_intents belong to the Stripe subset).
REST_TABLES = ("events", "tickets", "orders", "scans", "event_revenue", "webhook_events")


def now_iso(ts: float | None = None) -> str:
    """A timestamptz as PostgREST renders it: ISO 8601 with microseconds and +00:00."""
    return datetime.fromtimestamp(time.time() if ts is None else ts, UTC).isoformat(
        timespec="microseconds"
    )


def create_schema(conn: sqlite3.Connection) -> None:
    """Create every table and view if missing (idempotent: a restart keeps the data)."""
    conn.executescript(SCHEMA)
    have = {r[1] for r in conn.execute("PRAGMA table_info(events)")}
    if "starts_at" not in have:  # a database made before the column existed
        conn.execute("ALTER TABLE events ADD COLUMN starts_at TEXT")


def table_columns(conn: sqlite3.Connection) -> dict[str, tuple[str, ...]]:
    """Column names of every REST-served table or view."""
    return {t: tuple(r[1] for r in conn.execute(f"PRAGMA table_info({t})")) for t in REST_TABLES}


def seed_inventory(conn: sqlite3.Connection, inventory: Inventory) -> int:
    """Insert the inventory's events and pre-sold tickets that are missing; the number of tickets added.

    Existing rows are kept as they are, so seeding a restarted database keeps its scans.
    """
    now = now_iso()
    added = 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        for ev in inventory.events:
            conn.execute(
                "INSERT INTO events(id, name, capacity, presold, price_cents, currency, allow_reentry)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET name=excluded.name,"
                " capacity=excluded.capacity, presold=excluded.presold, price_cents=excluded.price_cents,"
                " currency=excluded.currency, allow_reentry=excluded.allow_reentry",
                (
                    ev.id,
                    ev.name,
                    ev.capacity,
                    ev.presold,
                    ev.price_cents,
                    ev.currency,
                    int(inventory.allow_reentry),
                ),
            )
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO tickets(code, event_id, created_at) VALUES (?,?,?)",
                ((ticket_code(ev.id, n), ev.id, now) for n in range(ev.presold)),
            )
            added += conn.total_changes - before
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return added


def load_or_store_keys(
    conn: sqlite3.Connection, keys: Keys | None, webhook_secret: str | None
) -> Keys:
    """The keys kept with this database (so a restart keeps clients' exported keys), made if absent.

    `keys` given explicitly replace the stored ones; `webhook_secret` overrides the stored secret.
    """
    if keys is None:
        row = conn.execute("SELECT value FROM meta WHERE key='keys'").fetchone()
        if row is not None:
            stored = json.loads(row[0])
            if webhook_secret:
                stored["webhook_secret"] = webhook_secret
            keys = Keys.from_dict(stored)
        else:
            keys = Keys.generate(webhook_secret)
    conn.execute(
        "INSERT INTO meta(key, value) VALUES ('keys', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
        (json.dumps(keys.to_dict()),),
    )
    return keys
