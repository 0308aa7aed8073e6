"""PostgREST's table interface over SQLite (sans-IO): reads with `select` (aliases, casts, embedded
resources along foreign keys), filters and logic trees (staging.filters), `order`, `limit`/`offset`,
counts; writes (insert, upsert, update, delete) with roles as Supabase's defaults give them.

References: https://postgrest.org/en/stable/references/api/tables_views.html and
https://postgrest.org/en/stable/references/api/resource_embedding.html; error codes from
PostgREST's src/library/PostgREST/Error.hs.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from staging.errors import PostgrestError
from staging.filters import Node, parse_filter_param, split_top, unknown_column, where_sql
from staging.schema import FOREIGN_KEYS, VIEWS, now_iso
from staging.values import INT8, int_in_range, storable_text

MAX_ROWS = 1000  # Supabase's default max_rows
MAX_SELECT_DEPTH = 4
MAX_WRITE_ROWS = 1000
_RESERVED = {"select", "order", "limit", "offset", "on_conflict", "columns"}
_CASTS = {
    "text": "text",
    "varchar": "text",
    "int": "int",
    "int2": "int",
    "int4": "int",
    "int8": "int",
    "integer": "int",
    "bigint": "int",
    "smallint": "int",
    "bool": "bool",
    "boolean": "bool",
    "float": "float",
    "float4": "float",
    "float8": "float",
    "real": "float",
    "numeric": "float",
    "double precision": "float",
}
_SQL_CAST = {"text": "TEXT", "int": "INTEGER", "bool": "INTEGER", "float": "REAL"}
_FIELD = re.compile(
    r"^(?:([A-Za-z_][A-Za-z0-9_]*):)?([A-Za-z_][A-Za-z0-9_]*|\*)(?:::([a-z0-9 ]+))?$"
)
_EMBED = re.compile(
    r"^(?:([A-Za-z_][A-Za-z0-9_]*):)?([A-Za-z_][A-Za-z0-9_]*)((?:![A-Za-z_][A-Za-z0-9_]*)*)\((.*)\)$",
    re.DOTALL,
)
NOW_DEFAULTS = frozenset({"created_at", "scanned_at", "received_at"})  # DEFAULT now() in Postgres
WRITE_ROLES = frozenset({"service_role"})  # the schema's RLS: anon and authenticated only read


@dataclass(frozen=True, slots=True)
class Catalog:
    """What PostgREST's schema cache holds for the served tables: column kinds, uniques, FKs."""

    types: Mapping[str, Mapping[str, str]]  # table -> column -> kind
    unique: Mapping[str, frozenset[str]]  # table -> single-column unique keys
    not_null: Mapping[str, frozenset[str]]

    @classmethod
    def read(cls, conn: sqlite3.Connection, tables: Iterable[str]) -> Catalog:
        """The catalog of `tables` from SQLite's PRAGMAs."""
        from staging.schema import column_types, table_info

        types = {t: k for t, k in column_types(conn).items() if t in set(tables)}
        info = table_info(conn)
        unique: dict[str, frozenset[str]] = {}
        for t in types:
            cols = {c for c, (_, pk) in info[t].items() if pk}
            for idx in conn.execute(f"PRAGMA index_list({t})"):
                if idx[2]:  # unique
                    names = [r[2] for r in conn.execute(f"PRAGMA index_info({idx[1]})")]
                    if len(names) == 1:
                        cols.add(names[0])
            unique[t] = frozenset(cols)
        not_null = {
            t: frozenset(c for c, (nn, pk) in info[t].items() if nn and not pk) for t in types
        }
        return cls(types, unique, not_null)

    def table(self, name: str) -> Mapping[str, str]:
        """The column kinds of a served table; 404 PGRST205 otherwise."""
        t = self.types.get(name)
        if t is None:
            raise PostgrestError(
                404,
                "PGRST205",
                f"Could not find the table 'public.{name}' in the schema cache",
                None,
                f"tables: {', '.join(self.types)}",
            )
        return t


@dataclass(frozen=True, slots=True)
class Field:
    """A selected column: its output key, its column and an optional cast."""

    key: str
    column: str
    cast: str | None = None


@dataclass(frozen=True, slots=True)
class Embed:
    """An embedded resource along a foreign key: `events(name)` on tickets, `tickets(code)` on orders."""

    key: str
    table: str
    local: str  # the parent's column
    remote: str  # the child's column
    many: bool  # one-to-many: a list; many-to-one: an object or null
    inner: bool
    select: Select
    filters: tuple[Node, ...] = ()


@dataclass(frozen=True, slots=True)
class Select:
    """What a read returns per row."""

    fields: tuple[Field, ...]
    embeds: tuple[Embed, ...] = ()


@dataclass(frozen=True, slots=True)
class Query:
    """A validated read of one table or view."""

    table: str
    select: Select
    filters: tuple[Node, ...] = ()
    order: tuple[tuple[str, bool, str | None], ...] = ()  # (column, descending, nulls first/last)
    limit: int | None = None
    offset: int = 0

    @property
    def columns(self) -> tuple[str, ...]:
        """The output keys of the plain fields."""
        return tuple(f.key for f in self.select.fields)


def _relation(
    catalog: Catalog, parent: str, name: str, hints: list[str]
) -> tuple[str, str, str, bool]:
    """(child table, parent column, child column, many) for embedding `name` in `parent`."""
    hint = next((h for h in hints if h not in ("inner", "left")), None)
    found = []
    for (t, col), (rt, rcol) in FOREIGN_KEYS.items():
        if t == parent and (rt == name or col == name) and hint in (None, col, rt):
            found.append((rt, col, rcol, False))
        if rt == parent and t == name and hint in (None, col, t):
            found.append((t, rcol, col, True))
    if not found:
        raise PostgrestError(
            400,
            "PGRST200",
            f"Could not find a relationship between '{parent}' and '{name}' in the schema cache",
            f"Searched for a foreign key relationship between '{parent}' and '{name}'"
            + (f" using the hint '{hint}'" if hint else "")
            + " in the schema 'public', but no matches were found.",
            None,
        )
    if len(found) > 1:
        raise PostgrestError(
            300,
            "PGRST201",
            f"Could not embed because more than one relationship was found for '{parent}' and '{name}'",
            None,
            f"Try changing '{name}' to one of the following: "
            + ", ".join(f"'{name}!{f[1] if not f[3] else f[2]}'" for f in found),
        )
    return found[0]


def parse_select(
    catalog: Catalog,
    table: str,
    raw: str,
    embed_filters: Mapping[str, list[tuple[str, str]]],
    depth: int = 0,
) -> Select:
    """The `select` parameter: `alias:col::cast`, `*`, `rel!hint!inner(subselect)`."""
    types = catalog.table(table)
    if depth > MAX_SELECT_DEPTH:
        raise PostgrestError(400, "PGRST100", f"select nests deeper than {MAX_SELECT_DEPTH} levels")
    fields: list[Field] = []
    embeds: list[Embed] = []
    items = [s.strip() for s in split_top(raw)] if raw.strip() else ["*"]
    for item in items:
        if not item:
            continue
        m = _FIELD.match(item)
        if m:
            alias, col, cast = m.groups()
            if col == "*":
                fields.extend(Field(c, c) for c in types)
                continue
            if col not in types:
                raise unknown_column(table, col, types)
            kind = None
            if cast is not None:
                kind = _CASTS.get(cast.strip())
                if kind is None:
                    raise PostgrestError(400, "42704", f'type "{cast[:40]}" does not exist')
            fields.append(Field(alias or col, col, kind))
            continue
        e = _EMBED.match(item)
        if not e:
            raise PostgrestError(
                400,
                "PGRST100",
                f'"failed to parse select parameter ({raw[:80]})"',
                f"unexpected {item[:40]!r}",
                "items are col, alias:col, col::type, or relation(cols)",
            )
        alias, name, hint_text, inner_raw = e.groups()
        hints = [h for h in hint_text.split("!") if h]
        child, local, remote, many = _relation(catalog, table, name, hints)
        key = alias or name
        sub = parse_select(
            catalog, child, inner_raw, embed_filters_for(embed_filters, key), depth + 1
        )
        child_types = catalog.table(child)
        flt = tuple(
            n
            for k, v in embed_filters.get(key, [])
            if "." not in k
            for n in [parse_filter_param(child, k, v, child_types)]
            if n is not None
        )
        embeds.append(Embed(key, child, local, remote, many, "inner" in hints, sub, flt))
    return Select(tuple(fields), tuple(embeds))


def embed_filters_for(
    embed_filters: Mapping[str, list[tuple[str, str]]], key: str
) -> dict[str, list[tuple[str, str]]]:
    """The filters addressed to an embed's own embeds (`events.venue.name=...` -> `venue.name`)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for k, v in embed_filters.get(key, []):
        head, dot, rest = k.partition(".")
        if dot:
            out.setdefault(head, []).append((rest, v))
    return out


def _offset_limit(name: str, raw: str) -> int:
    try:
        n = int_in_range(raw, INT8, name)
    except PostgrestError:
        raise PostgrestError(
            400,
            "PGRST103",
            "Requested range not satisfiable",
            f"'{name}' must be a non-negative integer, got {raw[:40]!r}",
        ) from None
    if n < 0:
        raise PostgrestError(
            400,
            "PGRST103",
            "Requested range not satisfiable",
            "Limit should be greater than or equal to zero.",
        )
    return n


def parse_query(
    catalog: Catalog, table: str, params: Iterable[tuple[str, str]], *, reading: bool = True
) -> Query:
    """A Query from the URL's query parameters (in order, repeats allowed); PostgrestError when wrong."""
    types = catalog.table(table)
    select_raw = "*"
    filters: list[Node] = []
    embed_filters: dict[str, list[tuple[str, str]]] = {}
    order: list[tuple[str, bool, str | None]] = []
    limit: int | None = None
    offset = 0
    for key, raw in params:
        if key == "select":
            select_raw = raw
        elif key == "order":
            for item in split_top(raw):
                parts = item.strip().split(".")
                col = parts[0]
                if col not in types:
                    raise unknown_column(table, col, types)
                desc, nulls = False, None
                for p in parts[1:]:
                    if p in ("asc", "desc"):
                        desc = p == "desc"
                    elif p in ("nullsfirst", "nullslast"):
                        nulls = p[5:]
                    else:
                        raise PostgrestError(
                            400,
                            "PGRST100",
                            f'"failed to parse order ({raw[:60]})" (line 1, column {len(col) + 2})',
                            f'unexpected "{p[:20]}" expecting "asc", "desc", "nullsfirst" or "nullslast"',
                        )
                order.append((col, desc, nulls))
        elif key == "limit":
            limit = _offset_limit("limit", raw)
        elif key == "offset":
            offset = _offset_limit("offset", raw)
        elif key in _RESERVED:
            continue
        elif "." in key.removeprefix("not.") and key.removeprefix("not.").split(".")[0] not in (
            "or",
            "and",
        ):
            head, _, rest = key.partition(".")
            embed_filters.setdefault(head, []).append((rest, raw))
        else:
            node = parse_filter_param(table, key, raw, types)
            if node is not None:
                filters.append(node)
    select = parse_select(catalog, table, select_raw, embed_filters)
    known = {e.key for e in select.embeds}
    for k in embed_filters:
        if k not in known:
            raise PostgrestError(
                400,
                "PGRST108",
                f"'{k}' is not an embedded resource in this request",
                None,
                f"Verify that '{k}' is included in the 'select' query parameter.",
            )
    return Query(table, select, tuple(filters), tuple(order), limit, offset)


# --- reading ---------------------------------------------------------------------------------


def _exists(parent_alias: str, e: Embed) -> tuple[str, list[Any]]:
    where, args = where_sql(e.filters, "c")
    cond = f'"c"."{e.remote}" = "{parent_alias}"."{e.local}"'
    sql = f'EXISTS (SELECT 1 FROM "{e.table}" AS "c" WHERE {cond}{where.replace(" WHERE ", " AND ", 1)})'
    return sql, args


def _where(q: Query) -> tuple[str, list[Any]]:
    where, args = where_sql(q.filters, "p")
    for e in q.select.embeds:
        if e.inner:
            s, a = _exists("p", e)
            where = f"{where} AND {s}" if where else f" WHERE {s}"
            args.extend(a)
    return where, args


def _cols(sel: Select, extra: Iterable[str]) -> tuple[list[str], list[str]]:
    """SQL select items and their result names: the fields, then hidden join columns."""
    items, names = [], []
    for i, f in enumerate(sel.fields):
        c = f'"p"."{f.column}"'
        items.append(f"CAST({c} AS {_SQL_CAST[f.cast]})" if f.cast else c)
        names.append(f"f{i}")
    for col in dict.fromkeys(extra):
        items.append(f'"p"."{col}"')
        names.append(f"j:{col}")
    return items, names


def _shape(
    sel: Select, types: Mapping[str, str], raw: list[tuple[Any, ...]], names: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(output rows, hidden join values per row)."""
    out, hidden = [], []
    nf = len(sel.fields)
    for r in raw:
        rec: dict[str, Any] = {}
        for i, f in enumerate(sel.fields):
            v = r[i]
            kind = f.cast or types[f.column]
            if kind == "bool" and v is not None:
                v = bool(v)
            elif f.cast == "text" and types[f.column] == "bool" and v is not None:
                v = "true" if v == "1" else "false"
            rec[f.key] = v
        out.append(rec)
        hidden.append({names[j][2:]: r[j] for j in range(nf, len(names))})
    return out, hidden


def _attach(
    conn: sqlite3.Connection,
    catalog: Catalog,
    embeds: tuple[Embed, ...],
    rows: list[dict[str, Any]],
    hidden: list[dict[str, Any]],
) -> None:
    for e in embeds:
        keys = list({h[e.local] for h in hidden if h[e.local] is not None})
        types = catalog.types[e.table]
        items, names = _cols(e.select, [e.remote] + [x.local for x in e.select.embeds])
        where, args = where_sql(e.filters, "p")
        groups: dict[Any, list[dict[str, Any]]] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            cond = f'"p"."{e.remote}" IN ({",".join("?" * len(chunk))})'
            sql = f'SELECT {", ".join(items)} FROM "{e.table}" AS "p"' + (
                f"{where} AND {cond}" if where else f" WHERE {cond}"
            )
            raw = conn.execute(sql + ' ORDER BY "p".rowid', [*args, *chunk]).fetchall()
            sub, sub_hidden = _shape(e.select, types, raw, names)
            _attach(conn, catalog, e.select.embeds, sub, sub_hidden)
            for rec, h in zip(sub, sub_hidden, strict=True):
                groups.setdefault(h[e.remote], []).append(rec)
        for rec, h in zip(rows, hidden, strict=True):
            got = groups.get(h[e.local], [])
            rec[e.key] = got if e.many else (got[0] if got else None)


def run_read(
    conn: sqlite3.Connection, catalog: Catalog, q: Query, count: bool
) -> tuple[list[dict[str, Any]], int | None]:
    """The rows of a read (embeds attached) and, when asked, the total the filters match."""
    types = catalog.types[q.table]
    items, names = _cols(q.select, [e.local for e in q.select.embeds])
    where, args = _where(q)
    sql = f'SELECT {", ".join(items) or "1"} FROM "{q.table}" AS "p"{where}'
    if q.order:
        sql += " ORDER BY " + ", ".join(
            f'"p"."{c}" {"DESC" if d else "ASC"}' + (f" NULLS {n.upper()}" if n else "")
            for c, d, n in q.order
        )
    limit = MAX_ROWS if q.limit is None else min(q.limit, MAX_ROWS)
    sql += f" LIMIT {limit} OFFSET {q.offset}"
    conn.execute("BEGIN")
    try:
        raw = conn.execute(sql, args).fetchall()
        rows, hidden = _shape(q.select, types, raw, names)
        _attach(conn, catalog, q.select.embeds, rows, hidden)
        total = (
            conn.execute(f'SELECT COUNT(*) FROM "{q.table}" AS "p"{where}', args).fetchone()[0]
            if count
            else None
        )
    finally:
        conn.execute("COMMIT")
    return rows, total


def content_range(offset: int, returned: int, total: int | None) -> str:
    """PostgREST's Content-Range: `0-19/3573`, `*/0` when empty, `/*` when not counted."""
    tail = "*" if total is None else str(total)
    if returned == 0:
        return f"*/{tail}"
    return f"{offset}-{offset + returned - 1}/{tail}"


def to_csv(rows: list[dict[str, Any]], keys: Iterable[str]) -> str:
    """Rows as PostgREST's text/csv: a header line, booleans and NULLs as PostgreSQL prints them."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = list(keys)
    w.writerow(cols)

    def cell(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, bool):
            return "t" if v else "f"
        if isinstance(v, dict | list):
            return json.dumps(v, separators=(",", ":"))
        return str(v)

    for r in rows:
        w.writerow([cell(r.get(c)) for c in cols])
    return buf.getvalue()


# --- request headers -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prefer:
    """The `Prefer` header's parts PostgREST reads."""

    returning: str = "minimal"  # minimal | headers-only | representation
    count: str | None = None  # exact | planned | estimated
    resolution: str | None = None  # merge-duplicates | ignore-duplicates
    missing_default: bool = False
    given: frozenset[str] = field(default_factory=frozenset)


def parse_prefer(values: Iterable[str]) -> Prefer:
    """Prefer from every `Prefer` header (comma-separated, repeats allowed; unknown ones ignored)."""
    returning, count, resolution, missing = "minimal", None, None, False
    given = set()
    for v in values:
        for part in v.split(","):
            p = part.strip()
            name, _, val = p.partition("=")
            if name == "return" and val in ("minimal", "headers-only", "representation"):
                returning = val
                given.add("return")
            elif name == "count" and val in ("exact", "planned", "estimated"):
                count = val
            elif name == "resolution" and val in ("merge-duplicates", "ignore-duplicates"):
                resolution = val
            elif name == "missing" and val == "default":
                missing = True
    return Prefer(returning, count, resolution, missing, frozenset(given))


OBJECT = "application/vnd.pgrst.object+json"
CSV = "text/csv"
JSON = "application/json"
_ACCEPTED = {
    "application/json": JSON,
    "application/vnd.pgrst.array+json": JSON,
    "application/*": JSON,
    "*/*": JSON,
    "application/vnd.pgrst.object+json": OBJECT,
    "application/vnd.pgrst.object": OBJECT,
    "text/csv": CSV,
}


def parse_accept(accept: str | None) -> str:
    """The media type to answer in (JSON, one object or CSV); 406 PGRST107 when none fits."""
    if not accept:
        return JSON
    offered = []
    for part in accept.split(","):
        mt = part.split(";")[0].strip().lower()
        offered.append(mt)
        if mt in _ACCEPTED:
            return _ACCEPTED[mt]
    raise PostgrestError(
        406, "PGRST107", "None of these media types are available: " + ", ".join(offered)[:200]
    )


def singular(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The one row of a `vnd.pgrst.object` answer; 406 PGRST116 when there are 0 or several."""
    if len(rows) != 1:
        raise PostgrestError(
            406,
            "PGRST116",
            "Cannot coerce the result to a single JSON object",
            f"The result contains {len(rows)} rows",
        )
    return rows[0]


# --- writing ---------------------------------------------------------------------------------


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
