"""gaterush report: merging shards, re-judging, the self-contained HTML page (rendered in Chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from judge import report as rep
from judge.cli import report_cmd
from judge.resultlog import ResultHeader, ResultRow, ResultWriter

SCAN = "rpc:scan_ticket_atomic"
HOOK = "fn:stripe-webhook"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def write_shard(
    path: Path, worker: int, n: int = 600, stall: tuple[float, float] | None = None, **header
) -> Path:
    """A result file of one worker: n requests over 6 s, half scans half webhooks."""
    h = ResultHeader(
        run_id=header.pop("run_id", "run-1"),
        target_url="http://127.0.0.1:54321",
        trace_path="day.parquet",
        scenario=header.pop("scenario", "event-day"),
        thresholds=header.pop(
            "thresholds", {"http_req_duration": ["p(95)<200"], "http_req_failed": ["rate<0.1"]}
        ),
        start_unix_us=header.pop("start_unix_us", 1_700_000_000_000_000),
        workers=2,
        **header,
    )
    with ResultWriter(path, h) as w:
        for i in range(n):
            t = i * 10_000
            slow = stall is not None and stall[0] * 1e6 <= t < stall[1] * 1e6
            d = 400_000 if slow else 5_000 + (i % 7) * 1000
            target = SCAN if i % 2 else HOOK
            status = 500 if i % 50 == 0 else 200
            w.add(ResultRow(worker * 100_000 + i, target, "scan" if i % 2 else "webhook", f"a:{i % 9}",
                            t, t + 50, t + 50 + d, status, None, 300, 120, "valid", "valid", None))  # fmt: skip
        w.add(
            ResultRow(
                9_999_999,
                "dashboard",
                "view",
                "viewer:1",
                0,
                0,
                900_000,
                200,
                None,
                0,
                0,
                None,
                None,
                "dashboard_load",
            )
        )
    return path


def cli() -> click.Group:
    @click.group()
    def g() -> None:
        pass

    g.add_command(report_cmd)
    return g


def test_shards_merge_into_one_report(tmp_path) -> None:
    a = write_shard(tmp_path / "w0.grr", 0)
    b = write_shard(tmp_path / "w1.parquet", 1, start_unix_us=1_700_000_000_000_000 + 2_000_000)
    loaded = rep.load([a, b])
    assert loaded.table.num_rows == 1202
    assert loaded.start_unix_us == 1_700_000_000_000_000
    mt = rep.compute(loaded)
    assert mt.value("http_reqs", "count") == 1200
    assert mt.value("dashboard_load", "max") == 900.0
    # the second worker started 2 s later: its rows sit 2 s later on the merged clock
    assert mt.get("http_reqs").t_us.max() == 2_000_000 + 599 * 10_000
    # both shards carry the same thresholds: judged once each
    assert [t.name for t in loaded.thresholds()] == [
        "http_req_duration: p(95)<200",
        "http_req_failed: rate<0.1",
    ]


def test_report_cli_rejudges_and_exits_like_k6(tmp_path) -> None:
    res = write_shard(tmp_path / "r.parquet", 0, stall=(2.0, 2.2))
    html_out, js_out = tmp_path / "r.html", tmp_path / "s.json"
    r = CliRunner().invoke(
        cli(), ["report", str(res), "--html", str(html_out), "--summary-json", str(js_out)]
    )
    assert r.exit_code == 0, r.output  # the run's own thresholds hold (p95 over all is fine)
    assert "✓ all 2 thresholds held" in r.output
    assert html_out.stat().st_size > 10_000
    summary = json.loads(js_out.read_text())
    assert summary["metrics"]["http_req_duration"]["thresholds"] == {"p(95)<200": {"ok": True}}
    assert summary["gaterush"]["runs"] == ["run-1"]
    # ...but the 0.2 s stall fails a windowed threshold given on the command line
    r = CliRunner().invoke(
        cli(), ["report", str(res), "-q", "--threshold", "http_req_duration=p(95)<200 over 1s"]
    )
    assert r.exit_code == 99 and r.output == ""
    r = CliRunner().invoke(
        cli(),
        [
            "report",
            str(res),
            "--threshold",
            f"http_req_duration{{target:{SCAN}}}=p(95)<200 over 1s",
        ],
    )
    assert r.exit_code == 99
    assert "✗ 'p(95)<200 over 1s'" in r.output
    tfile = tmp_path / "t.toml"
    tfile.write_text('[thresholds]\nhttp_reqs = ["count>=600"]\nhttp_req_failed = ["rate<0.1"]\n')
    r = CliRunner().invoke(cli(), ["report", str(res), "--thresholds", str(tfile)])
    assert r.exit_code == 0 and "'count>=600'" in r.output and "p(95)<200" not in r.output
    # the plan's http_req_failed rate==0 applies unless the thresholds given replace it: 2% failed
    tfile.write_text('[thresholds]\nhttp_reqs = ["count>=600"]\n')
    r = CliRunner().invoke(cli(), ["report", str(res), "--thresholds", str(tfile)])
    assert r.exit_code == 99 and "thresholds failed: http_req_failed 'rate==0'" in r.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["report", "missing.parquet"], "missing.parquet: no such result file"),
        (["report", "{res}", "--threshold", "http_req_duration=p(95)<<1"], "'p(95)<<1'"),
        (
            ["report", "{res}", "--threshold", "http_req_durations=p(95)<1"],
            "unknown metric 'http_req_durations'",
        ),
        (["report", "{res}", "--thresholds", "missing.toml"], "cannot read thresholds file"),
    ],
)
def test_report_bad_input_exits_104(tmp_path, args, fragment) -> None:
    res = write_shard(tmp_path / "r.grr", 0, n=10)
    r = CliRunner().invoke(cli(), [a.format(res=res) for a in args])
    assert r.exit_code == 104, r.output
    assert fragment in r.output and "Traceback" not in r.output


def test_report_cli_without_results_is_a_usage_error() -> None:
    assert CliRunner().invoke(cli(), ["report"]).exit_code == 2


def test_html_is_self_contained_and_secret_free(tmp_path, monkeypatch) -> None:
    secrets = {
        "STRIPE_TEST_SK": "sk_test_51SECRETsecretSECRET",
        "STRIPE_WEBHOOK_SECRET": "whsec_SECRETsecret",
        "SUPABASE_ANON_KEY": "eyJhbGciOi.SECRETpayload.sig",
        "SUPABASE_SERVICE_ROLE_KEY": "eyJhbGciOi.SERVICEpayload.sig",
    }
    for k, v in secrets.items():
        monkeypatch.setenv(k, v)
    res = write_shard(tmp_path / "r.grr", 0)
    out, js = tmp_path / "r.html", tmp_path / "s.json"
    r = CliRunner().invoke(
        cli(), ["report", str(res), "--html", str(out), "--summary-json", str(js)]
    )
    page = out.read_text()
    for v in secrets.values():
        assert v not in page and v not in js.read_text() and v not in r.output
    # nothing to fetch: no scripts, stylesheets, images, fonts or imports
    assert not re.search(r"<script|<link|<img|<iframe|@import|url\(|\b(src|href)\s*=", page, re.I)
    assert page.count('<svg class="chart"') == 2 + 3 * 2  # overview + three per target
    assert "http_req_duration" in page and "<table" in page


def test_charts_leave_gaps_where_nothing_was_sent() -> None:
    x = np.arange(5.0)
    svg = rep.line_chart(
        "t", x, [rep.Line("a", np.array([1.0, 2.0, np.nan, 3.0, 4.0]), "#000")], "ms"
    )
    assert svg.count("<polyline") == 2
    svg = rep.line_chart(
        "t", x, [rep.Line("a", np.array([np.nan, 2.0, np.nan, np.nan, np.nan]), "#000")], "ms"
    )
    assert svg.count("<polyline") == 0 and svg.count("<circle") == 1
    assert rep.nice_ticks(0, 9.3) == [0, 2, 4, 6, 8, 10]


MEASURE = """
<script>
window.addEventListener('load', () => {
  const out = [...document.querySelectorAll('svg.chart')].map(svg => {
    const r = svg.getBoundingClientRect();
    const lines = [...svg.querySelectorAll('polyline')].map(p => {
      const b = p.getBBox(); return [b.width, b.height, p.points.numberOfItems];
    });
    return {title: svg.dataset.title, w: r.width, h: r.height, lines};
  });
  const pre = document.createElement('pre');
  pre.id = 'measured';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--no-first-run", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


@pytest.mark.browser
@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)"
)
def test_plots_render_in_headless_chromium(tmp_path) -> None:
    res = write_shard(tmp_path / "r.grr", 0, stall=(2.0, 2.2))
    loaded = rep.load([res])
    mt, verdicts = rep.judge_results(loaded)
    page = rep.render_html(mt, verdicts, results=loaded)
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", MEASURE + "</body>"))
    r = chromium(["--dump-dom", probe.as_uri()], tmp_path)
    m = re.search(r'<pre id="measured">(.*?)</pre>', r.stdout, re.S)
    assert m, f"no measurement in the DOM: {r.stderr[-500:]}"
    charts = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert len(charts) == 8
    for c in charts:
        assert c["w"] > 300 and c["h"] > 150, c["title"]
        assert c["lines"], f"{c['title']}: no line drawn"
        assert all(w > 100 and pts > 10 for w, _, pts in c["lines"]), c["title"]
    # the stall shows: some latency line has real height
    assert any(h > 50 for c in charts if "percentiles" in c["title"] for _, h, _ in c["lines"])

    # and the page is not blank: its screenshot carries far more than an empty page's
    shot, blank_shot = tmp_path / "shot.png", tmp_path / "blank.png"
    (tmp_path / "report.html").write_text(page)
    (tmp_path / "blank.html").write_text("<!DOCTYPE html><html><body></body></html>")
    chromium(
        ["--window-size=1200,1600", f"--screenshot={shot}", (tmp_path / "report.html").as_uri()],
        tmp_path,
    )
    chromium(
        [
            "--window-size=1200,1600",
            f"--screenshot={blank_shot}",
            (tmp_path / "blank.html").as_uri(),
        ],
        tmp_path,
    )
    assert shot.exists() and blank_shot.exists()
    assert shot.stat().st_size > 10 * blank_shot.stat().st_size
