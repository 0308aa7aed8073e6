"""staging.filters, the one copy of PostgREST's filter grammar: its SQL and its row evaluation
(what Realtime uses) agree on every row, and values are read as the column's type reads them.
Grammar: https://postgrest.org/en/stable/references/api/tables_views.html#logical-operators"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from staging.errors import PostgrestError
from staging.filters import evaluate, parse_filter_param, split_top, where_sql

TYPES = {"id": "int", "n": "int", "s": "text", "b": "bool"}

values = {
    "n": st.integers(-3, 3).map(str),
    "s": st.sampled_from(["a", "b", "ab", "a,b", "x y"]).map(lambda v: f'"{v}"' if "," in v else v),
    "b": st.sampled_from(["true", "false"]),
}


@st.composite
def conds(draw: Any) -> str:
    col = draw(st.sampled_from(["n", "s", "b"]))
    neg = draw(st.sampled_from(["", "not."]))
    if draw(st.booleans()) and col != "b":
        op = "is"
        v = "null"
    elif col == "s" and draw(st.booleans()):
        op = draw(st.sampled_from(["like", "ilike"]))
        v = draw(st.sampled_from(["a*", "*b", "A*", "*"]))
    elif draw(st.booleans()):
        op = "in"
        v = "(" + ",".join(draw(st.lists(values[col], min_size=1, max_size=3))) + ")"
    else:
        op = draw(
            st.sampled_from(
                ["eq", "neq", "gt", "gte", "lt", "lte"] if col != "b" else ["eq", "neq"]
            )
        )
        v = draw(values[col])
    return f"{col}.{neg}{op}.{v}"


trees = st.recursive(
    conds(),
    lambda kids: st.tuples(
        st.sampled_from(["and", "or", "not.and", "not.or"]), st.lists(kids, min_size=1, max_size=3)
    ).map(lambda t: f"{t[0]}({','.join(t[1])})"),
    max_leaves=6,
)
rows = st.lists(
    st.fixed_dictionaries(
        {
            "n": st.none() | st.integers(-3, 3),
            "s": st.none() | st.sampled_from(["a", "b", "ab", "a,b", "x y", "AB"]),
            "b": st.none() | st.booleans(),
        }
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(rows=rows, tree=trees, top=st.sampled_from(["or", "and", "not.or"]))
def test_sql_and_row_evaluation_agree(rows: list[dict[str, Any]], tree: str, top: str) -> None:
    node = parse_filter_param("t", top, f"({tree})", TYPES)
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, s TEXT, b BOOLEAN)")
    for i, r in enumerate(rows):
        conn.execute("INSERT INTO t VALUES (?,?,?,?)", (i, r["n"], r["s"], r["b"]))
    where, args = where_sql([node], "p")
    got = {r[0] for r in conn.execute(f'SELECT id FROM t AS "p"{where}', args)}
    # SQLite's LIKE folds ASCII case, as ilike does; like is case-sensitive in both
    want = {i for i, r in enumerate(rows) if evaluate(node, {**r, "b": r["b"]}) is True}
    assert got == want, (tree, where, args)


def test_values_are_read_as_the_column_type() -> None:
    assert parse_filter_param("t", "n", "eq.-7", TYPES).value == -7
    for bad in ("eq.١", "eq.²", "eq.--1", "eq.9223372036854775808", "eq.1e3", "in.(1,x)"):
        with pytest.raises(PostgrestError) as err:
            parse_filter_param("t", "n", bad, TYPES)
        assert err.value.body["code"] in ("22P02", "22003")
    with pytest.raises(PostgrestError) as err:
        parse_filter_param("t", "b", "eq.maybe", TYPES)
    assert err.value.body["code"] == "22P02"
    with pytest.raises(PostgrestError) as err:
        parse_filter_param("t", "nope", "eq.1", TYPES)
    assert err.value.body["code"] == "42703"


def test_logic_tree_syntax_errors_are_pgrst100() -> None:
    for bad in (
        "(n.eq.1",
        "n.eq.1",
        "()",
        "(n.eq.1))",
        "(n.between.1)",
        "(" + "or(" * 20 + "n.eq.1" + ")" * 21,
    ):
        with pytest.raises(PostgrestError) as err:
            parse_filter_param("t", "or", bad, TYPES)
        assert err.value.body["code"] in ("PGRST100", "42703"), bad
    assert split_top('a,"b,c",d(e,f)') == ["a", '"b,c"', "d(e,f)"]
