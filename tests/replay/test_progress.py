"""The progress line, from the counts each sender reports with a batch (moved from test_engine)."""

from __future__ import annotations

import io

from judge.resultlog import DROPPED_EVENTS, RowCounts, summarize
from judge.rows import RowBuffer
from replay.progress import Progress


def row(status: int, dur_us: int, metric: str | None = None) -> tuple:
    return (1, "rpc:x", "scan", "a", 0, 100, 100 + dur_us, status, None, 1, 1, None, None, metric)


def counts(*rows: tuple) -> RowCounts:
    """What a sender reports for a batch of these rows."""
    buf = RowBuffer()
    for r in rows:
        buf.append(*r)
    batch = buf.take()
    assert batch is not None
    return summarize(batch)


def test_progress_line_counts_rows() -> None:
    out = io.StringIO()
    p = Progress(expected=10, duration_s=5.0, stream=out)
    p.add(counts(*[row(200, 1000)] * 6, row(503, 1000)))
    p.add(counts(row(0, 0), row(0, 0, DROPPED_EVENTS)), sender=1)
    p.tick(final=True)
    line = out.getvalue()
    assert "sent 8/10" in line and "errors 2" in line and "dropped 1" in line and "/5.0s" in line
    p95 = p.p95_ms()
    assert p95 is not None and 0.9 <= p95 <= 1.2  # the slowest sender's latest batch: 1 ms


def test_progress_is_silent_without_a_stream() -> None:
    p = Progress(1, 0.0, None)
    p.add(counts(row(200, 5)))
    p.tick(final=True)
    assert p.done == 1
