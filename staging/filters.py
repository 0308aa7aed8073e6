"""PostgREST's filter grammar, the one copy: `col=[not.]op.value` conditions and `or=(...)` /
`and=(...)` logic trees, parsed with the column's type, turned into SQLite or evaluated on a row.

Used by staging.postgrest (table reads and writes) and staging.realtime (`postgres_changes`
filters). Sans-IO. See https://postgrest.org/en/stable/references/api/tables_views.html
("Operators", "Logical operators").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from staging.errors import PostgrestError
from staging.values import INT8, int_in_range, storable_text

# PostgREST operator -> SQL comparison (the ones that take one scalar value)
COMPARE = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
OPERATORS = (*COMPARE, "like", "ilike", "in", "is")
MAX_TREE_DEPTH = 16
MAX_CONDITIONS = 200
MAX_IN_VALUES = 1000

Types = Mapping[str, str]  # column -> "int" | "bool" | "float" | "text"


@dataclass(frozen=True, slots=True)
class Cond:
    """One condition `column op value` (value typed by the column; a tuple for `in`)."""

    column: str
    op: str
    value: Any
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Tree:
    """A logic tree: `and`/`or` over conditions and subtrees, possibly negated."""

    conj: str  # "and" | "or"
    items: tuple[Cond | Tree, ...]
    negated: bool = False


Node = Cond | Tree


def _fail(message: str, details: str | None = None, hint: str | None = None) -> PostgrestError:
    return PostgrestError(400, "PGRST100", message, details, hint)


def unknown_column(table: str, name: str, columns: Any) -> PostgrestError:
    """PostgREST's answer to a column the table does not have."""
    return PostgrestError(
        400,
        "42703",
        f"column {table}.{name} does not exist",
        None,
        f"columns of {table}: {', '.join(columns)}",
    )


def split_top(text: str, sep: str = ",") -> list[str]:
    """`text` split on `sep` outside parentheses and double quotes (PostgREST's list syntax)."""
    out: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise _fail(f'"failed to parse logic tree ({text})"', "unexpected ')'")
        elif ch == sep and depth == 0:
            out.append(text[start:i])
            start = i + 1
        i += 1
    if depth != 0 or quoted:
        raise _fail(f"failed to parse ({text})", "unbalanced parentheses or quotes")
    out.append(text[start:])
    return out


def _unquote(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return v[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return v


def typed(kind: str, raw: str, column: str) -> Any:
    """A filter value as the column's type reads it (22P02 when it does not)."""
    storable_text(raw, column)
    if kind == "int":
        return int_in_range(raw, INT8, column)
    if kind == "bool":
        low = raw.strip().lower()
        if low in ("true", "t", "yes", "on", "1"):
            return True
        if low in ("false", "f", "no", "off", "0"):
            return False
        raise PostgrestError(400, "22P02", f'invalid input syntax for type boolean: "{raw[:40]}"')
    if kind == "float":
        try:
            f = float(raw)
        except ValueError:
            raise PostgrestError(
                400, "22P02", f'invalid input syntax for type double precision: "{raw[:40]}"'
            ) from None
        if f != f or f in (float("inf"), float("-inf")):
            raise PostgrestError(
                400, "22P02", f'invalid input syntax for type double precision: "{raw[:40]}"'
            )
        return f
    return raw


def parse_cond(
    table: str, column: str, text: str, types: Types, ops: tuple[str, ...] = OPERATORS
) -> Cond:
    """The condition `column=text` (text `[not.]op.value`); PostgrestError naming what is wrong."""
    kind = types.get(column)
    if kind is None:
        raise unknown_column(table, column, types)
    negated = text.startswith("not.")
    body = text[4:] if negated else text
    op, sep, value = body.partition(".")
    if not sep or op not in ops:
        raise _fail(
            f'"failed to parse filter ({text})" (line 1, column {len(op) + 1})',
            f'unexpected "{op[:20]}" expecting an operator',
            f"operators: {', '.join(ops)}",
        )
    if op == "in":
        if not (value.startswith("(") and value.endswith(")")):
            raise _fail(
                f"failed to parse filter (in.{value[:40]})",
                "in needs a parenthesised list",
                "example: id=in.(1,2,3)",
            )
        inner = value[1:-1]
        items = [_unquote(v) for v in split_top(inner)] if inner.strip() else []
        if len(items) > MAX_IN_VALUES:
            raise _fail(
                f"in list of {len(items)} values: the stand-in takes at most {MAX_IN_VALUES}"
            )
        return Cond(column, "in", tuple(typed(kind, v, column) for v in items), negated)
    if op == "is":
        low = value.lower()
        if low not in ("null", "true", "false", "unknown"):
            raise _fail(
                f"failed to parse filter (is.{value[:40]})", "is takes null, true, false or unknown"
            )
        return Cond(
            column,
            "is",
            {"null": None, "unknown": None, "true": True, "false": False}[low],
            negated,
        )
    if op in ("like", "ilike"):
        storable_text(value, column)
        return Cond(column, op, value.replace("*", "%"), negated)
    return Cond(column, op, typed(kind, _unquote(value), column), negated)


def parse_tree(
    table: str, conj: str, text: str, types: Types, negated: bool = False, depth: int = 0
) -> Tree:
    """A logic tree from `or=(a.eq.1,and(b.gt.2,c.is.null))`'s value (parenthesised)."""
    if depth > MAX_TREE_DEPTH:
        raise _fail(f"logic tree nests deeper than {MAX_TREE_DEPTH} levels")
    if not (text.startswith("(") and text.endswith(")")):
        raise _fail(
            f'"failed to parse logic tree ({text[:60]})" (line 1, column 1)',
            'expecting "("',
            "example: or=(code.eq.A,code.eq.B)",
        )
    items: list[Node] = []
    for part in split_top(text[1:-1]):
        part = part.strip()
        neg = part.startswith("not.")
        core = part[4:] if neg else part
        head, paren, _ = core.partition("(")
        if paren and head in ("and", "or"):
            items.append(parse_tree(table, head, core[len(head) :], types, neg, depth + 1))
            continue
        column, dot, rest = part.partition(".")
        if not dot:
            raise _fail(
                f'"failed to parse logic tree ({text[:60]})"',
                f"{part[:40]!r} is not column.operator.value",
            )
        items.append(parse_cond(table, column, rest, types))
    if not items:
        raise _fail(f'"failed to parse logic tree ({text[:60]})"', "empty logic tree")
    return Tree(conj, tuple(items), negated)


def count_conditions(node: Node) -> int:
    """How many conditions a node holds."""
    if isinstance(node, Cond):
        return 1
    return sum(count_conditions(n) for n in node.items)


def parse_filter_param(table: str, key: str, value: str, types: Types) -> Node | None:
    """A filter from one query parameter (`col=op.v`, `or=(...)`, `not.and=(...)`), or None when
    `key` is not a filter (a reserved parameter or an embedded resource's `rel.col`)."""
    negated = key.startswith("not.")
    core = key[4:] if negated else key
    if core in ("or", "and"):
        return parse_tree(table, core, value, types, negated)
    return parse_cond(table, key, value, types)


# --- SQL -------------------------------------------------------------------------------------


def to_sql(node: Node, alias: str = "") -> tuple[str, list[Any]]:
    """A WHERE fragment and its arguments."""
    prefix = f'"{alias}".' if alias else ""
    if isinstance(node, Tree):
        parts, args = [], []
        for n in node.items:
            s, a = to_sql(n, alias)
            parts.append(s)
            args.extend(a)
        sql = "(" + f" {node.conj.upper()} ".join(parts) + ")"
        return (f"NOT {sql}" if node.negated else sql), args
    col = f'{prefix}"{node.column}"'
    args: list[Any] = []
    if node.op == "in":
        if node.value:
            sql = f"{col} IN ({','.join('?' * len(node.value))})"
            args.extend(node.value)
        else:
            sql = "0"
    elif node.op == "is":
        sql = f"{col} IS NULL" if node.value is None else f"{col} IS {int(node.value)}"
    elif node.op == "ilike":
        sql = f"{col} LIKE ?"  # SQLite's LIKE is case-insensitive for ASCII
        args.append(node.value)
    elif node.op == "like":
        sql = f"({col} LIKE ? AND {col} GLOB ?)"
        args.extend([node.value, node.value.replace("%", "*").replace("_", "?")])
    else:
        sql = f"{col} {COMPARE[node.op]} ?"
        args.append(int(node.value) if isinstance(node.value, bool) else node.value)
    return (f"NOT ({sql})" if node.negated else sql), args


def where_sql(nodes: tuple[Node, ...] | list[Node], alias: str = "") -> tuple[str, list[Any]]:
    """` WHERE a AND b` for the top-level filters (empty when none)."""
    if not nodes:
        return "", []
    parts, args = [], []
    for n in nodes:
        s, a = to_sql(n, alias)
        parts.append(s)
        args.extend(a)
    return " WHERE " + " AND ".join(parts), args


# --- evaluation on a row (Realtime) ------------------------------------------------------------


def _like(pattern: str, value: str, fold: bool) -> bool:
    rx = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, re.IGNORECASE | re.DOTALL if fold else re.DOTALL) is not None


def evaluate(node: Node, row: Mapping[str, Any]) -> bool | None:
    """SQL's three-valued truth of a node on a row (None = unknown, as when a value is NULL)."""
    if isinstance(node, Tree):
        vals = [evaluate(n, row) for n in node.items]
        if node.conj == "and":
            r = False if False in vals else (None if None in vals else True)
        else:
            r = True if True in vals else (None if None in vals else False)
    else:
        v = row.get(node.column)
        if node.op == "is":
            r = (v is None) if node.value is None else (v is not None and bool(v) is node.value)
        elif v is None:
            r = None
        else:
            if isinstance(v, bool):
                v = int(v)
            if node.op == "in":
                r = any(_eq(v, x) for x in node.value)
            elif node.op in ("like", "ilike"):
                r = _like(node.value, str(v), node.op == "ilike")
            else:
                w = node.value
                try:
                    r = {
                        "eq": lambda: _eq(v, w),
                        "neq": lambda: not _eq(v, w),
                        "gt": lambda: v > w,
                        "gte": lambda: v >= w,
                        "lt": lambda: v < w,
                        "lte": lambda: v <= w,
                    }[node.op]()
                except TypeError:
                    r = str(v) > str(w) if node.op[0] == "g" else str(v) < str(w)
    if node.negated and r is not None:
        return not r
    return r


def _eq(a: Any, b: Any) -> bool:
    if isinstance(b, bool):
        b = int(b)
    if type(a) is type(b) or (isinstance(a, int | float) and isinstance(b, int | float)):
        return a == b
    return str(a) == str(b)


def render(node: Node) -> str:
    """The text form of a condition (`event_id=eq.1`), as Realtime echoes a subscription's filter."""
    if isinstance(node, Tree):
        inner = ",".join(render(n).replace("=", ".", 1) for n in node.items)
        return f"{'not.' if node.negated else ''}{node.conj}=({inner})"

    def show(x: Any) -> str:
        return str(x).lower() if isinstance(x, bool) or x is None else str(x)

    val = f"({','.join(show(x) for x in node.value)})" if node.op == "in" else show(node.value)
    return f"{node.column}={'not.' if node.negated else ''}{node.op}.{val}"
