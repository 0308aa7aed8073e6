"""Hypothesis strategies for the judge's tests: result rows and tables, threshold sets."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import strategies as st

from judge import metrics as m
from judge.rows import SCHEMA

TARGETS = (
    "rpc:scan_ticket_atomic",
    "stripe:payment_intents.confirm",
    "fn:stripe-webhook",
    "rest:events",
)
STATUSES = (0, 200, 201, 399, 400, 402, 404, 500, 503)
OUTCOMES = (None, "", "declined", "succeeded", "valid", "already_scanned", "processed", "duplicate")
EXPECTS = (
    None,
    "declined",
    "valid",
    "already_scanned",
    "processed",
    "duplicate",
    "http_404",
    "http_200",
)
MEASUREMENTS = (None, None, None, "dropped_events", "dashboard_load", "realtime_update_latency",
                "realtime_join")  # fmt: skip


@st.composite
def result_rows(draw: st.DrawFn, seq: int = 0) -> dict:
    """One result row (judge.rows.SCHEMA's columns): a request, a drop or a measurement."""
    scheduled = draw(st.integers(0, 20_000_000))
    sent = scheduled + draw(st.integers(0, 50_000))
    expect = draw(st.sampled_from(EXPECTS))
    group = draw(st.sampled_from((None, None, "evt:e1", "ticket:1/A"))) if expect else None
    return {
        "seq": seq, "target": draw(st.sampled_from(TARGETS)), "kind": "k",
        "actor": draw(st.sampled_from(("a:1", "a:2", "viewer:1"))),
        "scheduled_us": scheduled, "sent_us": sent, "done_us": sent + draw(st.integers(0, 3_000_000)),
        "status": draw(st.sampled_from(STATUSES)),
        "error": draw(st.sampled_from((None, None, "", "timeout"))),
        "bytes_sent": draw(st.integers(0, 5000)), "bytes_received": draw(st.integers(0, 5000)),
        "outcome": draw(st.sampled_from(OUTCOMES)), "expect": expect,
        "metric": draw(st.sampled_from(MEASUREMENTS)), "group": group,
    }  # fmt: skip


@st.composite
def result_tables(draw: st.DrawFn, max_rows: int = 60) -> pa.Table:
    """A result table with judge.rows.SCHEMA (possibly empty)."""
    n = draw(st.integers(0, max_rows))
    rows = [draw(result_rows(seq=i)) for i in range(n)]
    return pa.Table.from_pylist(rows, schema=SCHEMA) if rows else SCHEMA.empty_table()


def _expressions(metric: str) -> st.SearchStrategy[str]:
    kind = m.METRICS[metric].type
    number = st.sampled_from(("0", "0.5", "1", "10", "200", "1500"))
    op = st.sampled_from(("<", "<=", ">", ">=", "==", "!="))
    if kind == m.TREND:
        agg = st.sampled_from(("avg", "min", "med", "max", "p(50)", "p(95)", "p(99.9)"))
    elif kind == m.RATE:
        agg = st.just("rate")
    else:
        agg = st.sampled_from(("count", "rate"))
    window = st.sampled_from(("", "", " over 1s", " over 5s"))
    return st.builds(lambda a, o, n, w: f"{a}{o}{n}{w}", agg, op, number, window)


@st.composite
def threshold_sets(draw: st.DrawFn, exclude: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """A k6 threshold mapping over gaterush's metrics (selectors with and without tags)."""
    names = [n for n in m.METRICS if n not in exclude]
    out: dict[str, list[str]] = {}
    for _ in range(draw(st.integers(1, 5))):
        metric = draw(st.sampled_from(names))
        tag = draw(st.sampled_from(("", "", "{target:rpc:scan_ticket_atomic}", "{status:500}")))
        out.setdefault(metric + tag, []).append(draw(_expressions(metric)))
    return out
