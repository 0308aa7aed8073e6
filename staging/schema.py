"""The stand-in's tables, the seeding of an Inventory, and the keys kept with a database file."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import replace
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
CREATE TABLE IF NOT EXISTS stripe_objects (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
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


# Foreign keys PostgREST would read from the catalog: (table, column) -> (referenced table, column).
# They decide embedding: `tickets?select=code,events(name)` (many-to-one: an object) and
# `orders?select=id,tickets(code)` (one-to-many: an array).
FOREIGN_KEYS = {
    ("tickets", "event_id"): ("events", "id"),
    ("tickets", "order_id"): ("orders", "id"),
    ("orders", "event_id"): ("events", "id"),
    ("scans", "ticket_id"): ("tickets", "id"),
    ("scans", "event_id"): ("events", "id"),
}
VIEWS = frozenset({"event_revenue"})
_KINDS = {"INTEGER": "int", "BOOLEAN": "bool", "TEXT": "text", "REAL": "float"}


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


def column_types(conn: sqlite3.Connection) -> dict[str, dict[str, str]]:
    """Per REST table, each column's kind ("int", "bool", "float", "text"), in table order.

    Views take their kinds from what they select (SQLite leaves their declared types empty).
    """
    out: dict[str, dict[str, str]] = {}
    for t in REST_TABLES:
        kinds = {}
        for r in conn.execute(f"PRAGMA table_info({t})"):
            decl = (r[2] or "").upper()
            kinds[r[1]] = _KINDS.get(decl, "int" if t in VIEWS and r[1] != "currency" else "text")
        out[t] = kinds
    return out


def table_info(conn: sqlite3.Connection) -> dict[str, dict[str, tuple[bool, bool]]]:
    """Per REST table, each column's (NOT NULL, primary key) flags."""
    return {
        t: {r[1]: (bool(r[3]), bool(r[5])) for r in conn.execute(f"PRAGMA table_info({t})")}
        for t in REST_TABLES
    }


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

    `keys` given explicitly replace the stored ones. `webhook_secret` (the user's own, adopted
    from $STRIPE_WEBHOOK_SECRET) is used but never stored: the file keeps its own secret.
    """
    if keys is None:
        row = conn.execute("SELECT value FROM meta WHERE key='keys'").fetchone()
        keys = Keys.from_dict(json.loads(row[0])) if row is not None else Keys.generate()
    conn.execute(
        "INSERT INTO meta(key, value) VALUES ('keys', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
        (json.dumps(keys.to_dict()),),
    )
    return replace(keys, webhook_secret=webhook_secret) if webhook_secret else keys
