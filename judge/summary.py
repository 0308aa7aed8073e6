"""The end-of-run summary: k6's terminal shape, and k6's handleSummary JSON for `--summary-json`.

Terminal (k6 v1's layout, legacy metric lines)::

      █ THRESHOLDS

        http_req_duration{target:rpc:scan_ticket_atomic}
        ✓ 'p(95)<200' p(95)=12.5ms

      █ TOTAL RESULTS

        checks.........................: 99.50% 995 out of 1000
        ✓ rpc:scan_ticket_atomic is valid
        ✗ rpc:scan_ticket_atomic is already_scanned
         ↳  90% — ✓ 9 / ✗ 1

        HTTP
        http_req_duration..............: avg=10.2ms min=1.1ms med=9.8ms max=210ms p(90)=15ms p(95)=20ms
          { target:rpc:scan_ticket_atomic }: avg=...
        ...

JSON: ``{"root_group", "options", "state", "metrics": {"<name>": {"type", "contains", "values",
"thresholds": {"<expr>": {"ok": bool}}}}}`` as k6 passes to handleSummary, plus a ``gaterush`` key
with each verdict's observed value and worst window.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from judge.fidelity import Fidelity, is_fidelity
from judge.metrics import COUNTER, DATA, METRICS, RATE, TIME, TREND, Metrics, Samples, trend_stats
from judge.thresholds import Threshold, Verdict

TREND_STATS = ("avg", "min", "med", "max", "p(90)", "p(95)")
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("HTTP", ("http_req_duration", "http_req_failed", "http_reqs")),
    ("REPLAY", ("latency", "schedule_lag", "iterations", "dropped_events")),
    ("DASHBOARD", ("dashboard_load", "realtime_update_latency", "realtime_join")),
    ("NETWORK", ("data_received", "data_sent")),
)
NAME_WIDTH = 31  # k6 pads names with dots to this column


def format_time(ms: float) -> str:
    """A duration in k6's style: 850µs, 12.34ms, 1.52s, 2m3.4s."""
    if math.isnan(ms):
        return "n/a"
    if ms == 0:
        return "0s"
    if abs(ms) < 1:
        return f"{ms * 1000:.2f}µs"
    if abs(ms) < 1000:
        return f"{ms:.2f}ms"
    s = ms / 1000
    if abs(s) < 60:
        return f"{s:.2f}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{int(m)}m{s:.1f}s"
    h, m = divmod(m, 60)
    return f"{int(h)}h{int(m)}m{s:.0f}s"


def format_bytes(n: float) -> str:
    """A byte count in k6's (decimal) style: 118 kB, 3.9 kB, 13 MB."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            v = n / size
            return f"{v:.1f} {unit}" if v < 10 else f"{v:.0f} {unit}"
    return f"{n:.0f} B"


def format_value(info_contains: str, v: float) -> str:
    """One value of a metric in its unit (time in ms, data in bytes, else a plain number)."""
    if info_contains == TIME:
        return format_time(v)
    if info_contains == DATA:
        return format_bytes(v)
    if math.isnan(v):
        return "n/a"
    return f"{v:.6g}"


def _dots(label: str, indent: int = 4, width: int = NAME_WIDTH) -> str:
    pad = width - len(label) - (indent - 4)
    return " " * indent + label + ("." * pad if pad > 1 else " ") + ": "


def _trend_line(values: np.ndarray) -> str:
    st = trend_stats(values)
    return " ".join(f"{k}={format_time(st[k])}" for k in TREND_STATS)


def _metric_line(s: Samples, duration_s: float) -> str:
    info = s.info
    if info.type == TREND:
        return _trend_line(s.values)
    if info.type == RATE:
        n = len(s)
        k = int(np.count_nonzero(s.values))
        rate = k / n if n else 0.0
        return f"{rate * 100:.2f}% {k} out of {n}"
    total = float(s.values.sum())
    per_s = total / duration_s if duration_s > 0 else 0.0
    if info.contains == DATA:
        return f"{format_bytes(total)} {format_bytes(per_s)}/s"
    return f"{total:.0f} {per_s:.6g}/s"


def _verdict_line(v: Verdict) -> str:
    e = v.threshold.expression
    mark = "✓" if v.ok else "✗"
    contains = METRICS[v.threshold.selector.metric].contains
    shown = (
        format_value(contains, v.observed)
        if e.method not in ("rate", "count")
        else f"{v.observed:.6g}"
    )
    if (
        e.method == "rate"
        and METRICS[v.threshold.selector.metric].type == RATE
        and not math.isnan(v.observed)
    ):
        shown = f"{v.observed * 100:.2f}%"
    line = f"    {mark} '{e.source}' {e.key}={shown}"
    if v.window is not None and v.window.judged:
        w = v.window
        if w.failed:
            line += (
                f"  worst window {format_time(w.start_s * 1000)}–{format_time(w.end_s * 1000)};"
                f" failed in {w.failed} of {w.judged} windows"
                f" ({format_time(w.failing_from_s * 1000)}–{format_time(w.failing_to_s * 1000)})"
            )
        else:
            line += f"  (worst of {w.judged} windows at {format_time(w.start_s * 1000)})"
    if v.empty:
        line += "  (no samples)"
    return line


def render(
    metrics: Metrics,
    verdicts: Sequence[Verdict] = (),
    *,
    by_target: bool = True,
    title: str | None = None,
    fidelity: Fidelity | None = None,
) -> str:
    """The terminal summary text (ends with a newline); `fidelity` adds the replay's own verdict."""
    out: list[str] = []
    if title:
        out += [f"  {title}", ""]
    if verdicts:
        out += ["  █ THRESHOLDS", ""]
        by_sel: dict[str, list[Verdict]] = {}
        for v in verdicts:
            by_sel.setdefault(v.threshold.selector.name, []).append(v)
        for sel, vs in by_sel.items():
            out.append(f"    {sel}")
            out += [_verdict_line(v) for v in vs]
            out.append("")
    out += ["  █ TOTAL RESULTS", ""]
    width = max([NAME_WIDTH] + [len(t) + 15 for t in metrics.labels("target")])
    checks = metrics.get("checks")
    if len(checks):
        out.append(_dots("checks", 4, width) + _metric_line(checks, metrics.duration_s))
        for name, passes, fails in metrics.checks:
            out.append(f"    {'✓' if fails == 0 else '✗'} {name}")
            if fails:
                pct = math.floor(100 * passes / (passes + fails))
                out.append(f"     ↳  {pct}% — ✓ {passes} / ✗ {fails}")
        out.append("")
    submetrics = {(v.threshold.selector.metric, v.threshold.selector.tags) for v in verdicts}
    for section, names in SECTIONS:
        lines: list[str] = []
        for name in names:
            s = metrics.get(name)
            if len(s) == 0 and not any(n == name for n, _ in submetrics):
                continue
            lines.append(_dots(name, 4, width) + _metric_line(s, metrics.duration_s))
            subs = {tags for n, tags in submetrics if n == name and tags}
            if by_target and name == "http_req_duration":
                subs |= {
                    (("target", t),)
                    for t in metrics.labels("target")
                    if len(s.select({"target": t}))
                }
            for tags in sorted(subs):
                label = "{ " + ", ".join(f"{k}:{v}" for k, v in tags) + " }"
                lines.append(
                    _dots(label, 6, width) + _metric_line(s.select(dict(tags)), metrics.duration_s)
                )
        if lines:
            out += [f"    {section}", *lines, ""]
    if metrics.failed_group_count:
        out += _failed_groups(metrics)
    target = [v for v in verdicts if fidelity is None or not is_fidelity(v)]
    if target:
        failed = [v for v in target if not v.ok]
        if failed:
            names = ", ".join(
                f"{v.threshold.selector.name} '{v.threshold.expression.source}'"
                + (" (no samples)" if v.empty else "")
                for v in failed
            )
            out.append(f"  ✗ {len(failed)} of {len(target)} thresholds failed: {names}")
        else:
            out.append(f"  ✓ all {len(target)} thresholds held")
    if fidelity is not None:
        out.append(fidelity_line(fidelity))
    return "\n".join(out).rstrip() + "\n"


def fidelity_line(f: Fidelity) -> str:
    """The replay's own verdict in one line (judge.fidelity), for the end of the summary."""
    parts = [_fidelity_verdict(v) for v in f.verdicts]
    if f.overload_drops:
        parts.append(f"{f.overload_drops} events dropped with --max-in-flight full")
    if f.cap_drops:
        parts.append(f"{f.cap_drops} held back by --rate-cap (as asked)")
    if f.cpu_share is not None:
        parts.append(f"sender CPU {f.cpu_share * 100:.0f}% of a core")
    if f.clock and f.clock.get("shards", 0) > 1:  # one shard agrees with itself
        parts.append(
            f"{f.clock['shards']} shard clocks within {format_time(f.clock['max_abs_offset_ms'])}"
            f" ±{format_time(f.clock['max_uncertainty_ms'])}"
        )
    facts = "; ".join(parts) if parts else "nothing to judge"
    if f.ok:
        return f"  ✓ replay faithful: {facts}"
    why = (
        "ran out of CPU and fell behind its schedule"
        if f.cpu_saturated
        else "fell behind its schedule"
    )
    return (
        f"  ✗ replay NOT faithful: {facts}. The sender {why}, so the target was not offered the "
        "trace's load on time and latencies may be the sender's: lower --speed, add --workers, "
        "or run the sender on its own machine"
    )


def _fidelity_verdict(v: Verdict) -> str:
    e = v.threshold.expression
    if v.empty:
        seen = "no samples"
    elif e.method in ("count", "rate"):
        seen = f"{e.key}={v.observed:.6g}"
    else:
        seen = f"{e.key}={format_value(METRICS[v.threshold.selector.metric].contains, v.observed)}"
    return f"{v.threshold.selector.name} {seen} ({'within' if v.ok else 'breaks'} '{e.source}')"


def _failed_groups(metrics: Metrics) -> list[str]:
    """The requests each failed group check holds (the first few), so a failure can be traced."""
    out = [f"    failed group checks ({metrics.failed_group_count}):"]
    for g in metrics.failed_groups[:5]:
        reqs = ", ".join(f"#{seq} expected {e} got {o or 'no answer'}" for seq, e, o in g.requests)
        out.append(f"     ↳ {g.group}: {reqs}")
    if metrics.failed_group_count > 5:
        out.append(f"     ↳ ... {metrics.failed_group_count - 5} more (the HTML report lists them)")
    out.append("")
    return out


def _md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()  # k6's group/check ids (not for security)


def _values(s: Samples, duration_s: float) -> dict[str, float]:
    t = s.info.type
    if t == TREND:
        return trend_stats(s.values)
    if t == RATE:
        n = len(s)
        k = int(np.count_nonzero(s.values))
        return {"rate": k / n if n else 0.0, "passes": k, "fails": n - k}
    if t == COUNTER:
        total = float(s.values.sum())
        return {"count": total, "rate": total / duration_s if duration_s > 0 else 0.0}
    return {"value": float(s.values[-1]) if len(s) else 0.0}


def _json_number(v: float) -> float | None:
    return None if isinstance(v, float) and (math.isnan(v) or math.isinf(v)) else v


def _verdict_json(v: Verdict) -> dict[str, Any]:
    d: dict[str, Any] = {
        "metric": v.threshold.selector.name,
        "threshold": v.threshold.expression.source,
        "ok": v.ok,
        "observed": _json_number(v.observed),
        "samples": v.samples,
        "empty": v.empty,
    }
    if v.window is not None:
        w = v.window
        d["window"] = {
            "width_s": v.threshold.expression.window_s,
            "worst_value": _json_number(w.value),
            "worst_start_s": w.start_s,
            "worst_end_s": w.end_s,
            "failed": w.failed,
            "judged": w.judged,
            "failing_from_s": w.failing_from_s,
            "failing_to_s": w.failing_to_s,
        }
    return d


def to_json(
    metrics: Metrics,
    verdicts: Sequence[Verdict] = (),
    *,
    extra: Mapping[str, Any] | None = None,
    fidelity: Fidelity | None = None,
) -> dict[str, Any]:
    """The summary in k6's handleSummary shape (plus a `gaterush` key with verdict details)."""
    out_metrics: dict[str, Any] = {}
    thresholds_of: dict[str, dict[str, dict[str, bool]]] = {}
    for v in verdicts:
        thresholds_of.setdefault(v.threshold.selector.name, {})[v.threshold.expression.source] = {
            "ok": v.ok
        }
    for name, info in METRICS.items():
        s = metrics.get(name)
        if len(s) == 0 and name not in {v.threshold.selector.metric for v in verdicts}:
            continue
        entry: dict[str, Any] = {
            "type": info.type,
            "contains": info.contains,
            "values": {k: _json_number(x) for k, x in _values(s, metrics.duration_s).items()},
        }
        if name in thresholds_of:
            entry["thresholds"] = thresholds_of[name]
        out_metrics[name] = entry
    for v in verdicts:
        sel = v.threshold.selector
        if not sel.tags or sel.name in out_metrics:
            continue
        info = METRICS[sel.metric]
        s = metrics.get(sel.metric).select(dict(sel.tags))
        out_metrics[sel.name] = {
            "type": info.type,
            "contains": info.contains,
            "values": {k: _json_number(x) for k, x in _values(s, metrics.duration_s).items()},
            "thresholds": thresholds_of[sel.name],
        }
    checks = [
        {"name": n, "path": f"::{n}", "id": _md5(f"::{n}"), "passes": p, "fails": f}
        for n, p, f in metrics.checks
    ]
    result: dict[str, Any] = {
        "root_group": {"name": "", "path": "", "id": _md5(""), "groups": [], "checks": checks},
        "options": {
            "summaryTrendStats": list(TREND_STATS),
            "summaryTimeUnit": "",
            "noColor": False,
        },
        "state": {
            "isStdOutTTY": False,
            "isStdErrTTY": False,
            "testRunDurationMs": metrics.duration_s * 1000,
        },
        "metrics": out_metrics,
        "gaterush": {
            "passed": all(v.ok for v in verdicts) and (fidelity is None or fidelity.ok),
            "verdicts": [_verdict_json(v) for v in verdicts],
            **({"fidelity": fidelity.to_json()} if fidelity is not None else {}),
            "failed_group_checks": [
                {
                    "check": g.check,
                    "group": g.group,
                    "requests": [{"seq": q, "expect": e, "outcome": o} for q, e, o in g.requests],
                }
                for g in metrics.failed_groups
            ],  # fmt: skip
            **(dict(extra) if extra else {}),
        },
    }
    return result


def thresholds_of_summary(summary: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(metric, expression, ok) of every threshold in a summary JSON (k6's or ours)."""
    out = []
    for name, m in summary.get("metrics", {}).items():
        for expr, res in (m.get("thresholds") or {}).items():
            out.append((name, expr, bool(res.get("ok"))))
    return out


def threshold_names(thresholds: Iterable[Threshold]) -> list[str]:
    """Readable names of thresholds, for messages."""
    return [t.name for t in thresholds]
