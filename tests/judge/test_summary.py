"""The end-of-run summary: k6's terminal shape and k6's handleSummary JSON."""

from __future__ import annotations

import json

import pytest

from judge import summary as summ
from judge import thresholds as th
from tests.judge.test_metrics import SCAN, metrics_of, row


@pytest.fixture
def run():
    rows = [
        row(i, scheduled_us=i * 100_000, done_us=i * 100_000 + (i % 50 + 1) * 1000,
            outcome="valid" if i % 10 else "already_scanned", expect="valid")
        for i in range(300)
    ]  # fmt: skip
    rows += [
        row(400 + i, "fn:stripe-webhook", "webhook", scheduled_us=i * 1_000_000,
            done_us=i * 1_000_000 + 30_000, outcome="processed", expect="processed")
        for i in range(20)
    ]  # fmt: skip
    rows.append(row(500, "dashboard", "view", metric="dashboard_load", done_us=1_200_000))
    mt = metrics_of(rows, duration_s=32.0)
    ts = th.parse_mapping(
        {
            f"http_req_duration{{target:{SCAN}}}": ["p(95)<200", "p(95)<40 over 5s"],
            "http_req_failed": ["rate==0"],
            "checks": ["rate>0.99"],
            "http_reqs": ["count>=300"],
        }
    )
    return mt, th.evaluate(mt, ts)


def test_formats_follow_k6() -> None:
    assert summ.format_time(0.85) == "850.00µs"
    assert summ.format_time(12.345) == "12.35ms"
    assert summ.format_time(1520) == "1.52s"
    assert summ.format_time(123_400) == "2m3.4s"
    assert summ.format_bytes(118_000) == "118 kB"
    assert summ.format_bytes(3_900) == "3.9 kB"
    assert summ.format_bytes(13_000_000) == "13 MB"
    assert summ.format_bytes(512) == "512 B"


def test_terminal_summary_has_k6_shape(run) -> None:
    mt, verdicts = run
    text = summ.render(mt, verdicts)
    lines = text.splitlines()
    assert lines[0] == "  █ THRESHOLDS"
    assert f"    http_req_duration{{target:{SCAN}}}" in lines
    assert "    ✓ 'p(95)<200' p(95)=48.00ms" in lines
    window_line = next(ln for ln in lines if "over 5s" in ln)
    assert window_line.startswith("    ✗ 'p(95)<40 over 5s' p(95)=")
    assert "failed in" in window_line and "windows" in window_line
    assert "    ✓ 'rate==0' rate=0.00%" in lines
    assert "    ✗ 'rate>0.99' rate=90.62%" in lines
    assert "    ✓ 'count>=300' count=320" in lines
    assert "  █ TOTAL RESULTS" in lines
    checks = next(ln for ln in lines if ln.lstrip().startswith("checks."))
    assert checks.endswith(": 90.62% 290 out of 320")
    assert f"    ✗ {SCAN} is valid" in lines
    assert "     ↳  90% — ✓ 270 / ✗ 30" in lines
    assert "    ✓ fn:stripe-webhook is processed" in lines
    trend = next(ln for ln in lines if ln.lstrip().startswith("http_req_duration."))
    for stat in ("avg=", "min=", "med=", "max=", "p(90)=", "p(95)="):
        assert stat in trend
    assert any(ln.lstrip().startswith(f"{{ target:{SCAN} }}") for ln in lines)  # per-target line
    assert any(ln.lstrip().startswith("http_reqs.") and ln.endswith("320 10/s") for ln in lines)
    assert any(ln.lstrip().startswith("dashboard_load.") and "avg=1.20s" in ln for ln in lines)
    assert lines[-1] == (
        "  ✗ 2 of 5 thresholds failed: "
        "http_req_duration{target:rpc:scan_ticket_atomic} 'p(95)<40 over 5s', checks 'rate>0.99'"
    )
    # the metric names line up on one column, as in k6
    cols = {ln.index(": ") for ln in lines if ln.startswith("    ") and "....: " in ln}
    assert len(cols) == 1


def test_summary_json_has_handle_summary_shape(run) -> None:
    mt, verdicts = run
    data = summ.to_json(mt, verdicts, extra={"runs": ["r1"]})
    json.dumps(data, allow_nan=False)  # strict JSON: no NaN
    assert (
        data["root_group"]["id"] == "d41d8cd98f00b204e9800998ecf8427e"
    )  # k6's root group: md5("")
    checks = {c["name"]: (c["passes"], c["fails"]) for c in data["root_group"]["checks"]}
    assert checks == {f"{SCAN} is valid": (270, 30), "fn:stripe-webhook is processed": (20, 0)}
    assert data["state"]["testRunDurationMs"] == 32_000
    dur = data["metrics"]["http_req_duration"]
    assert dur["type"] == "trend" and dur["contains"] == "time"
    assert set(dur["values"]) == {"avg", "min", "med", "max", "p(90)", "p(95)"}
    sub = data["metrics"][f"http_req_duration{{target:{SCAN}}}"]
    assert sub["thresholds"] == {"p(95)<200": {"ok": True}, "p(95)<40 over 5s": {"ok": False}}
    assert data["metrics"]["http_req_failed"]["values"] == {"rate": 0.0, "passes": 0, "fails": 320}
    assert data["metrics"]["http_req_failed"]["thresholds"] == {"rate==0": {"ok": True}}
    assert data["metrics"]["http_reqs"]["values"] == {"count": 320.0, "rate": 10.0}
    assert data["metrics"]["checks"]["thresholds"] == {"rate>0.99": {"ok": False}}
    assert data["metrics"]["data_sent"]["contains"] == "data"
    assert "realtime_update_latency" not in data["metrics"]  # no samples, no threshold: not shown
    g = data["gaterush"]
    assert g["passed"] is False and g["runs"] == ["r1"]
    windowed = next(v for v in g["verdicts"] if "over" in v["threshold"])
    assert windowed["window"]["width_s"] == 5.0 and windowed["window"]["failed"] > 0
    assert summ.thresholds_of_summary(data).count(("http_req_failed", "rate==0", True)) == 1


def test_empty_rate_threshold_is_json_safe_and_marked() -> None:
    mt = metrics_of([row(0)])
    v = th.evaluate(mt, th.parse_mapping({"http_req_failed{target:rpc:none}": ["rate==0"]}))
    data = summ.to_json(mt, v)
    json.dumps(data, allow_nan=False)
    assert data["gaterush"]["verdicts"][0]["observed"] is None
    assert "(no samples)" in summ.render(mt, v)
