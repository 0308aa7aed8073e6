"""Predicted results without a network: a scenario's events through the backend capacity model.

The rows have the replay result log's columns (judge.rows.SCHEMA: seq, target, kind, actor,
scheduled_us, sent_us, done_us, status, error, bytes_sent, bytes_received, outcome, expect, metric),
and the judge that judges a replay judges them (judge.thresholds.judge_table): the same metrics,
failure rule, dashboard loads (judge.loads) and percentile.

A predicted request is sent exactly on time (an ideal open-loop sender: sent = scheduled, or the
completion of its `after`); it fails when the client's timeout passes first: waiting for a worker
(the pool is exhausted) or being served too slowly. The gate wait of every attendee (arrive to the
start of their scan; from the gate opening for those who came before it) comes from the same pass
over the events.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import msgspec.structs
import numpy as np
import pyarrow as pa

from judge import thresholds as th
from judge.loads import Loads
from judge.metrics import Metrics, from_table, percentile
from judge.rows import SCHEMA as RESULT_SCHEMA
from models.capacity import Backend, CapacityParams, predict
from sim import runner
from sim.scenario import BackendConfig, Scenario, ScenarioError, apply_overrides, parse
from traces.event import ARRIVE, DECLINED, SCAN, VIEW, Event

# Metrics the backend capacity model does not predict (no Realtime in it): a prediction has no
# samples of them by design, so their thresholds are not judged on predicted rows.
UNPREDICTED = frozenset(("realtime_update_latency", "realtime_join"))

CLIENT_TIMEOUT_S = 60.0  # replay's default --timeout: a backend without its own timeout gets it
UNPREDICTED_KINDS = ("realtime:",)  # websocket subscriptions are not requests a worker serves


def judge_prediction(
    table: pa.Table, thresholds: Mapping[str, Sequence[str]]
) -> tuple[Metrics, th.Verdicts]:
    """Predicted rows judged as a replay's are (k6 mapping `{"metric{tags}": ["p(95)<200"]}`).

    A metric the capacity model does not predict (UNPREDICTED) has no samples by design, not for
    want of them: its thresholds hold on no samples. ThresholdError names a malformed threshold.
    """
    metrics, verdicts = th.judge_table(table, th.parse_mapping(thresholds), allow_empty=UNPREDICTED)
    return metrics, th.Verdicts(tuple(verdicts))


def capacity_params(sc: Scenario) -> CapacityParams:
    """The capacity model of a scenario's [capacity] table (the defaults when it has none)."""
    cap = sc.capacity

    def backend(b: BackendConfig) -> Backend:
        return Backend(
            b.workers, b.service, CLIENT_TIMEOUT_S if b.timeout_s is None else b.timeout_s
        )

    if cap is None:
        return CapacityParams(default=backend(BackendConfig()))
    return CapacityParams(
        targets=tuple((name, backend(b)) for name, b in sorted(cap.targets.items())),
        default=backend(cap.default),
    )


class _Observer:
    """Watches the event stream on its way to the capacity model: gate waits, view loads, `after` times."""

    def __init__(self, open_us: int = 0) -> None:
        self.open_us = open_us
        self.arrived: dict[str, int] = {}
        self.waits: list[int] = []
        self.load_of: dict[int, Any] = {}  # view seq -> dashboard load id (None: its own load)
        self.t_of: dict[int, int] = {}  # seq -> t_us of events sent after another one
        self.events = 0

    def watch(self, evs: Iterable[Event]) -> Iterator[Event]:
        arrived, waits = self.arrived, self.waits
        for e in evs:
            self.events += 1
            k = e.kind
            if k == ARRIVE:
                arrived[e.actor] = max(e.t_us, self.open_us)
            elif k == SCAN:
                t0 = arrived.pop(e.actor, None)
                if t0 is not None:
                    waits.append(e.t_us - t0)
            if e.target is None or e.target.startswith(UNPREDICTED_KINDS):
                continue
            if k == VIEW:
                self.load_of[e.seq] = msgpack.unpackb(e.payload, raw=False).get("load")
            if e.after is not None:
                self.t_of[e.seq] = e.t_us
            yield e


@dataclass(frozen=True, slots=True)
class Predicted:
    """A prediction: result rows (RESULT_SCHEMA), each attendee's gate wait (s), the events simulated."""

    table: pa.Table
    gate_wait_s: np.ndarray
    events: int


def _columns() -> dict[str, list[Any]]:
    return {f.name: [] for f in RESULT_SCHEMA}


def predict_events(
    evs: Iterable[Event], params: CapacityParams, rng: np.random.Generator, open_us: int = 0
) -> Predicted:
    """Predicted result rows for a stream of events (each event's fate under the capacity model).

    Gate waits count from the later of an attendee's arrival and `open_us`, when the gate opens.
    """
    obs = _Observer(open_us)
    by_seq: dict[int, Event] = {}

    def keep(stream: Iterable[Event]) -> Iterator[Event]:
        for e in stream:
            by_seq[e.seq] = e
            yield e

    cols = _columns()
    seq_c, tgt_c, kind_c, actor_c = cols["seq"], cols["target"], cols["kind"], cols["actor"]
    sch_c, sent_c, done_c, st_c, err_c = (
        cols[c] for c in ("scheduled_us", "sent_us", "done_us", "status", "error")
    )
    out_c, exp_c = cols["outcome"], cols["expect"]
    loads = Loads()
    t_of = obs.t_of
    for p in predict(keep(obs.watch(evs)), params, rng):
        e = by_seq.pop(p.seq)
        sched = t_of.pop(p.seq, p.scheduled_us)
        if p.ok:
            status = 402 if e.expect == DECLINED and e.target.startswith("stripe:") else 200
            error, outcome = None, e.expect
        else:
            status, outcome = 0, None
            waited = p.start_us == p.done_us
            error = (
                "timeout: no worker free (pool exhausted)"
                if waited
                else "timeout: response too slow"
            )
        seq_c.append(p.seq)
        tgt_c.append(p.target)
        kind_c.append(e.kind)
        actor_c.append(e.actor)
        sch_c.append(sched)
        sent_c.append(p.scheduled_us)
        done_c.append(p.done_us)
        st_c.append(status)
        err_c.append(error)
        out_c.append(outcome)
        exp_c.append(e.expect)
        if e.kind == VIEW:
            lid = obs.load_of.pop(p.seq, None)
            loads.add(e.actor, lid, p.seq, sched, p.scheduled_us, p.done_us, status, error)
    n = len(seq_c)
    cols["bytes_sent"], cols["bytes_received"] = [0] * n, [0] * n
    cols["metric"] = [None] * n
    cols["group"] = [None] * n  # predicted outcomes are the expected ones: no group to judge
    for load in loads.flush():
        for c, v in load.row().items():
            cols[c].append(v)
    table = pa.table(
        {f.name: pa.array(cols[f.name], f.type) for f in RESULT_SCHEMA}, schema=RESULT_SCHEMA
    )
    return Predicted(table, np.asarray(obs.waits, dtype=np.float64) / 1e6, obs.events)


def predict_scenario(sc: Scenario, seed: int, capacity_seed: int | None = None) -> Predicted:
    """Simulate a scenario in memory and predict its requests through its [capacity] model.

    `capacity_seed` (default: `seed`) draws the service times: other values give other
    predictions of the very same trace.
    """
    cs = seed if capacity_seed is None else capacity_seed
    rng = np.random.default_rng(np.random.SeedSequence(cs, spawn_key=(0x5EED,)))
    return predict_events(runner.events(sc, seed), capacity_params(sc), rng, gate_open_us(sc))


def gate_open_us(sc: Scenario) -> int:
    """When the gate opens (µs), as the simulator opens it."""
    return int(round(runner.gate_open_s(sc) * 1e6))


def gate_waits(sc: Scenario, seed: int) -> np.ndarray:
    """Each attendee's wait in a lane queue (s: from arrival, or the gate opening if later, to the scan).

    Only the gate is simulated (the other models do not change it: each has its own random stream).
    """
    gate_only = msgspec.structs.replace(sc, sales=None, webhook_burst=None, dashboard=None)
    obs = _Observer(gate_open_us(sc))
    for _ in obs.watch(runner.events(gate_only, seed)):
        pass
    return np.asarray(obs.waits, dtype=np.float64) / 1e6


# --- scenarios with values set ------------------------------------------------------------------


def key_path(key: str) -> tuple[str, ...]:
    """The path of a dotted key (TOML syntax: `capacity.targets."rpc:scan_ticket_atomic".workers`)."""
    try:
        d: Any = tomllib.loads(f"{key} = 0")
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError("", f"{key!r} is not a valid dotted key") from e
    path = []
    while isinstance(d, dict):
        ((k, d),) = d.items()
        path.append(k)
    return tuple(path)


def lookup(data: Mapping[str, Any], key: str) -> Any:
    """The value at a dotted key in plain scenario data (None when absent)."""
    d: Any = data
    for k in key_path(key):
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


def toml_value(v: Any) -> str:
    """A number or string as a TOML value (for `--set`-style overrides)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def with_values(data: Mapping[str, Any], values: Mapping[str, Any]) -> Scenario:
    """A validated scenario: plain scenario data with values set at dotted keys (ScenarioError names a bad one)."""
    d = copy.deepcopy(dict(data))
    apply_overrides(d, [f"{k}={toml_value(v)}" for k, v in values.items()])
    return parse(d)


def with_thresholds(
    data: Mapping[str, Any], thresholds: Mapping[str, Sequence[str]] | None
) -> dict[str, Any]:
    """Plain scenario data whose [thresholds] are replaced (when given)."""
    d = copy.deepcopy(dict(data))
    if thresholds:
        d["thresholds"] = {k: list(v) for k, v in thresholds.items()}
    return d


def summarize(pred: Predicted, metrics: Metrics | None = None) -> dict[str, float]:
    """Headline figures of a prediction: gate wait and request latency percentiles, failures, counts.

    `metrics` are the prediction's (judge.metrics.from_table of its table), computed when not given.
    """
    w = pred.gate_wait_s
    mt = metrics if metrics is not None else from_table(pred.table)
    dur = mt.get("http_req_duration")
    failed = mt.value("http_req_failed", "rate")
    out = {
        "attendees_scanned": float(len(w)),
        "gate_wait_p50_s": percentile(w, 0.50),
        "gate_wait_p95_s": percentile(w, 0.95),
        "gate_wait_max_s": float(w.max()) if len(w) else 0.0,
        "requests": float(len(dur)),
        "http_req_duration_p95_ms": percentile(dur.values, 0.95),
        "http_req_failed_rate": failed if len(dur) else 0.0,
    }
    target = dur.tags["target"]
    for name in sorted(target.labels[i] for i in np.unique(target.codes)):
        out[f"p95_ms{{{name}}}"] = percentile(dur.values[target.equals(name)], 0.95)
    return out


def evaluate(
    sc: Scenario, seed: int, judged: bool = True
) -> tuple[dict[str, float], th.Verdicts | None]:
    """Predict a scenario and (when `judged`) judge it by its own [thresholds]: (figures, verdicts)."""
    pred = predict_scenario(sc, seed)
    if not judged:
        return summarize(pred), None
    metrics, verdicts = judge_prediction(pred.table, {k: list(v) for k, v in sc.thresholds.items()})
    return summarize(pred, metrics), verdicts
