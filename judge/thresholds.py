"""k6's threshold grammar, parsed and judged over gaterush metrics, plus windowed thresholds.

A threshold set maps a metric selector to expressions, as in k6::

    "http_req_duration{target:rpc:scan_ticket_atomic}" = ["p(95)<200", "max<=3000"]
    "http_req_failed" = ["rate==0"]

Selector: ``metric`` or ``metric{tag:value,tag2:value}``; a tag splits on its *first* colon, so
``target:rpc:scan_ticket_atomic`` means tag ``target`` = ``rpc:scan_ticket_atomic``; values may be
quoted. Expression (k6's BNF): ``aggregation operator number`` with aggregation ``avg min med max
p(N) count rate value`` (which ones apply depends on the metric's type, as in k6) and operator
``< <= > >= == === !=`` (``===`` is ``==``).

Windowed form (a gaterush extension): ``"p(95)<200 over 10s"`` (units ms, s, m, h). It is judged on
*sliding* windows of that width starting every tenth of it (``10s`` -> every 1 s) from the run
start, and holds only if it holds on every window. Sliding rather than tumbling because a breach
that straddles a tumbling boundary is halved in each window and can pass; with a step of a tenth,
any interval of the width overlaps some judged window by at least 90%. Windows without samples
are skipped for trend and rate metrics (nothing to judge); counters are judged on every window (an
empty window counts 0, and ``rate`` is its count per second).

No samples is not a pass: a trend or rate threshold judged on no samples (a realtime latency of a
run whose viewers never joined, a sub-metric whose tag matched nothing) FAILS, and the summary says
"no samples", unless the threshold allows it with k6's object form
``{threshold = "p(95)<100", allowEmpty = true}``. (k6 lets such a threshold pass: a load tester's
verdict must not.) A counter without samples is a count of 0 and is judged as such.

Every replay is judged by DEFAULT_THRESHOLDS too, for a metric the thresholds in use leave without
a whole-metric threshold: the load-test plan's ``http_req_failed rate==0``, and the replay's own
fidelity, ``schedule_lag p(99)<10`` (a sender that fell behind must not pass as a slow target).
Give a threshold on the same metric (``--threshold 'http_req_failed=rate<0.01'``) to replace one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import re
import tomllib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from judge.metrics import (
    AGGREGATIONS,
    METRICS,
    RATE,
    TAGS,
    TREND,
    Metrics,
    aggregate,
    format_number,
    from_table,
    sliding_windows,
)
from traces import durations


class ThresholdError(ValueError):
    """A threshold (selector or expression) is malformed; the message quotes it and says why."""


OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
    "===": operator.eq,
    "==": operator.eq,
    "!=": operator.ne,
}
# Scan order matters (k6's operatorTokens): a longer token before its prefix.
_SCAN_ORDER = ("<=", "<", ">=", ">", "===", "==", "!=")
NEGATION = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "===": "!=", "!=": "=="}

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_OVER = re.compile(r"^(?P<expr>.*?)\s+over\s+(?P<window>\S.*?)\s*$")
_METRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
WINDOW_STEPS = 10  # windows per width: a window starts every width / WINDOW_STEPS


@dataclass(frozen=True, slots=True)
class Selector:
    """A metric or sub-metric: `http_req_duration{target:rpc:scan_ticket_atomic}`."""

    metric: str
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        """The canonical selector text (tags in the order given)."""
        if not self.tags:
            return self.metric
        return self.metric + "{" + ",".join(f"{k}:{v}" for k, v in self.tags) + "}"


@dataclass(frozen=True, slots=True)
class Expression:
    """One parsed condition: `p(95)<200` or `rate==0 over 30s`."""

    source: str
    method: str  # avg min med max p count rate value
    operator: str
    value: float
    percentile: float | None = None  # N of p(N), 0..100
    window_s: float | None = None

    @property
    def key(self) -> str:
        """The aggregation as k6 names it in summaries: `p(95)`, `avg`, `rate`."""
        return f"p({format_number(self.percentile)})" if self.method == "p" else self.method

    def holds(self, observed: float) -> bool:
        """Whether the condition holds for an observed value (NaN never holds)."""
        return bool(OPERATORS[self.operator](observed, self.value))

    def negation(self) -> Expression:
        """The opposite condition (`p(95)<200` -> `p(95)>=200`), same window."""
        op = NEGATION[self.operator]
        src = f"{self.key}{op}{format_number(self.value)}"
        if self.window_s is not None:
            src += f" over {format_number(self.window_s)}s"
        return Expression(src, self.method, op, self.value, self.percentile, self.window_s)


@dataclass(frozen=True, slots=True)
class Threshold:
    """A selector with one expression: the unit judged and reported."""

    selector: Selector
    expression: Expression
    allow_empty: bool = False  # judged on no samples, it holds (else it fails)

    @property
    def name(self) -> str:
        """`metric{tags}: expression`, for messages."""
        return f"{self.selector.name}: {self.expression.source}"


@dataclass(frozen=True, slots=True)
class WindowVerdict:
    """The worst window of a windowed threshold: its value and where it was."""

    value: float
    start_s: float
    end_s: float
    failed: int  # windows where the condition did not hold
    judged: int  # windows judged (trend/rate windows without samples are skipped)
    failing_from_s: float | None = None  # start of the first failing window
    failing_to_s: float | None = None  # end of the last failing window


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judgement of one threshold: ok, the observed value, how many samples, worst window."""

    threshold: Threshold
    ok: bool
    observed: float
    samples: int
    empty: bool = False  # no samples: k6's convention decided (see module docstring)
    window: WindowVerdict | None = None

    @property
    def name(self) -> str:
        """The threshold's name, `metric{tags}: expression`."""
        return self.threshold.name


@dataclass(frozen=True, slots=True)
class Verdicts:
    """A threshold set judged: each threshold's verdict, in order; it held when every one did."""

    verdicts: tuple[Verdict, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether every threshold held."""
        return passed(self.verdicts)


def parse_selector(text: str) -> Selector:
    """Parse `metric` or `metric{tag:value,...}` (k6's sub-metric syntax), checking names and tags."""
    src = text.strip()
    metric, brace, rest = src.partition("{")
    metric = metric.strip()
    if not _METRIC_NAME.match(metric):
        raise ThresholdError(f"threshold metric {text!r}: {metric!r} is not a metric name")
    if metric not in METRICS:
        raise ThresholdError(
            f"threshold metric {text!r}: unknown metric {metric!r}; known: {', '.join(METRICS)}"
        )
    if not brace:
        return Selector(metric)
    if not rest.endswith("}"):
        raise ThresholdError(
            f"threshold metric {text!r}: missing closing '}}' (format metric{{tag:value}})"
        )
    body = rest[:-1].strip()
    if not body:
        raise ThresholdError(f"threshold metric {text!r}: empty tag list")
    tags: list[tuple[str, str]] = []
    for part in body.split(","):
        key, colon, value = part.partition(":")  # first colon only: values like rpc:scan_x
        key, value = key.strip(), value.strip().strip("\"'")
        if not colon or not key or not value:
            raise ThresholdError(
                f"threshold metric {text!r}: tag {part.strip()!r} is not tag:value"
            )
        if key not in TAGS:
            raise ThresholdError(
                f"threshold metric {text!r}: unknown tag {key!r}; tags: {', '.join(TAGS)}"
            )
        tags.append((key, value))
    return Selector(metric, tuple(tags))


def _window_s(text: str) -> float | None:
    """A window's width in seconds (one duration grammar, a unit required), or None."""
    try:
        return durations.parse_seconds(text, bare=None)
    except ValueError:
        return None


def parse_expression(text: str) -> Expression:
    """Parse one k6 threshold expression (`p(99.9)<5`, `rate==0`), optionally `... over 10s`."""
    src = text.strip()
    body, window_s = src, None
    m = _OVER.match(src)
    window = _window_s(m["window"]) if m else None
    if window is not None:
        body, window_s = m["expr"].strip(), window
        if window_s <= 0:
            raise ThresholdError(f"threshold {text!r}: window must be longer than 0")
    elif re.search(r"\bover\b", src):
        raise ThresholdError(
            f"threshold {text!r}: window must read 'over <number><ms|s|m|h>', like 'over 10s'"
        )
    for op in _SCAN_ORDER:
        lhs, found, rhs = body.partition(op)
        if found:
            break
    else:
        raise ThresholdError(f"threshold {text!r}: no operator (one of < <= > >= == === !=)")
    lhs, rhs = lhs.strip(), rhs.strip()
    if not _NUMBER.match(rhs):
        raise ThresholdError(f"threshold {text!r}: right-hand side {rhs!r} is not a number")
    value = float(rhs)
    pct = None
    if lhs.startswith("p(") and lhs.endswith(")"):
        inner = lhs[2:-1].strip()
        if not _NUMBER.match(inner) or not 0 <= float(inner) <= 100:
            raise ThresholdError(
                f"threshold {text!r}: percentile {inner!r} must be a number from 0 to 100"
            )
        method, pct = "p", float(inner)
    elif lhs in ("avg", "min", "med", "max", "count", "rate", "value"):
        method = lhs
    else:
        raise ThresholdError(
            f"threshold {text!r}: unknown aggregation {lhs!r} (one of avg min med max p(N) count rate value)"
        )
    return Expression(src, method, found, value, pct, window_s)


def parse_threshold(selector: str, expression: str) -> Threshold:
    """Parse and validate one selector/expression pair (the aggregation must suit the metric type)."""
    sel = parse_selector(selector)
    try:
        expr = parse_expression(expression)
    except ThresholdError as e:
        raise ThresholdError(f"{sel.name}: {e}") from None
    mtype = METRICS[sel.metric].type
    if expr.method not in AGGREGATIONS[mtype]:
        allowed = " ".join("p(N)" if a == "p" else a for a in AGGREGATIONS[mtype])
        raise ThresholdError(
            f"threshold {sel.name}: {expression!r}: {expr.key} does not apply to {sel.metric}, a {mtype} metric "
            f"(supported: {allowed})"
        )
    return Threshold(sel, expr)


def parse_mapping(mapping: Mapping[str, object]) -> tuple[Threshold, ...]:
    """Parse k6's `{"metric{tag:value}": ["p(95)<200", ...]}` (a string stands for a one-item list).

    k6's object form `{"threshold": "p(95)<200", "abortOnFail": true}` is accepted; abort is ignored
    (gaterush judges at the end).
    """
    if not isinstance(mapping, Mapping):
        raise ThresholdError(
            f"thresholds must be a table of metric -> list of expressions, got {type(mapping).__name__}"
        )
    out: list[Threshold] = []
    for selector, exprs in mapping.items():
        items = [exprs] if isinstance(exprs, str | Mapping) else exprs
        if not isinstance(items, list | tuple):
            raise ThresholdError(
                f"threshold {selector!r}: expected a list of expressions, got {exprs!r}"
            )
        for e in items:
            allow_empty = False
            if isinstance(e, Mapping):
                allow_empty = e.get("allowEmpty", e.get("allow_empty", False))
                if not isinstance(allow_empty, bool):
                    raise ThresholdError(
                        f"threshold {selector!r}: allowEmpty must be true or false, got {allow_empty!r}"
                    )
                e = e.get("threshold")
            if not isinstance(e, str):
                raise ThresholdError(f"threshold {selector!r}: expression {e!r} is not a string")
            t = parse_threshold(str(selector), e)
            out.append(dataclasses.replace(t, allow_empty=True) if allow_empty else t)
    return tuple(out)


_CLI = re.compile(
    r"^\s*(?P<sel>[A-Za-z_][A-Za-z0-9_]*(\{[^}]*\})?)\s*(=(?![=])|\s)\s*(?P<expr>.+)$"
)


def split_cli(spec: str) -> tuple[str, str]:
    """A `--threshold` value's (selector, expression) texts: `METRIC[{tags}]=EXPR` or `METRIC[{tags}] EXPR`."""
    m = _CLI.match(spec)
    if not m:
        raise ThresholdError(
            f"--threshold {spec!r}: expected METRIC[{{tag:value}}]=EXPRESSION, like 'http_req_duration=p(95)<500'"
        )
    return m["sel"], m["expr"]


def parse_cli(spec: str) -> Threshold:
    """Parse a `--threshold` value: `METRIC[{tags}]=EXPR` or `METRIC[{tags}] EXPR`.

    Example: `http_req_duration{target:rpc:scan_ticket_atomic}=p(95)<200`.
    """
    return parse_threshold(*split_cli(spec))


def cli_mapping(specs: Iterable[str]) -> dict[str, list[str]]:
    """`--threshold` values as a k6 mapping (selector -> expressions), split but not yet parsed."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        sel, expr = split_cli(spec)
        out.setdefault(sel, []).append(expr.strip())
    return out


def load_file(path: str | Path) -> tuple[Threshold, ...]:
    """Thresholds from a TOML or JSON file: either the mapping itself or a `thresholds` table in it."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ThresholdError(f"{p}: cannot read thresholds file: {e.strerror}") from e
    try:
        data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ThresholdError(
            f"{p}: not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {e}"
        ) from e
    if isinstance(data, Mapping) and isinstance(data.get("thresholds"), Mapping):
        data = data["thresholds"]
    try:
        return parse_mapping(data)
    except ThresholdError as e:
        raise ThresholdError(f"{p}: {e}") from e


def to_mapping(thresholds: Iterable[Threshold]) -> dict[str, list[Any]]:
    """Back to k6's mapping form (for result headers and the summary JSON): parse_mapping's input."""
    out: dict[str, list[Any]] = {}
    for t in thresholds:
        src = t.expression.source
        item = {"threshold": src, "allowEmpty": True} if t.allow_empty else src
        out.setdefault(t.selector.name, []).append(item)
    return out


# The thresholds every replay is judged by, for a metric the thresholds in use do not cover with a
# whole-metric threshold of their own (module docstring).
DEFAULT_THRESHOLDS: dict[str, tuple[str, ...]] = {
    "http_req_failed": ("rate==0",),
    "schedule_lag": ("p(99)<10",),
}
# Metrics that judge the replay (the sender), not the target.
FIDELITY_METRICS = frozenset(("schedule_lag", "dropped_events"))


DEFAULT_MAX_SCHEDULE_LAG_MS = 10.0


def with_defaults(
    thresholds: Iterable[Threshold], max_schedule_lag_ms: float | None = None
) -> tuple[Threshold, ...]:
    """`thresholds` plus each of DEFAULT_THRESHOLDS whose metric none of them covers untagged.

    `max_schedule_lag_ms` replaces the default schedule_lag limit (`--max-schedule-lag`).
    """
    given = tuple(thresholds)
    covered = {t.selector.metric for t in given if not t.selector.tags}
    defaults = dict(DEFAULT_THRESHOLDS)
    if max_schedule_lag_ms is not None:
        if not (max_schedule_lag_ms > 0 and math.isfinite(max_schedule_lag_ms)):
            raise ThresholdError(
                f"--max-schedule-lag: expected milliseconds > 0, got {max_schedule_lag_ms}"
            )
        defaults["schedule_lag"] = (f"p(99)<{format_number(max_schedule_lag_ms)}",)
    extra = [
        parse_threshold(metric, expr)
        for metric, exprs in defaults.items()
        if metric not in covered
        for expr in exprs
    ]
    return given + tuple(extra)


def merge_sets(sets: Iterable[Mapping[str, object]]) -> dict[str, list[Any]]:
    """Several k6 threshold mappings as one that holds only when every one holds.

    Expressions are kept once each; of two on one selector with the same aggregation, operator and
    window (`p(95)<500` and `p(95)<300`), only the stricter is kept.
    """
    kept: dict[tuple, Threshold] = {}
    order: list[tuple] = []
    for mapping in sets:
        for t in parse_mapping(mapping):
            e = t.expression
            exact = e.value if e.operator in ("==", "===", "!=") else None
            key = (
                t.selector.name,
                e.method,
                e.operator,
                e.percentile,
                e.window_s,
                t.allow_empty,
                exact,
            )
            old = kept.get(key)
            if old is None:
                order.append(key)
                kept[key] = t
            elif _stricter(e, old.expression):
                kept[key] = t
    return to_mapping(kept[k] for k in order)


def _stricter(a: Expression, b: Expression) -> bool:
    """Whether condition a (same aggregation and operator as b) is the stricter of the two."""
    if a.operator in ("<", "<="):
        return a.value < b.value
    if a.operator in (">", ">="):
        return a.value > b.value
    return False  # == and != on different values are different conditions: both kept by key


def _worse(op: str) -> Callable[[np.ndarray], int]:
    """Which window is worst for an operator: the largest value for < and <=, the smallest for > and >=."""
    if op in ("<", "<="):
        return lambda v: int(np.nanargmax(v))
    if op in (">", ">="):
        return lambda v: int(np.nanargmin(v))
    return lambda v: 0


def evaluate(metrics: Metrics, thresholds: Iterable[Threshold]) -> list[Verdict]:
    """Judge every threshold over the run's metrics; windowed ones on every sliding window."""
    return [judge(metrics, t) for t in thresholds]


def judge(metrics: Metrics, threshold: Threshold) -> Verdict:
    """Judge one threshold (see the module docstring for empty metrics and windows)."""
    sel, expr = threshold.selector, threshold.expression
    samples = metrics.get(sel.metric).select(dict(sel.tags))
    mtype = samples.info.type
    q = expr.percentile / 100.0 if expr.percentile is not None else None
    n = len(samples)
    # no samples of a trend or rate is no evidence: it holds only where the threshold says so
    nothing = n == 0 and mtype in (TREND, RATE)
    if expr.window_s is None:
        observed = samples.aggregate(expr.method, q, metrics.duration_s)
        ok = threshold.allow_empty if nothing else expr.holds(observed)
        return Verdict(threshold, ok, observed, n, n == 0)

    width = expr.window_s
    win = sliding_windows(samples, width, width / WINDOW_STEPS, metrics.duration_s)
    counts = win.hi - win.lo
    judged = np.ones(len(counts), bool) if mtype not in (TREND, RATE) else counts > 0
    values = np.full(len(counts), np.nan)
    for w in np.flatnonzero(judged):
        v = win.values[win.lo[w] : win.hi[w]]
        values[w] = aggregate(mtype, v, expr.method, q, width)
    idx = np.flatnonzero(judged)
    if len(idx) == 0:
        return Verdict(
            threshold,
            threshold.allow_empty,
            math.nan,
            n,
            True,
            WindowVerdict(math.nan, 0.0, width, 0, 0),
        )
    held = np.array([expr.holds(float(values[w])) for w in idx], bool)
    failing = idx[~held]
    pool = failing if len(failing) else idx
    w = int(pool[_worse(expr.operator)(values[pool])])
    start = float(win.starts_s[w])
    span = (
        (float(win.starts_s[failing[0]]), float(win.starts_s[failing[-1]]) + width)
        if len(failing)
        else (None, None)
    )
    wv = WindowVerdict(float(values[w]), start, start + width, len(failing), len(idx), *span)
    return Verdict(threshold, len(failing) == 0, float(values[w]), n, n == 0, wv)


def passed(verdicts: Iterable[Verdict]) -> bool:
    """Whether every threshold held."""
    return all(v.ok for v in verdicts)


def judge_table(
    table: pa.Table,
    thresholds: Iterable[Threshold],
    *,
    duration_s: float | None = None,
    allow_empty: Collection[str] = (),
) -> tuple[Metrics, list[Verdict]]:
    """A result table's metrics and each threshold's verdict: the one judge of measured and
    predicted rows (judge.report.judge_results, sim.predict.judge_prediction).

    `duration_s` as judge.metrics.from_table; a threshold on a metric of `allow_empty` holds on no
    samples (a metric the rows cannot have, by design).
    """
    metrics = from_table(table, duration_s=duration_s)
    given = [
        dataclasses.replace(t, allow_empty=True) if t.selector.metric in allow_empty else t
        for t in thresholds
    ]
    return metrics, evaluate(metrics, given)
