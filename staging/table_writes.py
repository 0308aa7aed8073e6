"""PostgREST's table writes over SQLite (sans-IO): POST insert and upsert (`on_conflict`,
`Prefer: resolution=merge-duplicates|ignore-duplicates`), PATCH and DELETE with filters, run on
the database writer as the caller's role may under the schema's row-level security.

References: https://postgrest.org/en/stable/references/api/tables_views.html#insert,
#upsert, #update, #delete; Supabase's safeupdate (an UPDATE or DELETE without filters is 21000).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from staging.errors import PostgrestError
from staging.filters import Node, where_sql
from staging.postgrest import Catalog, Prefer, Query, parse_query, singular
from staging.schema import VIEWS, now_iso
from staging.values import INT8, int_in_range, storable_text

MAX_WRITE_ROWS = 1000
NOW_DEFAULTS = frozenset({"created_at", "scanned_at", "received_at"})  # DEFAULT now() in Postgres
WRITE_ROLES = frozenset({"service_role"})  # the schema's RLS: anon and authenticated only read


@dataclass(frozen=True, slots=True)
class Write:
    """A validated table write, run on the database writer by write_job."""

    table: str
    kind: str  # insert | update | delete
    rows: tuple[dict[str, Any], ...] = ()  # insert: the rows; update: one row of new values
    filters: tuple[Node, ...] = ()
    on_conflict: str | None = None
    resolution: str | None = None  # merge-duplicates | ignore-duplicates (upsert)
    types: Mapping[str, str] = field(default_factory=dict)
    singular: bool = False  # Accept: vnd.pgrst.object: anything but one row is undone (406)


def _coerce(kind: str, v: Any, table: str, col: str) -> Any:
    if v is None:
        return None
    if kind == "int":
        return int_in_range(v, INT8, col)
    if kind == "bool":
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, str) and v.lower() in ("true", "false", "t", "f"):
            return int(v.lower() in ("true", "t"))
        raise PostgrestError(
            400, "22P02", f'invalid input syntax for type boolean: "{str(v)[:40]}"'
        )
    if kind == "float":
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise PostgrestError(
                400, "22P02", f'invalid input syntax for type double precision: "{str(v)[:40]}"'
            )
        return float(v)
    if isinstance(v, dict | list):
        v = json.dumps(v)
    if isinstance(v, bool):
        v = "true" if v else "false"
    return storable_text(str(v), col)


def build_write(
    catalog: Catalog,
    table: str,
    kind: str,
    body: Any,
    params: list[tuple[str, str]],
    prefer: Prefer,
    run: str | None,
) -> tuple[Write, Query]:
    """A Write (and the Query that shapes its returned rows) from a request; PostgrestError when wrong."""
    types = catalog.table(table)
    if table in VIEWS:
        raise PostgrestError(
            405,
            "55000",
            f'cannot {kind} view "{table}"',
            "Views that do not select from a single table or view are not automatically updatable.",
        )
    q = parse_query(catalog, table, params)
    if q.select.embeds:
        raise PostgrestError(
            400,
            "PGRST127",
            "Feature not implemented",
            "the stand-in returns no embedded resources from writes",
        )
    if kind == "delete":
        return Write(table, kind, filters=q.filters, types=types), q
    if kind == "update":
        if not isinstance(body, dict):
            raise PostgrestError(
                400, "PGRST102", "Empty or invalid json", "PATCH takes one JSON object"
            )
        rows = [body]
    else:
        rows = body if isinstance(body, list) else [body]
        if not rows or not all(isinstance(r, dict) for r in rows):
            raise PostgrestError(
                400,
                "PGRST102",
                "Empty or invalid json",
                "expected an object or an array of objects",
            )
        if len(rows) > MAX_WRITE_ROWS:
            raise PostgrestError(
                400, "PGRST102", f"the stand-in inserts at most {MAX_WRITE_ROWS} rows per request"
            )
        first = set(rows[0])
        if any(set(r) != first for r in rows[1:]):
            raise PostgrestError(400, "PGRST102", "All object keys must match")
    columns = dict(params).get("columns")
    allowed = {c.strip() for c in columns.split(",")} if columns else None
    out = []
    for r in rows:
        rec = {}
        for col, v in r.items():
            if allowed is not None and col not in allowed:
                continue
            if col not in types:
                raise PostgrestError(
                    400,
                    "PGRST204",
                    f"Could not find the '{col}' column of '{table}' in the schema cache",
                )
            rec[col] = _coerce(types[col], v, table, col)
        if kind == "insert":
            now = now_iso()
            for c in NOW_DEFAULTS & types.keys():
                rec.setdefault(c, now)
            if "run_id" in types and run is not None:
                rec.setdefault("run_id", run)
        out.append(rec)
    on_conflict = None
    if kind == "insert" and prefer.resolution:
        on_conflict = dict(params).get("on_conflict") or "id"
        if on_conflict not in catalog.unique[table]:
            raise PostgrestError(
                400,
                "42P10",
                "there is no unique or exclusion constraint matching the ON CONFLICT specification",
            )
    return Write(table, kind, tuple(out), q.filters, on_conflict, prefer.resolution, types), q


def _integrity(table: str, exc: sqlite3.IntegrityError) -> PostgrestError:
    msg = str(exc)
    col = msg.rpartition(".")[2]
    if msg.startswith("UNIQUE"):
        return PostgrestError(
            409,
            "23505",
            f'duplicate key value violates unique constraint "{table}_{col}_key"',
            f"Key ({col}) already exists.",
        )
    if msg.startswith("NOT NULL"):
        return PostgrestError(
            400,
            "23502",
            f'null value in column "{col}" of relation "{table}" violates not-null constraint',
        )
    return PostgrestError(400, "23514", f"constraint failed on {table}: {msg[:100]}")


def write_job(
    conn: sqlite3.Connection,
    changes: list[Any],
    w: Write,
    role: str,
    publish: frozenset[str],
) -> list[dict[str, Any]]:
    """Apply a write as `role` would under the schema's policies; the affected rows (all columns)."""
    if role not in WRITE_ROLES:
        if w.kind == "insert":
            raise PostgrestError(
                401 if role == "anon" else 403,
                "42501",
                f'new row violates row-level security policy for table "{w.table}"',
            )
        return []  # RLS hides every row from an UPDATE or DELETE it may not make
    t = f'"{w.table}"'
    now = now_iso()
    out: list[dict[str, Any]] = []
    kind = "UPDATE"
    try:
        if w.kind == "insert":
            for rec in w.rows:
                cols = list(rec)
                sql = f"INSERT INTO {t} ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in cols)}) VALUES ({','.join('?' * len(cols))})"
                if not cols:
                    sql = f"INSERT INTO {t} DEFAULT VALUES"
                if w.on_conflict:
                    existed = conn.execute(
                        f'SELECT 1 FROM {t} WHERE "{w.on_conflict}" = ?', (rec.get(w.on_conflict),)
                    ).fetchone()
                    if w.resolution == "ignore-duplicates":
                        sql += f' ON CONFLICT("{w.on_conflict}") DO NOTHING'
                    else:
                        sets = [c for c in cols if c != w.on_conflict and c not in NOW_DEFAULTS]
                        sql += f' ON CONFLICT("{w.on_conflict}") DO ' + (
                            "UPDATE SET " + ", ".join(f'"{c}" = excluded."{c}"' for c in sets)
                            if sets
                            else "NOTHING"
                        )
                    kind = "UPDATE" if existed else "INSERT"
                else:
                    kind = "INSERT"
                for r in conn.execute(sql + " RETURNING *", list(rec.values())).fetchall():
                    out.append(dict(r))
                    _change(changes, publish, w, kind, dict(r), now)
        elif w.kind == "update":
            where, args = where_sql(w.filters)
            if not where:
                raise PostgrestError(400, "21000", "UPDATE requires a WHERE clause")
            rec = w.rows[0]
            if not rec:
                return []
            sets = ", ".join(f'"{c}" = ?' for c in rec)
            for r in conn.execute(
                f"UPDATE {t} SET {sets}{where} RETURNING *", [*rec.values(), *args]
            ).fetchall():
                out.append(dict(r))
                _change(changes, publish, w, "UPDATE", dict(r), now)
        else:
            where, args = where_sql(w.filters)
            if not where:
                raise PostgrestError(400, "21000", "DELETE requires a WHERE clause")
            for r in conn.execute(f"DELETE FROM {t}{where} RETURNING *", args).fetchall():
                out.append(dict(r))
                _change(changes, publish, w, "DELETE", dict(r), now)
    except sqlite3.IntegrityError as exc:
        raise _integrity(w.table, exc) from None
    if w.singular:
        singular(out)  # raises 406 PGRST116 inside the job, so its savepoint rolls the write back
    return out


def _change(
    changes: list[Any], publish: frozenset[str], w: Write, kind: str, rec: dict[str, Any], now: str
) -> None:
    table = w.table
    if table not in publish:
        return
    for c, k in w.types.items():
        if k == "bool" and rec.get(c) is not None:
            rec[c] = bool(rec[c])
    if kind == "DELETE":
        changes.append((table, "DELETE", {}, {"id": rec.get("id")}, now))
    else:
        changes.append((table, kind, rec, {"id": rec.get("id")} if kind == "UPDATE" else None, now))


def project(rows: list[dict[str, Any]], q: Query, types: Mapping[str, str]) -> list[dict[str, Any]]:
    """Written rows shaped by the request's `select` (columns, aliases, booleans)."""
    out = []
    for r in rows:
        rec = {}
        for f in q.select.fields:
            v = r.get(f.column)
            kind = f.cast or types[f.column]
            if v is not None:
                if kind == "bool":
                    v = bool(v)
                elif kind == "text":
                    v = str(v)
            rec[f.key] = v
        out.append(rec)
    return out
