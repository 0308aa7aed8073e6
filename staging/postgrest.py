"""The subset of PostgREST's read grammar the stand-in serves, turned into SQLite (sans-IO).

`select=a,b`, filters `col=eq.v` (`neq gt gte lt lte like ilike in.(a,b) is.null|true|false`,
each negatable with `not.`), `order=col.desc.nullslast,other`, `limit`, `offset`, and
`Prefer: count=exact` answered with `Content-Range: first-last/total`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from staging.errors import PostgrestError

MAX_ROWS = 1000  # Supabase's default max_rows
_OPS = {
    "eq": "=",
    "neq": "<>",
    "gt": ">",
    "gte": ">=",
    "lt": "<",
    "lte": "<=",
    "like": "LIKE",
    "ilike": "LIKE",
}
_RESERVED = {"select", "order", "limit", "offset", "on_conflict", "columns"}


@dataclass(frozen=True, slots=True)
class Filter:
    """One `col=op.value` condition."""

    column: str
    op: str
    value: str | tuple[str, ...] | None
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Query:
    """A validated read of one table or view."""

    table: str
    columns: tuple[str, ...]
    filters: tuple[Filter, ...] = ()
    order: tuple[tuple[str, bool, str | None], ...] = ()  # (column, descending, nulls first/last)
    limit: int | None = None
    offset: int = 0


def _column(table: str, name: str, columns: tuple[str, ...]) -> str:
    if name not in columns:
        raise PostgrestError(
            400,
            "42703",
            f"column {table}.{name} does not exist",
            None,
            f"columns of {table}: {', '.join(columns)}",
        )
    return name


def _nonneg_int(name: str, raw: str) -> int:
    if not raw.isdigit():
        raise PostgrestError(
            400, "PGRST103", f"'{name}' must be a non-negative integer, got {raw!r}"
        )
    return int(raw)


def _split_list(raw: str) -> tuple[str, ...]:
    if not (raw.startswith("(") and raw.endswith(")")):
        raise PostgrestError(
            400,
            "PGRST100",
            f"'in' filter needs a parenthesised list, got {raw!r}",
            None,
            "example: id=in.(1,2,3)",
        )
    inner = raw[1:-1]
    return tuple(v.strip().strip('"') for v in inner.split(",")) if inner else ()


def parse_filter(table: str, col: str, raw: str, columns: tuple[str, ...]) -> Filter:
    """One filter from `col` and its `op.value` text."""
    _column(table, col, columns)
    negated = raw.startswith("not.")
    if negated:
        raw = raw[4:]
    op, sep, value = raw.partition(".")
    if not sep:
        raise PostgrestError(
            400,
            "PGRST100",
            f"failed to parse filter ({col}={raw})",
            None,
            "expected <operator>.<value>, e.g. eq.1 or in.(1,2)",
        )
    if op == "in":
        return Filter(col, "in", _split_list(value), negated)
    if op == "is":
        if value.lower() not in ("null", "true", "false"):
            raise PostgrestError(
                400,
                "PGRST100",
                f"failed to parse filter ({col}=is.{value})",
                None,
                "'is' takes null, true or false",
            )
        return Filter(col, "is", value.lower(), negated)
    if op not in _OPS:
        raise PostgrestError(
            400,
            "PGRST100",
            f"unknown operator {op!r} in filter ({col}={raw})",
            None,
            f"operators: {', '.join([*_OPS, 'in', 'is'])}",
        )
    if op in ("like", "ilike"):
        value = value.replace("*", "%")
    return Filter(col, op, value, negated)


def parse_query(table: str, params: Iterable[tuple[str, str]], columns: tuple[str, ...]) -> Query:
    """A Query from the URL's query parameters (in order, repeats allowed); PostgrestError when wrong."""
    select = columns
    filters: list[Filter] = []
    order: list[tuple[str, bool, str | None]] = []
    limit: int | None = None
    offset = 0
    for key, raw in params:
        if key == "select":
            names = [c.strip() for c in raw.split(",") if c.strip()]
            if not names or names == ["*"]:
                select = columns
            else:
                for n in names:
                    if "(" in n or ":" in n:
                        raise PostgrestError(
                            400,
                            "PGRST100",
                            f"select item {n!r} is not supported by the stand-in",
                            None,
                            "plain column names only (no embedding, renaming or casts)",
                        )
                select = tuple(
                    c
                    for n in names
                    for c in (columns if n == "*" else (_column(table, n, columns),))
                )
        elif key == "order":
            for item in raw.split(","):
                parts = item.strip().split(".")
                col = _column(table, parts[0], columns)
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
                            f"failed to parse order ({raw})",
                            None,
                            "expected col[.asc|.desc][.nullsfirst|.nullslast]",
                        )
                order.append((col, desc, nulls))
        elif key == "limit":
            limit = _nonneg_int("limit", raw)
        elif key == "offset":
            offset = _nonneg_int("offset", raw)
        elif key in _RESERVED:
            continue
        else:
            filters.append(parse_filter(table, key, raw, columns))
    return Query(table, select, tuple(filters), tuple(order), limit, offset)


def _where(q: Query) -> tuple[str, list[object]]:
    parts: list[str] = []
    args: list[object] = []
    for f in q.filters:
        col = f'"{f.column}"'
        if f.op == "in":
            assert isinstance(f.value, tuple)
            if not f.value:
                cond = "0"
            else:
                cond = f"{col} IN ({','.join('?' * len(f.value))})"
                args.extend(f.value)
        elif f.op == "is":
            cond = {"null": f"{col} IS NULL", "true": f"{col} IS 1", "false": f"{col} IS 0"}[
                str(f.value)
            ]
        elif f.op == "ilike":
            cond = f"{col} LIKE ?"  # SQLite's LIKE is case-insensitive for ASCII
            args.append(f.value)
        elif f.op == "like":
            cond = f"{col} LIKE ? AND {col} GLOB ?"
            args.extend([f.value, str(f.value).replace("%", "*").replace("_", "?")])
        else:
            cond = f"{col} {_OPS[f.op]} ?"
            args.append(f.value)
        parts.append(f"NOT ({cond})" if f.negated else cond)
    return (" WHERE " + " AND ".join(parts)) if parts else "", args


def to_sql(q: Query) -> tuple[str, list[object]]:
    """The SELECT for a query (limit capped at MAX_ROWS)."""
    where, args = _where(q)
    cols = ", ".join(f'"{c}"' for c in q.columns)
    sql = f'SELECT {cols} FROM "{q.table}"{where}'
    if q.order:
        items = []
        for col, desc, nulls in q.order:
            item = f'"{col}" {"DESC" if desc else "ASC"}'
            if nulls:
                item += f" NULLS {nulls.upper()}"
            items.append(item)
        sql += " ORDER BY " + ", ".join(items)
    limit = MAX_ROWS if q.limit is None else min(q.limit, MAX_ROWS)
    sql += f" LIMIT {limit} OFFSET {q.offset}"
    return sql, args


def count_sql(q: Query) -> tuple[str, list[object]]:
    """The SELECT COUNT(*) over the query's filters (for Prefer: count=exact)."""
    where, args = _where(q)
    return f'SELECT COUNT(*) FROM "{q.table}"{where}', args


def content_range(offset: int, returned: int, total: int | None) -> str:
    """PostgREST's Content-Range: `0-19/3573`, `*/0` when empty, `/*` when not counted."""
    tail = "*" if total is None else str(total)
    if returned == 0:
        return f"*/{tail}"
    return f"{offset}-{offset + returned - 1}/{tail}"
