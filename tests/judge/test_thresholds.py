"""k6's threshold grammar and semantics, windowed thresholds, and properties of the judgement."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from judge import metrics as m
from judge import thresholds as th
from tests.judge.test_metrics import SCAN, metrics_of, row


def judge(mt: m.Metrics, selector: str, expr: str) -> th.Verdict:
    return th.judge(mt, th.parse_threshold(selector, expr))


@pytest.mark.parametrize(
    ("text", "method", "pct", "op", "value", "window"),
    [
        ("p(95)<200", "p", 95.0, "<", 200.0, None),
        ("p(99.9) < 5", "p", 99.9, "<", 5.0, None),
        ("rate==0", "rate", None, "==", 0.0, None),
        ("rate===0", "rate", None, "===", 0.0, None),
        ("avg<100", "avg", None, "<", 100.0, None),
        ("count>=50", "count", None, ">=", 50.0, None),
        ("max<=3000", "max", None, "<=", 3000.0, None),
        ("min>1.5", "min", None, ">", 1.5, None),
        ("med!=3", "med", None, "!=", 3.0, None),
        ("value<1", "value", None, "<", 1.0, None),
        ("p(95)<200 over 10s", "p", 95.0, "<", 200.0, 10.0),
        ("rate<0.01 over 500ms", "rate", None, "<", 0.01, 0.5),
        ("count>=1 over 2m", "count", None, ">=", 1.0, 120.0),
    ],
)
def test_parses_k6_expressions(text, method, pct, op, value, window) -> None:
    e = th.parse_expression(text)
    assert (e.method, e.percentile, e.operator, e.value, e.window_s) == (
        method,
        pct,
        op,
        value,
        window,
    )
    assert e.source == text


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("p(95)", "no operator"),
        ("p(95)<", "is not a number"),
        ("p(95)<abc", "'abc' is not a number"),
        ("q(95)<1", "unknown aggregation 'q(95)'"),
        ("p(x)<1", "percentile 'x'"),
        ("p(101)<1", "from 0 to 100"),
        ("p(95)<1 over ten seconds", "over <number>"),
        ("=<5", "unknown aggregation"),
        ("", "no operator"),
    ],
)
def test_bad_expressions_name_themselves(expr: str, fragment: str) -> None:
    with pytest.raises(th.ThresholdError) as e:
        th.parse_threshold("http_req_duration", expr)
    assert fragment in str(e.value)
    assert "http_req_duration" in str(e.value)


@pytest.mark.parametrize(
    ("selector", "expr", "fragment"),
    [
        ("http_req_durations", "p(95)<1", "unknown metric 'http_req_durations'"),
        ("http_req_duration{target:x", "p(95)<1", "missing closing"),
        ("http_req_duration{target}", "p(95)<1", "'target' is not tag:value"),
        ("http_req_duration{}", "p(95)<1", "empty tag list"),
        ("http_req_duration{colour:red}", "p(95)<1", "unknown tag 'colour'"),
        (
            "http_req_duration",
            "rate<0.1",
            "rate does not apply to http_req_duration, a trend metric",
        ),
        ("http_req_failed", "p(95)<1", "p(95) does not apply to http_req_failed, a rate metric"),
        ("http_reqs", "avg<1", "supported: count rate"),
        ("http_reqs", "value<1", "value does not apply"),
    ],
)
def test_bad_selectors_and_unsupported_aggregations(
    selector: str, expr: str, fragment: str
) -> None:
    with pytest.raises(th.ThresholdError) as e:
        th.parse_threshold(selector, expr)
    assert fragment in str(e.value)


def test_target_tag_splits_on_its_first_colon_and_accepts_quotes() -> None:
    sel = th.parse_selector('http_req_duration{target:rpc:scan_ticket_atomic, kind:"scan"}')
    assert sel.tags == (("target", SCAN), ("kind", "scan"))
    assert sel.name == "http_req_duration{target:rpc:scan_ticket_atomic,kind:scan}"


def test_mapping_cli_and_files(tmp_path) -> None:
    mapping = {
        "http_req_duration{target:rpc:scan_ticket_atomic}": ["p(95)<200", "max<=3000"],
        "http_req_failed": "rate==0",
        "checks": [{"threshold": "rate>0.99", "abortOnFail": True}],
    }
    ts = th.parse_mapping(mapping)
    assert [t.name for t in ts] == [
        "http_req_duration{target:rpc:scan_ticket_atomic}: p(95)<200",
        "http_req_duration{target:rpc:scan_ticket_atomic}: max<=3000",
        "http_req_failed: rate==0",
        "checks: rate>0.99",
    ]
    assert th.parse_mapping(th.to_mapping(ts)) == ts
    assert th.parse_cli("http_req_duration{target:rpc:scan_ticket_atomic}=p(95)<200") == ts[0]
    assert th.parse_cli("http_req_failed rate==0") == ts[2]
    assert th.parse_cli("http_req_failed=rate==0") == ts[2]
    with pytest.raises(th.ThresholdError, match="expected METRIC"):
        th.parse_cli("=p(95)<1")
    toml = tmp_path / "t.toml"
    toml.write_text(
        '[thresholds]\n"http_req_duration{target:rpc:scan_ticket_atomic}" = ["p(95)<200"]\n'
    )
    assert th.load_file(toml) == ts[:1]
    js = tmp_path / "t.json"
    js.write_text(json.dumps({"http_req_failed": ["rate==0"]}))
    assert th.load_file(js) == ts[2:3]
    js.write_text("{nope")
    with pytest.raises(th.ThresholdError, match="t.json: not valid JSON"):
        th.load_file(js)
    toml.write_text('[thresholds]\n"http_req_duration" = ["p(95)<<200"]\n')
    with pytest.raises(th.ThresholdError, match="t.toml: http_req_duration"):
        th.load_file(toml)
    with pytest.raises(th.ThresholdError, match="cannot read"):
        th.load_file(tmp_path / "missing.toml")


@pytest.fixture
def run() -> m.Metrics:
    """100 scans over 10 s: durations 1..100 ms; 2 failures; 10 webhooks at 1 s each."""
    rows = [
        row(i, scheduled_us=i * 100_000, done_us=i * 100_000 + (i + 1) * 1000) for i in range(100)
    ]
    rows[10] = row(10, scheduled_us=1_000_000, done_us=1_011_000, status=500)
    rows[20] = row(20, scheduled_us=2_000_000, done_us=2_021_000, status=0, error="reset")
    rows += [row(200 + i, "fn:stripe-webhook", "webhook", scheduled_us=i * 1_000_000, done_us=i * 1_000_000 + 1_000_000)
             for i in range(10)]  # fmt: skip
    return metrics_of(rows, duration_s=10.0)


def test_k6_semantics_of_each_aggregation(run: m.Metrics) -> None:
    scan = f"http_req_duration{{target:{SCAN}}}"
    assert judge(run, scan, "p(95)<96").ok is True  # p(95) of 1..100 = 95.05
    assert judge(run, scan, "p(95)<95").ok is False
    assert judge(run, scan, "p(95)<95").observed == pytest.approx(95.05)
    assert judge(run, scan, "med==50.5").ok is True
    assert judge(run, scan, "avg===50.5").ok is True
    assert judge(run, scan, "min>=1").ok is True
    assert judge(run, scan, "max<100").ok is False
    assert judge(run, "http_req_duration", "max==1000").ok is True
    assert judge(run, "http_req_failed", "rate==0").ok is False
    assert judge(run, "http_req_failed", "rate<=0.02").observed == pytest.approx(2 / 110)
    assert judge(run, "http_reqs", "count==110").ok is True
    assert judge(run, "http_reqs", "rate==11").ok is True  # k6: count / test duration in s
    assert judge(run, "http_reqs{kind:webhook}", "count>=10").ok is True
    v = judge(run, "http_reqs{status:500}", "count<1")
    assert (v.ok, v.observed, v.samples) == (False, 1.0, 1)


def test_no_samples_is_not_a_pass(run: m.Metrics) -> None:
    # a trend with no samples reads 0 (k6's TrendSink), but a bound on nothing is no evidence...
    v = judge(run, "http_req_duration{target:rpc:nothing}", "p(95)<200")
    assert (v.ok, v.observed, v.samples, v.empty) == (False, 0.0, 0, True)
    # ...a counter counts 0, judged as such...
    assert judge(run, "http_reqs{target:rpc:nothing}", "count>=1").ok is False
    assert judge(run, "http_reqs{target:rpc:nothing}", "count==0").ok is True
    # ...and a rate without samples has no value: it fails, flagged empty
    v = judge(run, "http_req_failed{target:rpc:nothing}", "rate==0")
    assert v.ok is False and v.empty and math.isnan(v.observed)
    # windowed: no judged window fails too
    assert judge(run, "http_req_duration{target:rpc:nothing}", "p(95)<200 over 10s").ok is False


def test_a_threshold_may_allow_no_samples(run: m.Metrics) -> None:
    (t,) = th.parse_mapping(
        {"http_req_duration{target:rpc:nothing}": [{"threshold": "p(95)<200", "allowEmpty": True}]}
    )
    assert t.allow_empty and th.judge(run, t).ok is True
    # the flag survives the result header's mapping form
    assert th.parse_mapping(th.to_mapping([t])) == (t,)
    with pytest.raises(th.ThresholdError, match="allowEmpty"):
        th.parse_mapping({"http_reqs": [{"threshold": "count>1", "allowEmpty": "yes"}]})


def test_defaults_apply_unless_the_metric_has_its_own_threshold() -> None:
    mine = th.parse_mapping({"http_req_duration": ["p(95)<500"]})
    names = [t.name for t in th.with_defaults(mine)]
    assert names == [
        "http_req_duration: p(95)<500",
        "http_req_failed: rate==0",
        "schedule_lag: p(99)<10",
    ]
    # a whole-metric threshold replaces the default; a tagged one does not
    replaced = th.parse_mapping(
        {"http_req_failed": ["rate<0.01"], "schedule_lag{target:rpc:x}": ["p(99)<50"]}
    )
    names = [t.name for t in th.with_defaults(replaced)]
    assert "http_req_failed: rate==0" not in names and "schedule_lag: p(99)<10" in names


def test_merged_sets_keep_every_condition_and_the_stricter_of_alike_ones() -> None:
    a = {"http_req_duration": ["p(95)<500"], "http_req_failed": ["rate==0"]}
    b = {"http_req_duration": ["p(95)<300", "max<3000"], "checks": ["rate==1"]}
    c = {"http_req_duration": ["p(95)<800", "p(95)<500 over 10s"], "dashboard_load": "p(95)<3000"}
    merged = th.merge_sets([a, b, c])
    assert merged == {
        "http_req_duration": ["p(95)<300", "max<3000", "p(95)<500 over 10s"],
        "http_req_failed": ["rate==0"],
        "checks": ["rate==1"],
        "dashboard_load": ["p(95)<3000"],
    }


def burst_run(
    bad_from_s: float, bad_to_s: float, total_s: int = 300, slow_ms: int = 500
) -> m.Metrics:
    """10 req/s for total_s seconds; requests scheduled in [bad_from, bad_to) take slow_ms, others 10 ms."""
    rows = []
    for i in range(total_s * 10):
        t = i * 100_000
        d = slow_ms if bad_from_s * 1e6 <= t < bad_to_s * 1e6 else 10
        rows.append(row(i, scheduled_us=t, done_us=t + d * 1000))
    return metrics_of(rows, duration_s=float(total_s))


def test_windowed_threshold_fails_a_run_fine_on_average_but_broken_for_10s() -> None:
    mt = burst_run(120, 130)  # 10 s of 500 ms in 300 s: 3.3% of requests
    assert judge(mt, "http_req_duration", "p(95)<200").ok is True
    v = judge(mt, "http_req_duration", "p(95)<200 over 10s")
    assert v.ok is False
    assert v.window is not None
    assert v.window.value == 500.0
    # the worst window is the first of those whose p(95) is 500 ms: [111 s, 121 s), 10% slow
    assert v.window.start_s == 111.0
    assert v.window.judged == 291  # windows of 10 s every 1 s over 300 s
    # every window where more than 5% of the requests are slow fails: starts 111..129
    assert (v.window.failed, v.window.failing_from_s, v.window.failing_to_s) == (19, 111.0, 139.0)
    assert judge(mt, "http_req_duration", "p(95)<600 over 10s").ok is True


def test_sliding_windows_catch_a_breach_that_tumbling_windows_would_halve() -> None:
    # 6 s slow from 7 s to 13 s: tumbling windows [0,10) and [10,20) each hold 3 s of it (30%),
    # so their median is fast; the sliding window [5,15) holds 60% and its median is slow.
    mt = burst_run(7, 13, total_s=30)
    tumbling = [
        m.percentile(mt.get("http_req_duration").values[i * 100 : (i + 1) * 100], 0.5)
        for i in range(3)
    ]
    assert max(tumbling) == 10.0
    v = judge(mt, "http_req_duration", "med<100 over 10s")
    assert v.ok is False and v.window.value == 500.0


def test_windowed_counters_judge_every_window_including_empty_ones() -> None:
    rows = [row(i, scheduled_us=i * 100_000) for i in range(50)]  # 10/s for 5 s
    rows += [
        row(100 + i, scheduled_us=15_000_000 + i * 100_000) for i in range(50)
    ]  # then a gap of 10 s
    mt = metrics_of(rows, duration_s=20.0)
    assert judge(mt, "http_reqs", "count>=1").ok is True
    v = judge(mt, "http_reqs", "count>=1 over 2s")
    assert v.ok is False and v.window.value == 0.0 and 5.0 <= v.window.start_s <= 13.0
    assert judge(mt, "http_reqs", "rate<=10 over 2s").ok is True
    assert judge(mt, "http_reqs", "rate<10 over 2s").ok is False


def test_windowed_rate_skips_windows_without_samples() -> None:
    rows = [row(i, scheduled_us=i * 1_000_000) for i in range(3)] + [
        row(9, scheduled_us=60_000_000)
    ]
    mt = metrics_of(rows)
    v = judge(mt, "http_req_failed", "rate==0 over 1s")
    # 1 s windows every 0.1 s: the samples at 1 s and 2 s lie in 10 windows each, those at the
    # run's ends in 1; the 570 windows between 2 s and 60 s hold nothing and are not judged
    assert v.ok is True and v.window.judged == 22


def test_evaluate_and_passed(run: m.Metrics) -> None:
    ts = th.parse_mapping({"http_req_duration": ["p(95)<2000"], "http_req_failed": ["rate<0.5"]})
    assert th.passed(th.evaluate(run, ts))
    ts = th.parse_mapping({"http_req_duration": ["p(95)<2000"], "http_req_failed": ["rate==0"]})
    assert [v.ok for v in th.evaluate(run, ts)] == [True, False]
    assert not th.passed(th.evaluate(run, ts))


# --- properties ---------------------------------------------------------------------------------

durations = st.lists(st.integers(0, 5_000_000), min_size=1, max_size=40)


def run_of(ds: list[int], spacing_us: int = 250_000) -> m.Metrics:
    return metrics_of(
        [row(i, scheduled_us=i * spacing_us, done_us=i * spacing_us + d) for i, d in enumerate(ds)]
    )


@settings(max_examples=60)
@given(durations, st.floats(0, 100), st.floats(0, 100))
def test_percentile_is_monotone_in_n(ds: list[int], a: float, b: float) -> None:
    mt = run_of(ds)
    lo, hi = min(a, b), max(a, b)
    assert mt.value("http_req_duration", "p", lo / 100) <= mt.value(
        "http_req_duration", "p", hi / 100
    )


@settings(max_examples=60)
@given(durations)
def test_min_med_avg_max_are_ordered(ds: list[int]) -> None:
    mt = run_of(ds)
    v = {k: mt.value("http_req_duration", k) for k in ("min", "med", "avg", "max")}
    assert v["min"] <= v["med"] <= v["max"]
    assert v["min"] <= v["avg"] * (1 + 1e-12) and v["avg"] <= v["max"] * (1 + 1e-12)
    assert mt.value("http_req_duration", "p", 0.0) == v["min"]
    assert mt.value("http_req_duration", "p", 1.0) == v["max"]


aggregations = st.sampled_from(["avg", "min", "med", "max", "p(50)", "p(90)", "p(99.9)"])
ops = st.sampled_from(["<", "<=", ">", ">=", "==", "===", "!="])


@settings(max_examples=80)
@given(durations, aggregations, ops, st.integers(0, 5000), st.sampled_from([None, "1s", "3s"]))
def test_a_threshold_and_its_negation_never_both_hold(ds, agg, op, bound, window) -> None:
    mt = run_of(ds)
    text = f"{agg}{op}{bound}" + (f" over {window}" if window else "")
    t = th.parse_threshold("http_req_duration", text)
    neg = th.Threshold(t.selector, t.expression.negation())
    a, b = th.judge(mt, t), th.judge(mt, neg)
    assert not (a.ok and b.ok)
    if window is None:  # over the whole run exactly one holds
        assert a.ok != b.ok


@settings(max_examples=60)
@given(durations, st.integers(0, 5000), st.sampled_from(["1s", "2s", "500ms"]))
def test_max_over_windows_agrees_with_max_over_the_run(ds, bound, window) -> None:
    """Windows cover every sample, so a bound on max holds on all windows iff on the whole run."""
    mt = run_of(ds)
    whole = judge(mt, "http_req_duration", f"max<{bound}").ok
    assert judge(mt, "http_req_duration", f"max<{bound} over {window}").ok == whole


@settings(max_examples=40)
@given(st.lists(st.booleans(), min_size=1, max_size=60))
def test_failed_rate_is_the_share_of_failures(fails: list[bool]) -> None:
    mt = metrics_of([row(i, status=500 if f else 200) for i, f in enumerate(fails)])
    share = sum(fails) / len(fails)
    assert judge(mt, "http_req_failed", f"rate<={share}").ok
    assume(share > 0)
    assert not judge(mt, "http_req_failed", "rate==0").ok
    assert np.isclose(judge(mt, "http_req_failed", "rate==0").observed, share)


def test_cli_specs_as_a_mapping_share_parse_clis_grammar() -> None:
    specs = [
        "http_req_duration{target:rpc:scan_ticket_atomic}=p(95)<200",
        "http_req_failed rate==0",
        "http_req_duration{target:rpc:scan_ticket_atomic} = max<900 ",
    ]
    mapping = th.cli_mapping(specs)
    assert mapping == {
        "http_req_duration{target:rpc:scan_ticket_atomic}": ["p(95)<200", "max<900"],
        "http_req_failed": ["rate==0"],
    }
    assert list(th.parse_mapping(mapping)) == sorted(
        (th.parse_cli(s) for s in specs), key=lambda t: t.selector.metric
    )
    with pytest.raises(th.ThresholdError, match="expected METRIC"):
        th.cli_mapping(["=p(95)<1"])
