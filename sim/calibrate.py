"""Calibration: fit the backend capacity model (workers, service time per endpoint) to a replay's results.

For each target, from the requests that got an answer:

* the service time is what a request takes when nothing else of that target was in flight when it
  was sent (it cannot have queued): its distribution is the candidate (fixed, exponential,
  lognormal, uniform, moments matched) whose quantiles are closest to those durations;
* the workers are the count whose prediction best matches the measured durations when the model is
  fed the very send times of the replay (models.capacity: FIFO for the first free worker). Under a
  load that never queued, every count from some K up fits as well: K, the smallest, is kept and the
  fit says it is a lower bound ("never saturated").

The result is a `[capacity.targets."..."]` TOML table that scenarios (and `--backend`) accept.
"""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tomli_w

from models.capacity import Backend, CapacityParams, predict
from models.distributions import Dist
from sim.scenario import ScenarioError
from traces.event import Event

QUANTILES = (50.0, 75.0, 90.0, 95.0)  # the worker fit matches these of the durations
MIN_REQUESTS = 20
FIT_TOLERANCE = (
    0.02  # a worker count within this (mean |log ratio| of quantiles) of the best is as good
)


@dataclass(frozen=True, slots=True)
class Fit:
    """The fitted capacity of one target, and how well the model reproduces the measured durations."""

    target: str
    requests: int
    unqueued: int  # requests sent with nothing else in flight (the service time sample)
    service: Dist
    workers: int
    saturated: bool  # False: the load never queued, so `workers` is only a lower bound
    max_in_flight: int
    measured_ms: dict[str, float]  # p50, p95 of the measured durations
    predicted_ms: dict[str, float]  # the same, predicted by the fitted model on the same send times
    loss: float


def request_times(table: pa.Table, target: str) -> tuple[np.ndarray, np.ndarray]:
    """(sent_us, done_us) of a target's answered requests (no error, not a measurement), sorted by sent."""
    mask = pc.and_(pc.equal(table["target"], target), pc.is_null(table["error"]))
    if "metric" in table.column_names:
        mask = pc.and_(mask, pc.is_null(table["metric"]))
    t = table.filter(pc.fill_null(mask, False))
    sent = t["sent_us"].to_numpy().astype(np.int64)
    done = t["done_us"].to_numpy().astype(np.int64)
    order = np.argsort(sent, kind="stable")
    return sent[order], done[order]


def in_flight_at_send(sent: np.ndarray, done: np.ndarray) -> np.ndarray:
    """For each request (sorted by sent), how many earlier ones had not completed when it was sent."""
    finished = np.searchsorted(np.sort(done), sent, side="right")
    return np.arange(len(sent)) - finished


def p50_p95_ms(durations_s: np.ndarray) -> dict[str, float]:
    """The median and 95th percentile of durations in seconds, as milliseconds."""
    return {
        "p50": float(np.percentile(durations_s, 50)) * 1e3,
        "p95": float(np.percentile(durations_s, 95)) * 1e3,
    }


def _quantiles(x: np.ndarray) -> np.ndarray:
    return np.percentile(x, QUANTILES)


def _qloss(a: np.ndarray, b: np.ndarray) -> float:
    floor = 1e-6
    return float(np.mean(np.abs(np.log(np.maximum(a, floor) / np.maximum(b, floor)))))


def fit_service(durations_s: np.ndarray, seed: int = 0) -> Dist:
    """The candidate distribution whose quantiles best match the durations.

    Candidates (fixed, exponential, lognormal, uniform) are matched on the median and the
    interquartile range rather than on moments, so a few outliers (a cold connection, a GC pause
    on a shared machine) do not inflate the service time.
    """
    q25, med, q75 = (float(v) for v in np.percentile(durations_s, (25, 50, 75)))
    cands = [Dist("fixed", med), Dist("exponential", med / math.log(2))]
    if q25 > 0 and q75 > q25:
        sigma = (math.log(q75) - math.log(q25)) / 1.3489795  # the IQR of a standard normal
        mean = med * math.exp(sigma**2 / 2)
        cands.append(Dist("lognormal", mean, mean * math.sqrt(math.expm1(sigma**2))))
    if q75 > q25:
        half = q75 - q25
        cands.append(Dist("uniform", low=max(0.0, q25 - half / 2), high=q75 + half / 2))
    central = (10.0, 25.0, 50.0, 75.0, 90.0)
    observed = np.percentile(durations_s, central)
    rng = np.random.default_rng(seed)
    return min(cands, key=lambda d: _qloss(np.percentile(d.sample(rng, 20000), central), observed))


def _scaled(d: Dist, k: float) -> Dist:
    """The distribution with every time multiplied by k."""
    return Dist(d.dist, d.mean * k, d.sd * k, d.low * k, d.high * k)


def predicted_durations(
    sent_us: np.ndarray, backend: Backend, seed: int = 0, target: str = "t"
) -> np.ndarray:
    """Durations (s) the capacity model predicts for requests sent at `sent_us` to one backend."""
    evs = (
        Event(int(t), i, "request", "a", target, b"", None, None)
        for i, t in enumerate(sent_us.tolist())
    )
    params = CapacityParams(targets=((target, backend),), default=None)
    out = np.empty(len(sent_us))
    for p in predict(evs, params, np.random.default_rng(seed)):
        out[p.seq] = p.done_us - p.scheduled_us
    return out / 1e6


def _candidates(hi: int) -> list[int]:
    c, out = 1.0, set()
    while c < hi:
        out.add(int(round(c)))
        c *= 1.35
    out.add(hi)
    return sorted(out)


def _best_workers(loss: Callable[[int], float], hi: int) -> int:
    """The fewest workers whose loss is within FIT_TOLERANCE of the best (a coarse grid, then refined)."""
    grid = _candidates(hi)
    i = grid.index(min(grid, key=loss))
    near = range(grid[max(0, i - 1)], grid[min(len(grid) - 1, i + 1)] + 1)
    tried = {c: loss(c) for c in [*grid, *near]}
    floor = min(tried.values())
    return min(c for c, v in tried.items() if v <= floor + FIT_TOLERANCE)


def fit_target(target: str, sent: np.ndarray, done: np.ndarray, seed: int = 0) -> Fit:
    """Fit one target's service time and workers from its requests' send and completion times (µs)."""
    n = len(sent)
    if n < MIN_REQUESTS:
        raise ScenarioError(
            "", f"{target}: {n} answered requests, too few to fit (at least {MIN_REQUESTS})"
        )
    dur = (done - sent) / 1e6
    flight = in_flight_at_send(sent, done)
    level = 0
    while np.count_nonzero(flight <= level) < MIN_REQUESTS:
        level += 1
    quiet = dur[flight <= level]
    service = fit_service(quiet, seed)
    measured = _quantiles(dur)
    hi = int(flight.max()) + 1
    losses: dict[int, float] = {}

    def loss(c: int) -> float:
        if c not in losses:
            losses[c] = _qloss(
                _quantiles(predicted_durations(sent, Backend(c, service, None), seed)), measured
            )
        return losses[c]

    workers = _best_workers(loss, hi)
    # a request sent with fewer than `workers` in flight found a free worker: no queueing in its
    # duration either, so those are service times too (many more than the requests sent alone)
    free = dur[flight < workers]
    if len(free) > len(quiet):
        service = fit_service(free, seed)
        losses.clear()
        workers = _best_workers(loss, hi)
    floor = min(losses.values())
    saturated = loss(hi) > floor + FIT_TOLERANCE
    if saturated:
        # the queueing under load says more about the service time than the few quiet requests:
        # refine its scale on every request, the workers kept (the two trade off against each other)
        def scaled_loss(k: float) -> float:
            svc = _scaled(service, k)
            return _qloss(
                _quantiles(predicted_durations(sent, Backend(workers, svc, None), seed)), measured
            )

        scores = {float(k): scaled_loss(float(k)) for k in np.arange(0.8, 1.2001, 0.025)}
        k = min(scores, key=scores.get)
        if scores[k] < losses[workers]:
            service, losses[workers] = _scaled(service, k), scores[k]
    pred = predicted_durations(sent, Backend(workers, service, None), seed)
    return Fit(
        target,
        n,
        len(quiet),
        service,
        workers,
        saturated,
        int(flight.max()),
        p50_p95_ms(dur),
        p50_p95_ms(pred),
        losses[workers],
    )


def request_targets(table: pa.Table) -> list[str]:
    """The targets of a result table's request rows (not measurements such as dashboard loads)."""
    t = table.filter(pc.is_null(table["metric"])) if "metric" in table.column_names else table
    return sorted(
        v for v in pc.unique(t["target"]).to_pylist() if v and not v.startswith("realtime:")
    )


def calibrate(table: pa.Table, targets: Sequence[str] | None = None, seed: int = 0) -> list[Fit]:
    """Fit every target with enough answered requests (or the targets named)."""
    names = list(targets) if targets else request_targets(table)
    fits = []
    for name in names:
        sent, done = request_times(table, name)
        if targets or len(sent) >= MIN_REQUESTS:
            fits.append(fit_target(name, sent, done, seed))
    if not fits:
        raise ScenarioError("", f"no target has {MIN_REQUESTS} answered requests to fit")
    return fits


def _dist_plain(d: Dist) -> dict[str, Any]:
    keys = {"uniform": ("low", "high"), "lognormal": ("mean", "sd")}.get(d.dist, ("mean",))
    return {"dist": d.dist, **{k: float(f"{getattr(d, k):.6g}") for k in keys}}


def describe(f: Fit) -> str:
    """One line about a fit, for the terminal and the TOML comments."""
    svc = ", ".join(
        f"{k} {v * 1e3:.3g} ms" for k, v in _dist_plain(f.service).items() if k != "dist"
    )
    sat = (
        "saturated"
        if f.saturated
        else f"a lower bound: never saturated (at most {f.max_in_flight} in flight)"
    )
    return (
        f"{f.target}: {f.requests} requests ({f.unqueued} unqueued); service {f.service.dist} {svc}; "
        f"{f.workers} workers ({sat}); measured p50 {f.measured_ms['p50']:.3g} ms p95 {f.measured_ms['p95']:.3g} ms, "
        f"model p50 {f.predicted_ms['p50']:.3g} ms p95 {f.predicted_ms['p95']:.3g} ms"
    )


def backend_toml(fits: Sequence[Fit], source: str = "") -> str:
    """The fits as a scenario `[capacity]` table (TOML), each explained in a comment."""
    head = [f"# gaterush calibrate{': fitted from ' + source if source else ''}"]
    head += [f"# {describe(f)}" for f in fits]
    body = {
        "capacity": {
            "targets": {
                f.target: {"workers": f.workers, "service": _dist_plain(f.service)} for f in fits
            }
        }
    }
    return "\n".join(head) + "\n" + tomli_w.dumps(body)


def load_backend(path: str | Path) -> dict[str, Any]:
    """The `[capacity]` table of a backend file (as `calibrate` writes it); ScenarioError naming the file."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ScenarioError("", f"--backend {p}: cannot read: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ScenarioError("", f"--backend {p}: not valid TOML: {e}") from None
    cap = data.get("capacity")
    if not isinstance(cap, dict):
        raise ScenarioError(
            "capacity", f"--backend {p}: missing (expected a [capacity] table, as calibrate writes)"
        )
    return cap


def with_backend(data: Mapping[str, Any], capacity: Mapping[str, Any]) -> dict[str, Any]:
    """Scenario data with a backend's [capacity] laid over its own (targets merged, the backend's win)."""
    d = copy.deepcopy(dict(data))
    cap = d.setdefault("capacity", {})
    if "default" in capacity:
        cap["default"] = copy.deepcopy(capacity["default"])
    targets = cap.setdefault("targets", {})
    for name, b in (capacity.get("targets") or {}).items():
        targets[name] = copy.deepcopy(b)
    return d


def compare(
    table: pa.Table, fits: Sequence[Fit], seed: int = 0
) -> list[tuple[str, dict[str, float], dict[str, float]]]:
    """(target, measured p50/p95 ms, predicted p50/p95 ms) for another run's results under the fitted model."""
    out = []
    for f in fits:
        sent, done = request_times(table, f.target)
        if len(sent) == 0:
            continue
        pred = predicted_durations(sent, Backend(f.workers, f.service, None), seed)
        dur = (done - sent) / 1e6
        out.append((f.target, p50_p95_ms(dur), p50_p95_ms(pred)))
    return out
