"""k6-named metrics computed from result rows: columnar, exact, tagged by target/kind/scenario.

Every metric keeps all its samples (time, value and dictionary-coded tags in numpy arrays), so
percentiles are exact over all samples, thresholds can select any tag subset, and windows and
plots slice the same arrays. Nothing here does I/O: callers pass pyarrow tables (from
``judge.resultlog.read_results``) or rows.

Sample times are microseconds since the run start on the *scheduled* axis for requests (when the
open-loop schedule said the request should go), so a stall shows where it was offered, not where
it ended. Trend values are milliseconds (k6's unit); data counters are bytes.

Percentiles follow k6 exactly (``metrics/sink.go``): for ``n`` sorted values and a fraction
``q``, ``i = q * (n - 1)``, ``v = s[floor(i)] + (s[ceil(i)] - s[floor(i)]) * (i - floor(i))``;
no samples gives 0, one sample gives that sample.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from judge.checks import FailedGroup, GroupVerdicts, judge_groups
from judge.realtime_messages import time_messages

COUNTER = "counter"
RATE = "rate"
TREND = "trend"
GAUGE = "gauge"
TIME = "time"
DATA = "data"
DEFAULT = "default"

# Tags a threshold or a plot can select on. `status` and `expected_response` are k6's names.
TAGS = ("target", "kind", "scenario", "status", "expected_response")


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """What a metric is: k6 type (counter/rate/trend/gauge), what it contains, and a description."""

    name: str
    type: str
    contains: str
    doc: str


def _info(name: str, type_: str, contains: str, doc: str) -> tuple[str, MetricInfo]:
    return name, MetricInfo(name, type_, contains, doc)


# The metrics gaterush computes, in summary order.
METRICS: dict[str, MetricInfo] = dict(
    [
        _info(
            "checks",
            RATE,
            DEFAULT,
            "share of checks held: a request's outcome against its expect, or a group's (judge.checks)",
        ),
        _info("data_received", COUNTER, DATA, "response bytes received"),
        _info("data_sent", COUNTER, DATA, "request bytes sent"),
        _info(
            "dashboard_load", TREND, TIME, "a viewer's dashboard initial load, first view to last"
        ),
        _info("dropped_events", COUNTER, DEFAULT, "events the sender held back (never sent)"),
        _info("http_req_duration", TREND, TIME, "completed - sent (what k6 reports)"),
        _info(
            "http_req_failed",
            RATE,
            DEFAULT,
            "share of requests failed (transport error or status >= 400)",
        ),
        _info("http_reqs", COUNTER, DEFAULT, "HTTP requests sent"),
        _info("iterations", COUNTER, DEFAULT, "trace events replayed (requests sent plus dropped)"),
        _info("latency", TREND, TIME, "completed - scheduled (what a user in line sees)"),
        _info("realtime_join", TREND, TIME, "Realtime channel join time"),
        _info("realtime_update_latency", TREND, TIME, "write completion to each viewer's message"),
        _info("schedule_lag", TREND, TIME, "sent - scheduled (replay fidelity)"),
    ]
)

# Aggregations each metric type supports in thresholds (k6's metric_type.go).
AGGREGATIONS: dict[str, tuple[str, ...]] = {
    COUNTER: ("count", "rate"),
    GAUGE: ("value",),
    RATE: ("rate",),
    TREND: ("avg", "min", "med", "max", "p"),
}


def _ranks(n: Any, q: float) -> tuple[Any, Any, Any]:
    """k6's rank rule, the one percentile of gaterush: (floor, ceil, fraction) of q * (n - 1)."""
    i = q * (n - 1.0)
    lo = np.floor(i).astype(np.int64)
    return lo, np.ceil(i).astype(np.int64), i - lo


def percentile(values: np.ndarray, q: float, *, is_sorted: bool = False) -> float:
    """k6's percentile of `values` at fraction q (0.95 for p(95)): linear at q*(n-1), exact."""
    n = len(values)
    if n == 0:
        return 0.0
    if n == 1:
        return float(values[0])
    r_lo, r_hi, frac = _ranks(n, q)
    lo, hi = int(r_lo), int(r_hi)
    if is_sorted:
        j, k = float(values[lo]), float(values[hi])
    else:
        part = np.partition(values, (lo, hi)) if hi != lo else np.partition(values, lo)
        j, k = float(part[lo]), float(part[hi])
    return j + (k - j) * frac


def grouped_percentiles(
    groups: np.ndarray, values: np.ndarray, n_groups: int, qs: Sequence[float]
) -> np.ndarray:
    """k6 percentiles of `values` per group id (0..n_groups-1): shape (n_groups, len(qs)); 0 if empty.

    One lexsort for all groups, so plots of millions of samples stay vectorised.
    """
    out = np.zeros((n_groups, len(qs)), dtype=np.float64)
    if len(values) == 0:
        return out
    order = np.lexsort((values, groups))
    s = values[order]
    counts = np.bincount(groups, minlength=n_groups)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    has = counts > 0
    for c, q in enumerate(qs):
        lo, hi, frac = _ranks(counts[has], q)
        j = s[starts[has] + lo]
        k = s[starts[has] + hi]
        out[has, c] = j + (k - j) * frac
    return out


# The live progress line keeps a histogram of http_req_duration, not every sample: 8 buckets per
# octave of microseconds, a sample read as its bucket's upper edge.
LOG_BUCKETS = 256
_LOG_EDGES_MS = (2.0 ** ((np.arange(LOG_BUCKETS) + 1) / 8) - 1) / 1000


def log_bucket(duration_us: float) -> int:
    """The histogram bucket (0..LOG_BUCKETS-1) of a duration in microseconds."""
    return min(LOG_BUCKETS - 1, int(math.log2(max(0, duration_us) + 1) * 8))


def log_bucket_percentile(counts: Sequence[int], q: float) -> float | None:
    """k6's percentile (ms) of the samples a log_bucket histogram counts; None when it is empty."""
    cum = np.cumsum(counts)
    n = int(cum[-1]) if len(cum) else 0
    if not n:
        return None
    lo, hi, frac = _ranks(n, q)
    j, k = _LOG_EDGES_MS[np.searchsorted(cum, (lo, hi), side="right")]
    return float(j + (k - j) * frac)


@dataclass(frozen=True, slots=True, eq=False)
class Tag:
    """A dictionary-coded tag column: codes index into labels."""

    codes: np.ndarray
    labels: tuple[str, ...]

    def equals(self, value: str) -> np.ndarray:
        """Boolean mask of the samples whose tag is `value`."""
        try:
            idx = self.labels.index(value)
        except ValueError:
            return np.zeros(len(self.codes), dtype=bool)
        return self.codes == idx

    def take(self, mask: np.ndarray) -> Tag:
        """The tag column restricted to `mask`."""
        return Tag(self.codes[mask], self.labels)


@dataclass(frozen=True, slots=True, eq=False)
class Samples:
    """One metric's samples: times (µs since run start), values, and tag columns."""

    info: MetricInfo
    t_us: np.ndarray
    values: np.ndarray
    tags: Mapping[str, Tag] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.values)

    def mask(self, tags: Mapping[str, str]) -> np.ndarray | None:
        """Mask of the samples carrying every tag value in `tags` (None: all samples)."""
        m: np.ndarray | None = None
        for key, value in tags.items():
            tag = self.tags.get(key)
            sel = tag.equals(value) if tag is not None else np.zeros(len(self.values), dtype=bool)
            m = sel if m is None else (m & sel)
        return m

    def select(self, tags: Mapping[str, str]) -> Samples:
        """The sub-metric of the samples carrying every tag value in `tags` (k6's `metric{k:v}`)."""
        m = self.mask(tags)
        if m is None:
            return self
        return Samples(
            self.info,
            self.t_us[m],
            self.values[m],
            {k: t.take(m) for k, t in self.tags.items()},
        )

    def aggregate(self, method: str, q: float | None = None, duration_s: float = 0.0) -> float:
        """One aggregation as k6 computes it: avg min med max p (q = fraction) count rate value."""
        return aggregate(self.info.type, self.values, method, q, duration_s)


def aggregate(
    type_: str, values: np.ndarray, method: str, q: float | None = None, duration_s: float = 0.0
) -> float:
    """k6's aggregation of a metric type's sample values (empty trend reads 0, as in k6)."""
    n = len(values)
    if type_ == TREND:
        if method == "p":
            return percentile(values, q if q is not None else 0.5)
        if method == "med":
            return percentile(values, 0.5)
        if n == 0:
            return 0.0
        if method == "avg":
            return float(values.sum() / n)
        if method == "min":
            return float(values.min())
        if method == "max":
            return float(values.max())
    elif type_ == RATE and method == "rate":
        return float(np.count_nonzero(values) / n) if n else math.nan
    elif type_ == COUNTER:
        total = float(values.sum())
        if method == "count":
            return total
        if method == "rate":
            return total / duration_s if duration_s > 0 else 0.0
    elif type_ == GAUGE and method == "value":
        return float(values[-1]) if n else 0.0
    raise ValueError(f"aggregation {method!r} does not apply to a {type_} metric")


def trend_stats(values: np.ndarray, pcts: Sequence[float] = (90, 95)) -> dict[str, float]:
    """k6's summary trend stats: avg, min, med, max and p(N) for each N in pcts (ms)."""
    s = np.sort(values)
    n = len(s)
    out = {
        "avg": float(s.sum() / n) if n else 0.0,
        "min": float(s[0]) if n else 0.0,
        "med": percentile(s, 0.5, is_sorted=True),
        "max": float(s[-1]) if n else 0.0,
    }
    for p in pcts:
        out[f"p({format_number(p)})"] = percentile(s, p / 100.0, is_sorted=True)
    return out


def format_number(v: float) -> str:
    """A number as k6 prints it in keys like p(99.9): shortest form, no trailing .0."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


@dataclass(frozen=True, slots=True, eq=False)
class Metrics:
    """All metrics of one run (or of several merged shards): samples per metric name."""

    samples: Mapping[str, Samples]
    duration_s: float
    checks: tuple[tuple[str, int, int], ...] = ()  # (check name, passes, fails) for the summary
    failed_groups: tuple[FailedGroup, ...] = ()  # the first failed group checks, with requests
    failed_group_count: int = 0

    def get(self, name: str) -> Samples:
        """The samples of a known metric (empty if the run had none); KeyError if unknown."""
        s = self.samples.get(name)
        if s is not None:
            return s
        info = METRICS[name]
        return Samples(info, np.zeros(0, np.int64), np.zeros(0, np.float64), {})

    def value(
        self, name: str, method: str, q: float | None = None, tags: Mapping[str, str] | None = None
    ) -> float:
        """One aggregation of a metric or sub-metric over the whole run."""
        s = self.get(name).select(tags or {})
        return s.aggregate(method, q, self.duration_s)

    def labels(self, tag: str) -> list[str]:
        """Every value a tag takes over all request samples, sorted."""
        seen: set[str] = set()
        for s in self.samples.values():
            t = s.tags.get(tag)
            if t is not None and len(t.codes):
                seen.update(t.labels[i] for i in np.unique(t.codes))
        return sorted(seen)


def _strings(col: pa.ChunkedArray | pa.Array) -> Tag:
    """Dictionary-encode a string column (nulls become the label '')."""
    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks != 1 and pa.types.is_dictionary(col.type):
            col = col.cast(pa.string())
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_dictionary(col.type) and col.null_count:
        col = col.cast(pa.string())
    if not pa.types.is_dictionary(col.type):
        col = pc.dictionary_encode(col.cast(pa.string()), null_encoding="encode")
    if len(col) == 0:
        return Tag(np.zeros(0, np.int32), ())
    labels = tuple("" if v is None else str(v) for v in col.dictionary.to_pylist())
    codes = col.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    if "" in labels[:-1] or labels.count("") > 1:  # null and "" both present: merge them
        first = labels.index("")
        remap = np.array([first if lbl == "" else i for i, lbl in enumerate(labels)], np.int32)
        codes = remap[codes]
    return Tag(codes, labels)


def _ints(col: pa.ChunkedArray, default: int = 0) -> np.ndarray:
    if col.null_count:
        col = pc.fill_null(col, default)
    return col.to_numpy().astype(np.int64, copy=False)


ROW_COLUMNS = (
    "seq", "target", "kind", "actor", "scheduled_us", "sent_us", "done_us", "status", "error",
    "bytes_sent", "bytes_received", "outcome", "expect", "metric", "group",
)  # fmt: skip


def table_from_rows(rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> pa.Table:
    """A result table from rows (tuples in ROW_COLUMNS order, or dicts); `metric` may be absent."""
    cols: dict[str, list[Any]] = {c: [] for c in ROW_COLUMNS}
    for row in rows:
        if isinstance(row, Mapping):
            for c in ROW_COLUMNS:
                cols[c].append(row.get(c))
        else:
            for c, v in zip(ROW_COLUMNS, row, strict=False):
                cols[c].append(v)
            for c in ROW_COLUMNS[len(row) :]:
                cols[c].append(None)
    types = {
        "seq": pa.int64(), "scheduled_us": pa.int64(), "sent_us": pa.int64(), "done_us": pa.int64(),
        "status": pa.int32(), "bytes_sent": pa.int64(), "bytes_received": pa.int64(),
    }  # fmt: skip
    return pa.table({c: pa.array(v, types.get(c, pa.string())) for c, v in cols.items()})


# The failure rule of http_req_failed, written once: a request failed when it got no answer, an
# error, or a status >= 400, unless the event expected that answer: a Stripe call expected to be
# declined (402 is the right answer), or a recorded `http_<status>` outcome that came back.
# failed_rows (columns), the progress line (one row) and a prediction's figures all apply this one.
def request_failed(
    target: str, status: int, error: str | None, outcome: str | None, expect: str | None
) -> bool:
    """Whether one request row counts in http_req_failed (the rule every failure count applies)."""
    if status and status < 400 and not error:
        return False
    if error or not status:
        return True
    if expect is not None and expect == f"http_{status}":
        return False
    return not (target.startswith("stripe:") and outcome == "declined" and expect == "declined")


def failed_rows(
    target: Tag, status: np.ndarray, has_error: np.ndarray, outcome: Any, expect: Any
) -> np.ndarray:
    """request_failed over columns: the mask of rows that count in http_req_failed.

    The rule is applied once per distinct (target, status, error or not, outcome, expect) among the
    rows it could fail (request_failed is False for an answer below 400 without an error).
    """
    failed = ~((status != 0) & (status < 400) & ~has_error)
    rows = np.flatnonzero(failed)
    if not len(rows):
        return failed
    outcomes, expects = _strings(_take(outcome, rows)), _strings(_take(expect, rows))
    is_null_o = pc.is_null(_take(outcome, rows)).to_numpy(zero_copy_only=False)
    is_null_e = pc.is_null(_take(expect, rows)).to_numpy(zero_copy_only=False)
    key = np.stack(
        [target.codes[rows], status[rows], has_error[rows], outcomes.codes, expects.codes,
         is_null_o, is_null_e],
        axis=1,
    ).astype(np.int64)  # fmt: skip
    combos, inverse = np.unique(key, axis=0, return_inverse=True)
    verdict = np.array(
        [
            request_failed(
                target.labels[t],
                int(st),
                "error" if err else None,
                None if no_o else outcomes.labels[o],
                None if no_e else expects.labels[e],
            )
            for t, st, err, o, e, no_o, no_e in combos.tolist()
        ],
        bool,
    )
    failed[rows] = verdict[inverse.reshape(-1)]
    return failed


def _take(col: Any, rows: np.ndarray) -> pa.ChunkedArray | pa.Array:
    return pc.take(col, pa.array(rows))


def failed_requests(table: pa.Table) -> np.ndarray:
    """The mask of a result table's rows that count in http_req_failed (request rows only)."""
    has_error = pc.fill_null(pc.greater(pc.utf8_length(table["error"]), 0), False)
    failed = failed_rows(
        _strings(table["target"]),
        _ints(table["status"]),
        has_error.to_numpy(zero_copy_only=False),
        table["outcome"],
        table["expect"],
    )
    if "metric" in table.column_names:
        failed &= pc.is_null(table["metric"]).to_numpy(zero_copy_only=False)
    return failed


def from_table(
    table: pa.Table,
    *,
    scenario: str | None = None,
    duration_s: float | None = None,
) -> Metrics:
    """Compute every metric of one result table (judge.resultlog.SCHEMA; `metric` optional).

    `scenario` tags every sample unless the table has a `scenario` column; `duration_s` (for
    counter rates) defaults to the span from 0 (the run start) to the last completion.
    """
    if "metric" not in table.column_names:
        table = table.append_column("metric", pa.nulls(len(table), pa.string()))
    if "scenario" not in table.column_names:
        table = table.append_column(
            "scenario", pa.array([scenario or ""] * len(table), pa.string())
        )
    # Columns the whole computation shares (no copies per metric when a mask selects everything).
    metric = _strings(table["metric"])
    target = _strings(table["target"])
    kind = _strings(table["kind"])
    scen = _strings(table["scenario"])
    scheduled = _ints(table["scheduled_us"])
    sent = _ints(table["sent_us"])
    done = _ints(table["done_us"])
    status = _ints(table["status"])
    has_error = pc.fill_null(pc.greater(pc.utf8_length(table["error"]), 0), False).to_numpy(
        zero_copy_only=False
    )
    outcome, expect = table["outcome"], table["expect"]

    def rows_of(name: str | None) -> np.ndarray:
        return metric.equals(name or "")

    is_req = rows_of(None)
    failed = failed_rows(target, status, has_error, outcome, expect)
    status_tag = _strings(table["status"].cast(pa.string()))
    expected_resp = Tag((~failed).astype(np.int32), ("false", "true"))
    base_tags = {"target": target, "kind": kind, "scenario": scen}

    def build(
        name: str,
        mask: np.ndarray,
        t: np.ndarray,
        values: np.ndarray,
        extra: Mapping[str, Tag] = (),
    ) -> Samples:
        tags = {**base_tags, **dict(extra)}
        if mask.all():
            return Samples(METRICS[name], t, values, tags)
        return Samples(
            METRICS[name], t[mask], values[mask], {k: v.take(mask) for k, v in tags.items()}
        )

    http_tags = {"status": status_tag, "expected_response": expected_resp}
    ms = 1e-3
    out: dict[str, Samples] = {}
    ones = np.broadcast_to(np.float64(1.0), (len(table),))  # read-only, no memory per row
    out["http_reqs"] = build("http_reqs", is_req, scheduled, ones, http_tags)
    out["http_req_failed"] = build("http_req_failed", is_req, scheduled, failed, http_tags)
    out["http_req_duration"] = build(
        "http_req_duration", is_req, scheduled, (done - sent) * ms, http_tags
    )
    out["latency"] = build("latency", is_req, scheduled, (done - scheduled) * ms, http_tags)
    out["schedule_lag"] = build(
        "schedule_lag", is_req, scheduled, (sent - scheduled) * ms, http_tags
    )

    has_expect = pc.is_valid(expect).to_numpy(zero_copy_only=False)
    passed = _passed(outcome, expect, status)
    check_rows = has_expect & (is_req | rows_of("dropped_events"))
    groups = judge_groups(table, lambda i: target.labels[target.codes[i]], check_rows)
    check_rows = (check_rows & ~groups.grouped) | groups.lead
    passed = np.where(groups.lead, groups.lead_passed, passed)
    out["checks"] = build("checks", check_rows, scheduled, passed)
    out["data_sent"] = build(
        "data_sent",
        np.ones(len(table), bool),
        scheduled,
        _ints(table["bytes_sent"]).astype(np.float64),
    )
    out["data_received"] = build(
        "data_received",
        np.ones(len(table), bool),
        scheduled,
        _ints(table["bytes_received"]).astype(np.float64),
    )
    dropped = rows_of("dropped_events")
    out["dropped_events"] = build("dropped_events", dropped, scheduled, ones)
    out["iterations"] = build("iterations", is_req | dropped, scheduled, ones)
    # a load that failed (a view answered an error) is no sample of how fast the dashboard loads:
    # its views count in http_req_failed instead
    out["dashboard_load"] = build(
        "dashboard_load",
        rows_of("dashboard_load") & ~failed,
        scheduled,
        (done - scheduled) * ms,
    )
    out["realtime_update_latency"] = build(
        "realtime_update_latency", rows_of("realtime_update_latency"), sent, (done - sent) * ms
    )
    out["realtime_join"] = build(
        "realtime_join", rows_of("realtime_join"), sent, (done - sent) * ms
    )

    if duration_s is None:
        end = int(max(done.max(initial=0), sent.max(initial=0), scheduled.max(initial=0)))
        duration_s = end / 1e6
    counts = _check_counts(target, _strings(expect), passed, check_rows & ~groups.lead)
    counts += _group_counts(groups)
    return Metrics(
        out,
        float(duration_s),
        tuple(sorted(counts)),
        groups.failed,
        groups.failed_count,
    )


def _passed(outcome: pa.ChunkedArray, expect: pa.ChunkedArray, status: np.ndarray) -> np.ndarray:
    """Per-request check results: the outcome equals `expect`, or, for an `http_<status>` expect
    (recorded traffic), the answer had that status."""
    passed = pc.fill_null(pc.equal(outcome, expect), False).to_numpy(zero_copy_only=False)
    is_http = pc.fill_null(pc.starts_with(expect, "http_"), False)
    if pc.any(is_http).as_py():
        got = pc.binary_join_element_wise("http_", pa.array(status.astype(str)), "")
        same = pc.fill_null(pc.equal(expect, got), False).to_numpy(zero_copy_only=False)
        passed = np.where(is_http.to_numpy(zero_copy_only=False), same, passed)
    return passed


def _check_counts(
    target: Tag, expect: Tag, passed: np.ndarray, rows: np.ndarray
) -> list[tuple[str, int, int]]:
    """Passes and fails per per-request check, one per (target, expected outcome): 'rpc:x is valid'."""
    if not rows.any():
        return []
    width = len(expect.labels)
    key = target.codes[rows].astype(np.int64) * width + expect.codes[rows]
    size = len(target.labels) * width
    totals = np.bincount(key, minlength=size)
    passes = np.bincount(key, weights=passed[rows], minlength=size).astype(np.int64)
    out = []
    for u in np.flatnonzero(totals):
        t, e = divmod(int(u), width)
        out.append(
            (
                f"{target.labels[t]} is {expect.labels[e]}",
                int(passes[u]),
                int(totals[u] - passes[u]),
            )
        )
    return out


def _group_counts(groups: GroupVerdicts) -> list[tuple[str, int, int]]:
    """Passes and fails per group check (one sample per group)."""
    tally: dict[str, list[int]] = {}
    for name, ok in zip(
        groups.lead_check[groups.lead], groups.lead_passed[groups.lead], strict=True
    ):
        t = tally.setdefault(name, [0, 0])
        t[0 if ok else 1] += 1
    return [(name, p, f) for name, (p, f) in tally.items()]


def merge_tables(parts: Sequence[tuple[pa.Table, str | None, int]],
                 runs: Sequence[str] | None = None) -> tuple[pa.Table, int]:  # fmt: skip
    """One table from several shards' (table, scenario, start_unix_us): times rebased on the earliest start.

    Shards of one run agree on their start instant, so the offsets are 0; results of runs on hosts
    whose starts differ slightly are shifted so every time is relative to the earliest start.
    `runs`: each part's run (its header's run_id; None: the parts are shards of one run). Realtime
    messages are matched with writes of their own run only (judge.realtime_messages): two runs'
    seqs overlap. Returns the merged table (with a `scenario` column) and the earliest start (unix µs).
    """
    if not parts:
        raise ValueError("no result tables to merge")
    if runs is not None and len(runs) != len(parts):
        raise ValueError(f"runs: {len(runs)} run ids for {len(parts)} result tables")
    base = min(start for _, _, start in parts)
    tables = []
    for table, scenario, start in parts:
        shift = start - base
        if "scenario" not in table.column_names:
            table = table.append_column(
                "scenario", pa.array([scenario or ""] * len(table), pa.string())
            )
        if shift:
            for c in ("scheduled_us", "sent_us", "done_us"):
                i = table.column_names.index(c)
                table = table.set_column(i, c, pc.add(table[c], pa.scalar(shift, pa.int64())))
        tables.append(table)
    labels = None
    if runs is not None:
        ids = {r: i for i, r in enumerate(dict.fromkeys(runs))}
        labels = np.repeat([ids[r] for r in runs], [len(t) for t in tables])
    return time_messages(pa.concat_tables(tables, promote_options="permissive"), labels), base


@dataclass(frozen=True, slots=True, eq=False)
class Windows:
    """Sliding windows over a metric's samples: window w spans [starts_s[w], starts_s[w] + width_s)."""

    width_s: float
    step_s: float
    starts_s: np.ndarray
    lo: np.ndarray  # index of the first sample of each window in `values` (time-sorted)
    hi: np.ndarray  # one past the last
    values: np.ndarray  # the samples' values in time order


def sliding_windows(samples: Samples, width_s: float, step_s: float, span_s: float) -> Windows:
    """Windows of width_s starting every step_s from 0 until one reaches span_s (at least one window).

    Samples are placed by their time; windows are half-open, so a sample at a boundary belongs to
    the window that starts there.
    """
    order = np.argsort(samples.t_us, kind="stable")
    t = samples.t_us[order]
    values = samples.values[order]
    last = max(span_s, float(t[-1]) / 1e6 if len(t) else 0.0)
    n = math.ceil((last - width_s) / step_s - 1e-9) + 1 if last > width_s else 1
    starts = np.arange(n, dtype=np.float64) * step_s
    starts_us = np.round(starts * 1e6).astype(np.int64)
    ends_us = np.round((starts + width_s) * 1e6).astype(np.int64)
    lo = np.searchsorted(t, starts_us, side="left")
    hi = np.searchsorted(t, ends_us, side="left")
    if n and last * 1e6 >= ends_us[-1]:  # the last sample sits exactly on the end: include it
        hi[-1] = len(t)
    return Windows(width_s, step_s, starts, lo, hi, values)


@dataclass(frozen=True, slots=True, eq=False)
class TimeSeries:
    """Per-bucket series per tag value, for plots: bucket b spans [start_s[b], start_s[b] + step_s)."""

    step_s: float
    start_s: np.ndarray
    groups: tuple[str, ...]
    offered: np.ndarray  # (groups, buckets): requests scheduled per second
    errors: np.ndarray  # failed requests per second
    duration_pcts: np.ndarray  # (groups, buckets, 3): http_req_duration p50/p95/p99, ms
    latency_p99: np.ndarray  # (groups, buckets): latency p99 (includes schedule lag), ms
    pcts: tuple[float, ...] = (50.0, 95.0, 99.0)


def nice_step(span_s: float, max_buckets: int = 600) -> float:
    """A readable bucket width (0.1 s, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, ...) giving <= max_buckets."""
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if span_s / step <= max_buckets:
            return float(step)
    return float(math.ceil(span_s / max_buckets / 3600) * 3600)


def timeseries(metrics: Metrics, step_s: float | None = None, by: str = "target") -> TimeSeries:
    """Offered load, errors and latency percentiles per bucket for each value of tag `by`."""
    reqs = metrics.get("http_reqs")
    failed = metrics.get("http_req_failed")
    dur = metrics.get("http_req_duration")
    lat = metrics.get("latency")
    span = max(metrics.duration_s, float(reqs.t_us.max(initial=0)) / 1e6)
    step = step_s or nice_step(span)
    n_b = max(1, math.ceil(span / step - 1e-9))
    tag = reqs.tags.get(by)
    if tag is None or len(reqs) == 0:
        groups: tuple[str, ...] = ()
        codes = np.zeros(0, np.int64)
    else:
        used = np.unique(tag.codes)
        groups = tuple(tag.labels[i] for i in used)
        remap = np.full(len(tag.labels), -1, np.int64)
        remap[used] = np.arange(len(used))
        codes = remap[tag.codes]
    n_g = len(groups)
    bucket = np.minimum((reqs.t_us // int(round(step * 1e6))).astype(np.int64), n_b - 1)
    cell = codes * n_b + bucket
    offered = np.bincount(cell, minlength=n_g * n_b).reshape(n_g, n_b) / step
    errors = np.bincount(cell, weights=failed.values, minlength=n_g * n_b).reshape(n_g, n_b) / step
    # http_req_duration, latency and http_reqs share rows (all request rows), so the cells match.
    qs = (0.5, 0.95, 0.99)
    pd = grouped_percentiles(cell, dur.values, n_g * n_b, qs).reshape(n_g, n_b, len(qs))
    lp = grouped_percentiles(cell, lat.values, n_g * n_b, (0.99,)).reshape(n_g, n_b)
    return TimeSeries(step, np.arange(n_b) * step, groups, offered, errors, pd, lp)
