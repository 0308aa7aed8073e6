"""Metrics from result rows: k6's exact percentiles, k6 names and tags, failures, checks, series."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from judge import metrics as m

SCAN = "rpc:scan_ticket_atomic"


def row(
    seq: int = 0,
    target: str = SCAN,
    kind: str = "scan",
    scheduled_us: int = 0,
    sent_us: int | None = None,
    done_us: int | None = None,
    status: int = 200,
    error: str | None = None,
    outcome: str | None = None,
    expect: str | None = None,
    metric: str | None = None,
    bytes_sent: int = 100,
    bytes_received: int = 50,
    actor: str = "attendee:1",
    group: str | None = None,
) -> tuple:
    """A result row in resultlog's column order, with sensible defaults."""
    sent = scheduled_us if sent_us is None else sent_us
    done = sent + 1000 if done_us is None else done_us
    return (seq, target, kind, actor, scheduled_us, sent, done, status, error,
            bytes_sent, bytes_received, outcome, expect, metric, group)  # fmt: skip


def metrics_of(rows: list[tuple], **kw) -> m.Metrics:
    return m.from_table(m.table_from_rows(rows), **kw)


def k6_percentile(values: list[float], q: float) -> float:
    """A line-by-line transcription of k6's TrendSink.P (metrics/sink.go): the oracle."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    s = sorted(values)
    i = q * (len(s) - 1.0)
    j = s[math.floor(i)]
    k = s[math.ceil(i)]
    f = i - math.floor(i)
    return j + (k - j) * f


# k6's own sink_test.go figures.
K6_SAMPLES = [0.120, 0.035, 0.015, 0.190, 0.280, 0.001, 0.070, 0.499, 1.200, 2.500]


def test_percentile_matches_k6_documented_values() -> None:
    v = np.array(K6_SAMPLES)
    assert m.percentile(v, 0.0) == 0.001
    assert m.percentile(v, 0.5) == pytest.approx(0.155, abs=1e-12)
    assert m.percentile(v, 0.95) == pytest.approx(1.915, abs=1e-12)
    assert m.percentile(v, 0.99) == pytest.approx(2.383, abs=1e-12)
    assert m.percentile(v, 1.0) == 2.5
    two = np.array([5.0, 10.0])
    assert m.percentile(two, 0.5) == 7.5
    assert m.percentile(two, 0.95) == 5 + (10 - 5) * 0.95
    assert m.percentile(two, 0.99) == 5 + (10 - 5) * 0.99
    assert m.percentile(np.array([10.0]), 0.37) == 10.0
    assert m.percentile(np.array([]), 0.95) == 0.0


def test_trend_stats_of_one_to_ten() -> None:
    stats = m.trend_stats(np.arange(1.0, 11.0))
    assert stats == {
        "avg": 5.5,
        "min": 1.0,
        "med": 5.5,
        "max": 10.0,
        "p(90)": k6_percentile(list(range(1, 11)), 0.9),
        "p(95)": k6_percentile(list(range(1, 11)), 0.95),
    }
    assert stats["p(90)"] == pytest.approx(9.1)


floats = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(st.lists(floats, max_size=60), st.floats(min_value=0, max_value=1))
def test_percentile_is_bit_exact_with_k6(values: list[float], q: float) -> None:
    assert m.percentile(np.array(values, dtype=float), q) == k6_percentile(values, q)
    assert m.percentile(np.sort(np.array(values, dtype=float)), q, is_sorted=True) == k6_percentile(
        values, q
    )


@given(st.lists(st.tuples(st.integers(0, 4), floats), max_size=80), st.floats(0, 1))
def test_grouped_percentiles_equal_per_group_percentiles(
    pairs: list[tuple[int, float]], q: float
) -> None:
    groups = np.array([g for g, _ in pairs], dtype=np.int64)
    values = np.array([v for _, v in pairs], dtype=float)
    got = m.grouped_percentiles(groups, values, 5, (q, 0.5))
    for g in range(5):
        vs = [v for gg, v in pairs if gg == g]
        assert got[g, 0] == k6_percentile(vs, q)
        assert got[g, 1] == k6_percentile(vs, 0.5)


def test_timings_are_duration_latency_and_lag_in_ms() -> None:
    # scheduled at 1 s, sent 2 ms late, answered 30 ms after sending
    mt = metrics_of([row(scheduled_us=1_000_000, sent_us=1_002_000, done_us=1_032_000)])
    assert mt.value("http_req_duration", "max") == 30.0
    assert mt.value("latency", "max") == 32.0
    assert mt.value("schedule_lag", "max") == 2.0
    assert mt.get("http_req_duration").t_us.tolist() == [1_000_000]  # placed at its scheduled time


def test_failures_follow_status_error_and_expected_declines() -> None:
    rows = [
        row(0, status=200),
        row(1, status=0, error="connect refused"),
        row(2, status=500),
        row(3, status=404),
        row(4, status=200, error="body truncated"),
        row(5, status=399),
        # a Stripe decline the event expected is the right answer, not a failure
        row(
            6,
            "stripe:payment_intents.confirm",
            "confirm",
            status=402,
            outcome="declined",
            expect="declined",
        ),
        # ...but a decline nobody expected is
        row(
            7,
            "stripe:payment_intents.confirm",
            "confirm",
            status=402,
            outcome="declined",
            expect="succeeded",
        ),
        # and a declined outcome on a non-Stripe target is judged on its status
        row(8, status=402, outcome="declined", expect="declined"),
    ]
    failed = metrics_of(rows).get("http_req_failed").values.tolist()
    assert failed == [0, 1, 1, 1, 1, 0, 0, 1, 1]
    mt = metrics_of(rows)
    assert mt.value("http_req_failed", "rate") == 6 / 9
    assert mt.value("http_req_duration", "max", tags={"expected_response": "true"}) == 1.0
    assert len(mt.get("http_req_duration").select({"expected_response": "false"})) == 6
    assert len(mt.get("http_reqs").select({"status": "500"})) == 1


def test_checks_compare_outcome_with_expect() -> None:
    rows = [
        row(0, outcome="valid", expect="valid"),
        row(1, outcome="already_scanned", expect="valid"),
        row(2, outcome="invalid", expect=None),  # nothing expected: not a check
        row(3, status=0, error="timeout", outcome=None, expect="valid"),
        row(4, "fn:stripe-webhook", "webhook", outcome="processed", expect="processed"),
        row(5, metric="dropped_events", status=0, error="max in flight", expect="valid"),
    ]
    mt = metrics_of(rows)
    assert mt.value("checks", "rate") == 2 / 5
    assert dict((n, (p, f)) for n, p, f in mt.checks) == {
        f"{SCAN} is valid": (1, 3),
        "fn:stripe-webhook is processed": (1, 0),
    }


def test_measurement_rows_are_not_http_requests() -> None:
    rows = [
        row(0, scheduled_us=0, sent_us=10, done_us=2010),
        row(
            1,
            metric="dropped_events",
            status=0,
            error="max in flight",
            scheduled_us=5,
            sent_us=5,
            done_us=5,
        ),
        row(
            2,
            "dashboard",
            "view",
            metric="dashboard_load",
            scheduled_us=100,
            sent_us=100,
            done_us=1_500_100,
        ),
        row(
            3,
            "realtime:tickets",
            "subscribe",
            metric="realtime_update_latency",
            sent_us=1000,
            done_us=41_000,
            status=0,
        ),
        row(4, "realtime:tickets", "subscribe", metric="realtime_join", sent_us=0, done_us=7000),
    ]
    mt = metrics_of(rows)
    assert mt.value("http_reqs", "count") == 1
    assert mt.value("dropped_events", "count") == 1
    assert mt.value("iterations", "count") == 2
    assert mt.value("dashboard_load", "max") == 1500.0
    assert mt.value("realtime_update_latency", "max") == 40.0
    assert mt.value("realtime_join", "avg") == 7.0
    assert mt.value("http_req_failed", "rate") == 0.0
    assert mt.value("data_sent", "count") == 500  # every row's bytes count


def test_tags_select_sub_metrics_and_target_values_keep_their_colons() -> None:
    rows = [row(i, SCAN, done_us=1000 * (i + 1)) for i in range(10)] + [
        row(10 + i, "fn:stripe-webhook", "webhook", done_us=500_000) for i in range(5)
    ]
    mt = metrics_of(rows, scenario="gate")
    assert mt.value("http_req_duration", "max", tags={"target": SCAN}) == 10.0
    assert mt.value("http_req_duration", "min", tags={"target": "fn:stripe-webhook"}) == 500.0
    assert mt.value("http_reqs", "count", tags={"kind": "webhook", "scenario": "gate"}) == 5
    assert mt.value("http_reqs", "count", tags={"scenario": "other"}) == 0
    assert mt.labels("target") == ["fn:stripe-webhook", SCAN]


def test_counter_rate_is_per_second_of_run() -> None:
    rows = [row(i, scheduled_us=i * 100_000, done_us=i * 100_000 + 1000) for i in range(50)]
    mt = metrics_of(rows, duration_s=10.0)
    assert mt.value("http_reqs", "rate") == 5.0
    derived = metrics_of(rows)  # to the last completion: 4.9 s + 1 ms
    assert derived.duration_s == pytest.approx(4.901)


def test_stall_shows_in_latency_not_in_duration() -> None:
    """Coordinated omission: requests scheduled during a 1 s stall were sent on time but answered
    only when the stall ended; latency (from schedule) shows it for each, duration (from send) too
    here, but a sender that waited would have shown neither: lag then carries the delay."""
    rows = []
    for i in range(100):  # 100 req/s for 1 s, target stalls from 0.4 s to 0.6 s... then the sender
        t = i * 10_000
        if 400_000 <= t < 600_000:
            # a closed-loop sender would have been held back: sent late (lag), quick once sent
            rows.append(row(i, scheduled_us=t, sent_us=600_000, done_us=601_000))
        else:
            rows.append(row(i, scheduled_us=t, sent_us=t, done_us=t + 1000))
    mt = metrics_of(rows)
    assert mt.value("http_req_duration", "max") == 1.0
    assert mt.value("latency", "max") == 201.0
    assert mt.value("schedule_lag", "max") == 200.0
    assert len(mt.get("latency").select({}).values[mt.get("latency").values > 2]) == 20


def test_timeseries_counts_offered_load_errors_and_percentiles_per_target() -> None:
    rows = []
    for i in range(30):  # 10/s for 3 s on scans, latency grows each second
        sec = i // 10
        rows.append(
            row(i, SCAN, scheduled_us=i * 100_000, done_us=i * 100_000 + (sec + 1) * 10_000)
        )
    rows += [
        row(100 + i, "fn:stripe-webhook", "webhook", scheduled_us=2_000_000 + i, status=500)
        for i in range(4)
    ]
    ts = m.timeseries(metrics_of(rows, duration_s=3.0), step_s=1.0)
    assert ts.step_s == 1.0 and len(ts.start_s) == 3
    scan = ts.groups.index(SCAN)
    hook = ts.groups.index("fn:stripe-webhook")
    assert ts.offered[scan].tolist() == [10.0, 10.0, 10.0]
    assert ts.offered[hook].tolist() == [0.0, 0.0, 4.0]
    assert ts.errors[hook].tolist() == [0.0, 0.0, 4.0]
    assert ts.errors[scan].sum() == 0
    assert ts.duration_pcts[scan, :, 1].tolist() == [10.0, 20.0, 30.0]
    assert (ts.offered.sum() * ts.step_s) == 34


@given(st.floats(min_value=0.01, max_value=10 * 24 * 3600))
def test_nice_step_bounds_bucket_count(span: float) -> None:
    step = m.nice_step(span)
    assert span / step <= 600


@settings(max_examples=50)
@given(
    st.lists(st.tuples(st.integers(0, 5_000_000), st.integers(0, 300_000)), min_size=1, max_size=50)
)
def test_sliding_windows_cover_every_sample(items: list[tuple[int, int]]) -> None:
    rows = [row(i, scheduled_us=t, done_us=t + d) for i, (t, d) in enumerate(items)]
    mt = metrics_of(rows)
    s = mt.get("http_req_duration")
    w = m.sliding_windows(s, 1.0, 0.1, mt.duration_s)
    covered = np.zeros(len(s), bool)
    for lo, hi in zip(w.lo, w.hi, strict=True):
        covered[lo:hi] = True
        assert hi >= lo
    assert covered.all()
    assert np.all(np.diff(w.starts_s) > 0)


def test_merge_rebases_shards_on_the_earliest_start() -> None:
    a = m.table_from_rows([row(0, scheduled_us=0, done_us=1000)])
    b = m.table_from_rows([row(1, scheduled_us=0, done_us=1000)])
    merged, base = m.merge_tables([(a, "s1", 1_000_000), (b, "s2", 1_500_000)])
    assert base == 1_000_000
    assert merged["scheduled_us"].to_pylist() == [0, 500_000]
    assert merged["scenario"].to_pylist() == ["s1", "s2"]
    mt = m.from_table(merged)
    assert mt.value("http_reqs", "count", tags={"scenario": "s2"}) == 1


def test_empty_table_gives_empty_metrics() -> None:
    mt = m.from_table(m.table_from_rows([]))
    assert mt.value("http_reqs", "count") == 0
    assert mt.value("http_req_duration", "p", 0.95) == 0.0
    assert math.isnan(mt.value("http_req_failed", "rate"))
    assert m.timeseries(mt).groups == ()


def test_reads_resultlog_tables() -> None:
    """The table shape of judge.resultlog (strings nullable, status int32) is accepted as is."""
    schema = pa.schema([(c, pa.string()) for c in m.ROW_COLUMNS])
    ints = {"seq", "scheduled_us", "sent_us", "done_us", "bytes_sent", "bytes_received"}
    schema = pa.schema(
        [
            (c, pa.int64() if c in ints else pa.int32() if c == "status" else pa.string())
            for c in m.ROW_COLUMNS
        ]
    )
    t = pa.Table.from_pylist([dict(zip(m.ROW_COLUMNS, row(3), strict=True))], schema=schema)
    assert m.from_table(t).value("http_reqs", "count") == 1


@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(
                ["rpc:scan_ticket_atomic", "stripe:payment_intents.confirm", "fn:stripe-webhook"]
            ),
            st.sampled_from([0, 200, 201, 399, 400, 402, 500]),
            st.sampled_from([None, "", "timeout"]),
            st.sampled_from([None, "declined", "succeeded", "valid"]),
            st.sampled_from([None, "declined", "succeeded", "valid"]),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_row_failure_rule_agrees_with_http_req_failed(rows):
    """The progress line's per-row rule and http_req_failed's column rule count the same failures."""
    n = len(rows)
    table = pa.table(
        {
            "seq": list(range(n)),
            "target": [r[0] for r in rows],
            "kind": ["k"] * n,
            "actor": ["a"] * n,
            "scheduled_us": [0] * n,
            "sent_us": [0] * n,
            "done_us": [1000] * n,
            "status": pa.array([r[1] for r in rows], pa.int32()),
            "error": pa.array([r[2] for r in rows], pa.string()),
            "bytes_sent": [0] * n,
            "bytes_received": [0] * n,
            "outcome": pa.array([r[3] for r in rows], pa.string()),
            "expect": pa.array([r[4] for r in rows], pa.string()),
        }
    )
    failed = sum(m.request_failed(*r) for r in rows)
    assert m.from_table(table).value("http_req_failed", "rate") == pytest.approx(failed / n)


@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["rpc:x", "stripe:payment_intents.confirm", "fn:stripe-webhook"]),
            st.sampled_from([-1, 0, 1, 200, 302, 399, 400, 402, 404, 500]),
            st.sampled_from([None, "", "timeout"]),
            st.sampled_from([None, "", "declined", "valid", "http_404"]),
            st.sampled_from([None, "", "declined", "valid", "http_404", "http_500", "http_0"]),
        ),
        max_size=40,
    )
)
def test_failed_rows_is_request_failed_row_by_row(rows):
    """The column rule is the row rule, applied to every row (one failure rule)."""
    n = len(rows)
    table = pa.table(
        {
            "target": pa.array([r[0] for r in rows], pa.string()),
            "status": pa.array([r[1] for r in rows], pa.int32()),
            "error": pa.array([r[2] for r in rows], pa.string()),
            "outcome": pa.array([r[3] for r in rows], pa.string()),
            "expect": pa.array([r[4] for r in rows], pa.string()),
            "metric": pa.nulls(n, pa.string()),
        }
    )
    assert m.failed_requests(table).tolist() == [m.request_failed(*r) for r in rows]


@given(
    durations=st.lists(st.integers(0, 10**8), min_size=1, max_size=200),
    q=st.sampled_from([0.0, 0.5, 0.9, 0.95, 0.99, 1.0]),
)
def test_the_progress_histogram_percentile_is_k6s_on_bucketed_samples(durations, q):
    """The live line's p95 is k6's percentile of the samples read as their bucket's upper edge."""
    counts = [0] * m.LOG_BUCKETS
    for d in durations:
        counts[m.log_bucket(d)] += 1
    edges = (2.0 ** ((np.arange(m.LOG_BUCKETS) + 1) / 8) - 1) / 1000
    bucketed = np.sort(edges[[m.log_bucket(d) for d in durations]])
    got = m.log_bucket_percentile(counts, q)
    assert got == pytest.approx(m.percentile(bucketed, q, is_sorted=True), rel=1e-12)
    assert m.log_bucket_percentile([0] * m.LOG_BUCKETS, q) is None
