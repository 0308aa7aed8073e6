"""The replay judges itself: a sender that fell behind is reported as such, never as a slow target."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from judge import fidelity as fid
from judge import metrics as m
from judge import report as rep
from judge import summary as summ
from judge import thresholds as th
from judge.resultlog import DROPPED_EVENTS, ResultHeader, ResultRow, ResultWriter
from tests.judge.test_metrics import row
from tests.judge.test_report import cli

SCAN = "rpc:scan_ticket_atomic"


def write_run(path: Path, lag_us: int, *, drops: int = 0, sender: dict | None = None) -> Path:
    """A result file of 1,000 scans answered in 5 ms, each sent lag_us after its schedule."""
    h = ResultHeader(run_id="r", target_url="http://127.0.0.1:1", trace_path="t.grt",
                     thresholds={"http_req_duration": ["p(95)<200"]})  # fmt: skip
    with ResultWriter(path, h) as w:
        for i in range(1000):
            t = i * 1000
            w.add(ResultRow(i, SCAN, "scan", f"a:{i}", t, t + lag_us, t + lag_us + 5000, 200, None,
                            100, 50, "valid", "valid"))  # fmt: skip
        for i in range(drops):
            t = 1_000_000 + i
            w.add(ResultRow(5000 + i, SCAN, "scan", "a:x", t, t, t, 0, "dropped: max-in-flight 1 reached",
                            0, 0, None, "valid", DROPPED_EVENTS))  # fmt: skip
        w.close(end_us=1_100_000, sender=sender)
    return path


def judge(path: Path) -> rep.Judgement:
    return rep.judge_run(rep.load([path]))


def test_a_punctual_replay_is_faithful(tmp_path: Path) -> None:
    j = judge(write_run(tmp_path / "ok.parquet", 200, sender={"cpu_s": 0.3, "wall_s": 1.1}))
    assert j.passed and j.fidelity.ok
    line = summ.fidelity_line(j.fidelity)
    assert line.startswith("  ✓ replay faithful: schedule_lag p(99)=200.00µs")
    assert "sender CPU 27% of a core" in line


def test_a_sender_that_fell_behind_is_not_a_slow_target(tmp_path: Path) -> None:
    # every request 40 ms late, answered in 5 ms: the target's threshold holds, the replay does not
    j = judge(write_run(tmp_path / "late.parquet", 40_000, sender={"cpu_s": 1.08, "wall_s": 1.1}))
    target = [v for v in j.verdicts if not fid.is_fidelity(v)]
    assert all(v.ok for v in target)
    assert not j.fidelity.ok and not j.passed
    line = summ.fidelity_line(j.fidelity)
    assert "replay NOT faithful" in line and "breaks 'p(99)<10'" in line
    assert "ran out of CPU" in line and "lower --speed" in line


def test_overload_drops_make_a_replay_unfaithful_and_rate_caps_do_not(tmp_path: Path) -> None:
    j = judge(write_run(tmp_path / "drop.parquet", 100, drops=3))
    assert not j.fidelity.ok and j.fidelity.overload_drops == 3
    assert "3 events dropped with --max-in-flight full" in summ.fidelity_line(j.fidelity)
    capped = m.table_from_rows(
        [row(0), row(1, metric=DROPPED_EVENTS, status=0, error="dropped: rate cap 5/s on x")]
    )
    mt = m.from_table(capped)
    f = fid.assess(capped, th.evaluate(mt, th.with_defaults(())))
    assert f.ok and f.cap_drops == 1


def test_report_exits_99_names_the_sender_and_the_limit_can_be_moved(tmp_path: Path) -> None:
    res = write_run(tmp_path / "late.parquet", 40_000)
    js = tmp_path / "s.json"
    r = CliRunner().invoke(cli(), ["report", str(res), "--summary-json", str(js)])
    assert r.exit_code == 99
    assert "✓ all 2 thresholds held" in r.output and "✗ replay NOT faithful" in r.output
    data = json.loads(js.read_text())["gaterush"]
    assert data["passed"] is False and data["fidelity"]["ok"] is False
    r = CliRunner().invoke(cli(), ["report", str(res), "--max-schedule-lag", "100"])
    assert r.exit_code == 0 and "✓ replay faithful" in r.output
    # a schedule_lag threshold of the user's own replaces the default too
    r = CliRunner().invoke(
        cli(), ["report", str(res), "--threshold", "schedule_lag=p(99)<50", "-q"]
    )
    assert r.exit_code == 0
