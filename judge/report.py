"""Re-judge result files and write one self-contained HTML page: plots, thresholds, summary.

The page fetches nothing: charts are inline SVG drawn here (polylines on a fixed grid, no script,
no web fonts, no external CSS), so it renders the same offline, in CI artefacts and in mail.
Several result files (shards of one run on several workers or hosts, or several runs) merge into
one report; their times are rebased on the earliest file's start (see judge.metrics.merge_tables),
and a realtime message is matched only with a write of its own run (the header's ``run_id``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from judge import metrics as m
from judge import summary as summ
from judge import thresholds as th
from judge.fidelity import Fidelity, assess, clock_summary
from judge.resultlog import ResultHeader, ResultLogError, read_results, result_files
from traces.outputs import write_text

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


class ReportError(ValueError):
    """Results that cannot be reported on (unreadable, or shards that do not belong together)."""


@dataclass(frozen=True, slots=True)
class Results:
    """One or more result files read and merged: their headers and one table on a common clock."""

    paths: tuple[str, ...]
    headers: tuple[ResultHeader, ...]
    table: pa.Table
    start_unix_us: int

    @property
    def duration_s(self) -> float | None:
        """The run's length from the trailers (None when a shard did not close cleanly)."""
        ends = []
        for h in self.headers:
            if h.end_us is None:
                return None
            ends.append(h.start_unix_us - self.start_unix_us + h.end_us)
        return max(ends) / 1e6 if ends else None

    def thresholds(self) -> tuple[th.Threshold, ...]:
        """The thresholds the run was judged with: every header's, each once (the stricter of two
        alike), in order; DEFAULT_THRESHOLDS are added by judge_results."""
        return th.parse_mapping(th.merge_sets(h.thresholds or {} for h in self.headers))


def load(paths: Sequence[str | Path]) -> Results:
    """Read result files (.grr or .parquet; running or truncated ones too) and merge them."""
    if not paths:
        raise ReportError("no result files given")
    parts = []
    headers = []
    try:
        paths = result_files(list(paths))
    except ResultLogError as e:
        raise ReportError(str(e)) from e
    for p in paths:
        try:
            header, table = read_results(p)
        except ResultLogError as e:
            raise ReportError(str(e)) from e
        except OSError as e:
            raise ReportError(f"{p}: {e.strerror or e}") from e
        headers.append(header)
        parts.append((table, header.scenario, header.start_unix_us))
    # several runs may be reported together: each run's realtime messages are matched within it
    table, base = m.merge_tables(parts, [h.run_id for h in headers])
    return Results(tuple(str(p) for p in paths), tuple(headers), table, base)


def in_memory(path: str | Path, header: ResultHeader, table: pa.Table) -> Results:
    """The Results of one result log already in memory (what replay just wrote), as load reads it."""
    merged, base = m.merge_tables([(table, header.scenario, header.start_unix_us)])
    return Results((str(path),), (header,), merged, base)


def compute(results: Results) -> m.Metrics:
    """The metrics of merged results."""
    return m.from_table(results.table, duration_s=results.duration_s)


# --- SVG charts ---------------------------------------------------------------------------------


def nice_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 2.5, 5 x 10^k steps)."""
    if not math.isfinite(hi) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 10))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _fmt_tick(v: float, unit: str) -> str:
    if unit == "s":
        if v < 60 or v % 60:
            return f"{v:g}s"
        return f"{v / 60:g}m" if v < 3600 or v % 3600 else f"{v / 3600:g}h"
    if unit == "ms":
        return f"{v / 1000:g}s" if v >= 1000 else f"{v:g}ms"
    return f"{v:g}"


@dataclass(frozen=True, slots=True)
class Line:
    """One series of a chart: y per x (NaN leaves a gap), drawn solid or dashed."""

    label: str
    y: np.ndarray
    color: str
    dashed: bool = False


def line_chart(
    title: str,
    x: np.ndarray,
    lines: Sequence[Line],
    unit: str,
    *,
    width: int = 760,
    height: int = 240,
    x_end: float | None = None,
    x_unit: str = "s",
) -> str:
    """An inline SVG line chart with axes, grid, ticks and a legend (x in x_unit, up to x_end)."""
    left, right, top, bottom = 64, 16, 46, 34
    pw, ph = width - left - right, height - top - bottom
    x = np.asarray(x, dtype=float)
    x_hi = x_end if x_end else (float(x.max()) if len(x) else 1.0)
    ys = [ln.y[np.isfinite(ln.y)] for ln in lines]
    y_hi = max([float(v.max()) for v in ys if len(v)] + [0.0])
    x_max = x_hi if x_hi > 0 else 1.0
    xt = [v for v in nice_ticks(0.0, x_max) if v <= x_max * (1 + 1e-9)]
    yt = nice_ticks(0.0, y_hi if y_hi > 0 else 1.0, 5)
    y_max = yt[-1]

    def px(v: float) -> float:
        return left + pw * v / x_max

    def py(v: float) -> float:
        return top + ph - ph * v / y_max

    out = [
        f'<svg class="chart" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        f' data-title="{html.escape(title)}" data-series="{len(lines)}">',
        f"<title>{html.escape(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="12" y="18" class="ct">{html.escape(title)}</text>',
    ]
    for v in yt:
        y = py(v)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{_fmt_tick(v, unit)}</text>'
        )
    for v in xt:
        xx = px(v)
        out.append(
            f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{top + ph}" y2="{top + ph + 4}" class="axis"/>'
        )
        out.append(
            f'<text x="{xx:.1f}" y="{top + ph + 18}" text-anchor="middle" class="tick">{_fmt_tick(v, x_unit)}</text>'
        )
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" class="axis"/>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}" class="axis"/>')
    lx = left
    for ln in lines:
        dash = ' stroke-dasharray="5 3"' if ln.dashed else ""
        out.append(f'<g class="series" data-label="{html.escape(ln.label)}">')
        finite = np.isfinite(ln.y)
        # one polyline per run of finite points (a gap where nothing was measured)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], finite.astype(np.int8), [0]))))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            pts = " ".join(f"{px(float(x[i])):.1f},{py(float(ln.y[i])):.1f}" for i in range(a, b))
            if b - a == 1:  # a single point: draw a dot so it is visible
                out.append(
                    f'<circle cx="{px(float(x[a])):.1f}" cy="{py(float(ln.y[a])):.1f}" r="2" fill="{ln.color}"/>'
                )
            else:
                out.append(
                    f'<polyline points="{pts}" fill="none" stroke="{ln.color}" stroke-width="1.6"{dash}/>'
                )
        out.append("</g>")
        out.append(
            f'<line x1="{lx}" x2="{lx + 18}" y1="30" y2="30" stroke="{ln.color}" stroke-width="2"{dash}/>'
        )
        out.append(f'<text x="{lx + 22}" y="34" class="lg">{html.escape(ln.label)}</text>')
        lx += 30 + 7 * len(ln.label)
    out.append(f'<text x="12" y="{top + ph / 2:.0f}" class="tick" transform="rotate(-90 12 {top + ph / 2:.0f})"'
               f' text-anchor="middle">{html.escape(unit)}</text>')  # fmt: skip
    out.append("</svg>")
    return "\n".join(out)


# --- the page -----------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 -apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1600px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:18px 0 6px}
.verdict{display:inline-block;padding:4px 10px;border-radius:4px;font-weight:600;color:#fff}
.ok{background:#2e7d32} .fail{background:#c62828}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}
th{background:#f5f5f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:12px}
svg.chart{border:1px solid #e0e0e0;background:#fff}
svg .grid{stroke:#eee} svg .axis{stroke:#888} svg .tick{font-size:11px;fill:#555}
svg .ct{font-size:13px;font-weight:600;fill:#222} svg .lg{font-size:11px;fill:#333}
pre{background:#f7f7f7;padding:12px;overflow-x:auto;font-size:12px}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;margin:6px 0} dt{color:#666}
"""


def _threshold_table(verdicts: Sequence[th.Verdict]) -> str:
    if not verdicts:
        return "<p>No thresholds were set.</p>"
    rows = []
    for v in verdicts:
        info = m.METRICS[v.threshold.selector.metric]
        e = v.threshold.expression
        if e.method == "rate" and info.type == m.RATE and not math.isnan(v.observed):
            obs = f"{v.observed * 100:.2f}%"
        elif e.method in ("count", "rate"):
            obs = f"{v.observed:.6g}"
        else:
            obs = summ.format_value(info.contains, v.observed)
        where = ""
        if v.window is not None and v.window.judged:
            w = v.window
            where = f"{summ.format_time(w.start_s * 1000)} to {summ.format_time(w.end_s * 1000)}"
            if w.failed:
                where += f"; failed in {w.failed} of {w.judged} windows"
        if v.empty:
            where = (where + "; " if where else "") + "no samples"
        rows.append(
            f'<tr class="{"ok" if v.ok else "fail"}-row"><td>{"✓" if v.ok else "✗"}</td>'
            f"<td>{html.escape(v.threshold.selector.name)}</td><td><code>{html.escape(e.source)}</code></td>"
            f'<td class="num">{html.escape(obs)}</td><td class="num">{v.samples}</td><td>{html.escape(where)}</td></tr>'
        )
    head = "<tr><th></th><th>metric</th><th>threshold</th><th>observed</th><th>samples</th><th>worst window</th></tr>"
    return f'<table class="thresholds">{head}{"".join(rows)}</table>'


def _failed_group_table(metrics: m.Metrics) -> str:
    """The failed group checks and the requests each holds (judge.checks), or nothing."""
    if not metrics.failed_group_count:
        return ""
    rows = []
    for g in metrics.failed_groups:
        reqs = "<br>".join(
            html.escape(f"#{seq}: expected {e}, got {o or 'no answer'}") for seq, e, o in g.requests
        )
        rows.append(
            f'<tr class="fail-row"><td>✗</td><td>{html.escape(g.check)}</td>'
            f"<td><code>{html.escape(g.group)}</code></td><td>{reqs}</td></tr>"
        )
    more = metrics.failed_group_count - len(metrics.failed_groups)
    tail = f"<p>... and {more} more failed groups.</p>" if more > 0 else ""
    head = "<tr><th></th><th>check</th><th>group</th><th>its requests (trace seq)</th></tr>"
    return (
        f"<h2>Failed group checks ({metrics.failed_group_count})</h2>"
        f'<table class="thresholds">{head}{"".join(rows)}</table>{tail}'
    )


def _meta(results: Results | None, metrics: m.Metrics) -> str:
    items: list[tuple[str, str]] = []
    if results is not None:
        hs = results.headers
        items.append(("run", ", ".join(sorted({h.run_id for h in hs}))))
        items.append(("target", ", ".join(sorted({h.target_url for h in hs}))))
        items.append(("trace", ", ".join(sorted({h.trace_path for h in hs}))))
        scen = sorted({h.scenario for h in hs if h.scenario})
        if scen:
            items.append(("scenario", ", ".join(scen)))
        items.append(("speed", ", ".join(sorted({f"{h.speed:g}x" for h in hs}))))
        items.append(("result files", f"{len(hs)} ({sum(h.workers for h in hs[:1])} workers)"))
        if not all(h.complete for h in hs):
            items.append(
                (
                    "note",
                    "a result file did not close cleanly (the run was interrupted): rows so far",
                )
            )
    items.append(("duration", summ.format_time(metrics.duration_s * 1000)))
    items.append(("requests", f"{len(metrics.get('http_reqs'))}"))
    body = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in items)
    return f"<dl>{body}</dl>"


def charts(metrics: m.Metrics, step_s: float | None = None) -> str:
    """The plots: an overview across targets, then per target offered load, latency and errors."""
    ts = m.timeseries(metrics, step_s)
    if not ts.groups:
        return "<p>No requests in these results.</p>"
    x = ts.start_s + ts.step_s / 2
    end = float(ts.start_s[-1] + ts.step_s)
    has = ts.offered > 0
    out = ["<h2>Overview</h2>", '<div class="charts">']
    out.append(
        line_chart(
            "Offered load per target (requests scheduled per second)",
            x,
            [Line(g, ts.offered[i], PALETTE[i % len(PALETTE)]) for i, g in enumerate(ts.groups)],
            "req/s",
            x_end=end,
        )
    )
    out.append(
        line_chart(
            "http_req_duration p(95) per target",
            x,
            [
                Line(
                    g,
                    np.where(has[i], ts.duration_pcts[i, :, 1], np.nan),
                    PALETTE[i % len(PALETTE)],
                )
                for i, g in enumerate(ts.groups)
            ],
            "ms",
            x_end=end,
        )
    )
    out.append("</div>")
    for i, g in enumerate(ts.groups):
        gap = has[i]
        out.append(f"<h3>{html.escape(g)}</h3>")
        out.append('<div class="charts">')
        out.append(
            line_chart(
                f"{g}: offered load",
                x,
                [Line("scheduled req/s", ts.offered[i], PALETTE[0])],
                "req/s",
                width=520,
                x_end=end,
            )
        )
        lat = [
            Line(f"p({p:g})", np.where(gap, ts.duration_pcts[i, :, k], np.nan), PALETTE[k])
            for k, p in enumerate(ts.pcts)
        ]
        lat.append(
            Line("latency p(99)", np.where(gap, ts.latency_p99[i], np.nan), PALETTE[4], dashed=True)
        )
        out.append(
            line_chart(f"{g}: http_req_duration percentiles", x, lat, "ms", width=520, x_end=end)
        )
        out.append(
            line_chart(
                f"{g}: errors",
                x,
                [Line("failed req/s", ts.errors[i], PALETTE[1])],
                "req/s",
                width=520,
                x_end=end,
            )
        )
        out.append("</div>")
    out.append(
        f"<p>Buckets of {summ.format_time(ts.step_s * 1000)} by scheduled time. Dashed: latency "
        "(completed − scheduled), which includes any delay in sending.</p>"
    )
    return "\n".join(out)


def render_html(
    metrics: m.Metrics,
    verdicts: Sequence[th.Verdict],
    *,
    results: Results | None = None,
    title: str = "gaterush report",
    step_s: float | None = None,
    fidelity: Fidelity | None = None,
) -> str:
    """The whole self-contained HTML page."""
    ok = all(v.ok for v in verdicts)
    n_fail = sum(not v.ok for v in verdicts)
    badge = (
        f'<span class="verdict ok">✓ all {len(verdicts)} thresholds held</span>'
        if ok
        else f'<span class="verdict fail">✗ {n_fail} of {len(verdicts)} thresholds failed</span>'
    )
    if fidelity is not None:
        cls = "ok" if fidelity.ok else "fail"
        badge += f' <span class="verdict {cls}">{html.escape(summ.fidelity_line(fidelity).strip())}</span>'
    text = summ.render(metrics, verdicts, fidelity=fidelity)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{CSS}</style></head><body>",
            f"<h1>{html.escape(title)}</h1>",
            badge if verdicts else "",
            _meta(results, metrics),
            "<h2>Thresholds</h2>",
            _threshold_table(verdicts),
            _failed_group_table(metrics),
            charts(metrics, step_s),
            "<h2>Summary</h2>",
            f"<pre>{html.escape(text)}</pre>",
            "</body></html>",
        ]
    )


def judge_results(
    results: Results,
    thresholds: Sequence[th.Threshold] | None = None,
    max_schedule_lag_ms: float | None = None,
) -> tuple[m.Metrics, list[th.Verdict]]:
    """Metrics and verdicts of results: `thresholds` replace the run's own when given; the
    defaults (thresholds.DEFAULT_THRESHOLDS) apply where neither covers their metric."""
    ts = results.thresholds() if thresholds is None else tuple(thresholds)
    defaults = th.with_defaults(ts, max_schedule_lag_ms)
    return th.judge_table(results.table, defaults, duration_s=results.duration_s)


@dataclass(frozen=True, slots=True, eq=False)
class Judgement:
    """A run judged: its metrics, the thresholds' verdicts, and the replay's own fidelity."""

    metrics: m.Metrics
    verdicts: list[th.Verdict]
    fidelity: Fidelity

    @property
    def passed(self) -> bool:
        """Every threshold held and the replay was faithful (exit 0)."""
        return th.passed(self.verdicts) and self.fidelity.ok


def judge_run(
    results: Results,
    thresholds: Sequence[th.Threshold] | None = None,
    max_schedule_lag_ms: float | None = None,
) -> Judgement:
    """Judge results the one way replay, report and demo do: judge_results plus fidelity."""
    mt, verdicts = judge_results(results, thresholds, max_schedule_lag_ms)
    return Judgement(mt, verdicts, assess(results.table, verdicts, results.headers))


def summary_extra(results: Results) -> dict[str, Any]:
    """Run facts for the summary JSON's `gaterush` key (never a key or a secret: headers hold none)."""
    hs = results.headers
    return {
        "runs": sorted({h.run_id for h in hs}),
        "targets": sorted({h.target_url for h in hs}),
        "scenarios": sorted({h.scenario for h in hs if h.scenario}),
        "result_files": list(results.paths),
        "complete": all(h.complete for h in hs),
        "clocks": [c for h in hs for c in h.clocks],  # each shard's offset against the client
        "clock_summary": clock_summary([c for h in hs for c in h.clocks]),
        "lost_shards": [x for h in hs for x in h.lost],
    }


def write_html(path: str | Path, page: str) -> None:
    """Write a page (UTF-8), atomically; OutputError naming the file if it cannot be written."""
    write_text(path, page, "HTML report")
