"""Capacity answers: the fewest lanes keeping the gate wait under a target, and the largest crowd the
backend holds under the thresholds. Both search on the simulator (doubling, then bisection).

Both assume monotony (more lanes never lengthen the wait; a bigger crowd never helps the backend),
which holds on average; every evaluation uses the same seed, so neighbouring points share their dice
and the answer is the boundary for that seed. The answers list every point tried, so the margin
around the boundary is visible.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec.structs

from judge.metrics import percentile
from judge.thresholds import Verdicts
from sim.predict import evaluate, gate_waits
from sim.scenario import Scenario, ScenarioError, parse

MAX_LANES = 100_000
MAX_MULTIPLIER = 1024.0


@dataclass(frozen=True, slots=True)
class LanesAnswer:
    """The fewest lanes whose gate wait quantile stays under the target (None: not within MAX_LANES)."""

    lanes: int | None
    wait_s: float | None  # the quantile at that many lanes
    quantile: float
    target_s: float
    tried: tuple[tuple[int, float], ...]  # (lanes, wait quantile) in the order tried


def fewest_lanes(
    sc: Scenario,
    seed: int,
    target_s: float,
    quantile: float = 95.0,
    max_lanes: int = MAX_LANES,
    progress: Callable[[int, float], None] | None = None,
) -> LanesAnswer:
    """The fewest gate lanes whose `quantile` (0-100) gate wait is <= target_s, by doubling then bisection."""
    if sc.gate is None:
        raise ScenarioError("gate", "missing: the lanes question needs [arrivals] and a [gate]")
    if not 0 < quantile <= 100:
        raise ScenarioError("", f"--quantile: expected a number in (0, 100], got {quantile:g}")
    if not target_s >= 0:
        raise ScenarioError("", f"--max-wait: expected seconds >= 0, got {target_s:g}")
    tried: dict[int, float] = {}

    def wait(lanes: int) -> float:
        if lanes not in tried:
            more = msgspec.structs.replace(sc, gate=msgspec.structs.replace(sc.gate, lanes=lanes))
            tried[lanes] = percentile(gate_waits(more, seed), quantile / 100)
            if progress is not None:
                progress(lanes, tried[lanes])
        return tried[lanes]

    lo, hi = 0, sc.gate.lanes  # wait(lo) fails (0 lanes: nobody gets in), wait(hi) to be found
    while wait(hi) > target_s:
        if hi >= max_lanes:
            return LanesAnswer(None, None, quantile, target_s, tuple(tried.items()))
        lo, hi = hi, min(hi * 2, max_lanes)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if wait(mid) <= target_s:
            hi = mid
        else:
            lo = mid
    return LanesAnswer(hi, tried[hi], quantile, target_s, tuple(tried.items()))


def scaled(sc: Scenario, factor: float) -> Scenario:
    """The scenario with its crowd times `factor`: attendees (and arrival rates), tickets, buyers, webhooks, viewers.

    Lanes and backends stay: the question is what the same venue and backend do with more people.
    """
    if not factor > 0:
        raise ScenarioError("", f"crowd multiplier: expected a number > 0, got {factor:g}")
    d = sc.to_dict()

    def mul(table: Mapping[str, Any] | None, key: str, minimum: int = 0) -> None:
        if table is not None and key in table:
            table[key] = max(minimum, int(math.ceil(table[key] * factor - 1e-9)))

    d = copy.deepcopy(d)
    ev = d["event"]
    mul(ev, "presold")
    mul(ev, "capacity")
    if ev["capacity"] < ev["presold"]:
        ev["capacity"] = ev["presold"]
    arr = d.get("arrivals")
    if arr is not None:
        mul(arr, "attendees")
        if arr.get("table"):
            arr["table"] = [[t, r * factor] for t, r in arr["table"]]
    mul(d.get("sales"), "buyers")
    mul(d.get("webhook_burst"), "events")
    mul(d.get("dashboard"), "viewers")
    return parse(d)


@dataclass(frozen=True, slots=True)
class MultiplierAnswer:
    """The largest crowd multiplier under which every threshold held (None: not even the smallest tried)."""

    multiplier: float | None
    failing_at: (
        float | None
    )  # the smallest multiplier seen failing (None: none failed up to the cap)
    judgement: Verdicts | None  # at `multiplier`
    failing: Verdicts | None  # at `failing_at`
    tried: tuple[tuple[float, bool], ...]


def largest_multiplier(
    sc: Scenario,
    seed: int,
    *,
    tolerance: float = 0.02,
    low: float = 1 / 64,
    high: float = MAX_MULTIPLIER,
    progress: Callable[[float, Verdicts], None] | None = None,
) -> MultiplierAnswer:
    """The largest crowd multiplier the backend holds under the scenario's thresholds, to `tolerance` (relative)."""
    if not sc.thresholds:
        raise ScenarioError(
            "thresholds",
            "missing: give --threshold or a [thresholds] table to judge the backend by",
        )
    results: dict[float, Verdicts] = {}

    def holds(m: float) -> bool:
        if m not in results:
            _, j = evaluate(scaled(sc, m), seed)
            assert j is not None
            results[m] = j
            if progress is not None:
                progress(m, j)
        return results[m].ok

    ok_m, bad_m = None, None
    m = 1.0
    if holds(m):
        ok_m = m
        while ok_m < high:
            m = min(ok_m * 2, high)
            if not holds(m):
                bad_m = m
                break
            ok_m = m
    else:
        bad_m = m
        while bad_m > low:
            m = max(bad_m / 2, low)
            if holds(m):
                ok_m = m
                break
            bad_m = m
    if ok_m is not None and bad_m is not None:
        while bad_m / ok_m > 1 + tolerance:
            mid = math.sqrt(ok_m * bad_m)
            if holds(mid):
                ok_m = mid
            else:
                bad_m = mid
    tried = tuple((k, v.ok) for k, v in results.items())
    return MultiplierAnswer(
        ok_m,
        bad_m,
        results.get(ok_m) if ok_m else None,
        results.get(bad_m) if bad_m else None,
        tried,
    )
