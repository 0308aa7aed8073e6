"""The engine's pieces that need no target: the progress line, keys and run ids."""

from __future__ import annotations

import io

from judge.resultlog import DROPPED_EVENTS
from replay.engine import Progress, keys_from_env, new_run_id


def row(status: int, dur_us: int, metric: str | None = None) -> tuple:
    return (1, "rpc:x", "scan", "a", 0, 100, 100 + dur_us, status, None, 1, 1, None, None, metric)


def test_progress_line_counts_rows() -> None:
    out = io.StringIO()
    p = Progress(expected=10, duration_s=5.0, stream=out)
    for _ in range(6):
        p.on_row(row(200, 1000))
    p.on_row(row(503, 1000))
    p.on_row(row(0, 0))
    p.on_row(row(0, 0, DROPPED_EVENTS))
    p.tick(final=True)
    line = out.getvalue()
    assert "sent 8/10" in line and "errors 2" in line and "dropped 1" in line and "/5.0s" in line
    p95 = p.p95_ms()
    assert p95 is not None and 0.9 <= p95 <= 1.2  # bucketed: within a bucket of 1 ms


def test_progress_is_silent_without_a_stream() -> None:
    p = Progress(1, 0.0, None)
    p.on_row(row(200, 5))
    p.tick(final=True)
    assert p.done == 1


def test_keys_from_env_and_run_ids() -> None:
    k = keys_from_env(
        {
            "SUPABASE_ANON_KEY": "a",
            "STRIPE_TEST_SK": "sk_test_b",
            "STRIPE_WEBHOOK_SECRET": "whsec_c",
        }
    )
    assert k.values() == ["a", "sk_test_b", "whsec_c"] and "sk_test_b" not in repr(k)
    a, b = new_run_id(), new_run_id()
    assert a != b and a.startswith("gr-")
