"""Whether a replay was faithful: did the target get the load the trace describes, on time?

A load tester that falls behind its schedule offers less load than asked and measures its own
queue as the target's latency. So the verdict on the target comes with a verdict on the replay,
judged apart (k6 reports ``dropped_iterations`` for the same reason):

* ``schedule_lag`` (sent - scheduled) against its threshold, by default ``p(99)<10``
  (judge.thresholds.DEFAULT_THRESHOLDS; any threshold on ``schedule_lag`` or ``dropped_events``
  given by the user or the trace replaces it and is judged here too);
* events the sender dropped because it was overloaded (``--max-in-flight`` full). Drops the user
  asked for (a ``--rate-cap``) and drops of events whose dependency failed at the target are
  reported, not held against the replay;
* the sender's CPU share, when the result header has it (``sender``: CPU-seconds and wall seconds
  per process): a sender near 100% of its core that fell behind ran out of CPU;
* the clock offsets between sender hosts, when the result header has them (``clocks``, measured
  before the agreed start: replay.clocksync), reported with their uncertainty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from judge.rows import DROPPED_EVENTS
from judge.thresholds import FIDELITY_METRICS, Verdict

OVERLOAD_DROP = "dropped: max-in-flight"
CAP_DROP = "dropped: rate cap"
CPU_SATURATED = 0.9  # a sender process busier than this share of its core had no CPU to spare


@dataclass(frozen=True, slots=True)
class Fidelity:
    """The replay's own verdict: the schedule kept, events dropped, the sender's CPU."""

    verdicts: tuple[Verdict, ...]  # the thresholds on FIDELITY_METRICS
    overload_drops: int
    cap_drops: int
    other_drops: int
    cpu_share: float | None  # sender CPU-seconds per wall second per process (1.0 = a whole core)
    clock: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """The replay offered the trace's load on time: its verdict on the target can be trusted."""
        return all(v.ok for v in self.verdicts) and self.overload_drops == 0

    @property
    def cpu_saturated(self) -> bool:
        """The sender used (nearly) all of its core: it had no CPU to keep its schedule with."""
        return self.cpu_share is not None and self.cpu_share >= CPU_SATURATED

    def to_json(self) -> dict[str, Any]:
        """The fidelity verdict for the summary JSON."""
        return {
            "ok": self.ok,
            "thresholds": [
                {
                    "metric": v.threshold.selector.name,
                    "threshold": v.threshold.expression.source,
                    "ok": v.ok,
                    "observed": None if np.isnan(v.observed) else v.observed,
                }
                for v in self.verdicts
            ],  # fmt: skip
            "dropped": {
                "overload": self.overload_drops,
                "rate_cap": self.cap_drops,
                "dependency": self.other_drops,
            },
            "sender_cpu_share": self.cpu_share,
            "clock": self.clock,
        }


def is_fidelity(v: Verdict) -> bool:
    """Whether a verdict judges the replay (the sender) rather than the target."""
    return v.threshold.selector.metric in FIDELITY_METRICS


def assess(table: pa.Table, verdicts: Sequence[Verdict], headers: Sequence[Any] = ()) -> Fidelity:
    """The fidelity of a run from its result table, its verdicts and its result headers."""
    drops = _drop_reasons(table)
    overload = sum(n for why, n in drops.items() if why.startswith(OVERLOAD_DROP))
    capped = sum(n for why, n in drops.items() if why.startswith(CAP_DROP))
    other = sum(drops.values()) - overload - capped
    cpu, clock = _sender(headers)
    return Fidelity(
        tuple(v for v in verdicts if is_fidelity(v)), overload, capped, other, cpu, clock
    )


def _drop_reasons(table: pa.Table) -> dict[str, int]:
    if not len(table) or "metric" not in table.column_names:
        return {}
    rows = pc.fill_null(pc.equal(table["metric"], DROPPED_EVENTS), False)
    errors = pc.filter(table["error"], rows)
    if not len(errors):
        return {}
    counts = pc.value_counts(pc.fill_null(errors, ""))
    return {str(v["values"]): int(v["counts"]) for v in counts.to_pylist()}


def _sender(headers: Sequence[Any]) -> tuple[float | None, dict[str, Any] | None]:
    cpu = wall = 0.0
    clocks: list[dict[str, Any]] = []
    for h in headers:
        clocks += getattr(h, "clocks", None) or []
        s = getattr(h, "sender", None) or {}
        if s.get("cpu_s") is None or not s.get("wall_s"):
            continue
        cpu += float(s["cpu_s"])
        wall += float(s["wall_s"]) * max(1, int(s.get("processes", 1)))
    clock = clock_summary(clocks) if clocks else None
    return (cpu / wall if wall > 0 else None), clock


def clock_summary(clocks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What a faithfulness line says of the shards' clocks: the largest offset and uncertainty (ms)."""
    if not clocks:
        return {"shards": 0, "max_abs_offset_ms": 0.0, "max_uncertainty_ms": 0.0}
    return {
        "shards": len(clocks),
        "max_abs_offset_ms": max(abs(c["offset_us"]) for c in clocks) / 1000,
        "max_uncertainty_ms": max(c["uncertainty_us"] for c in clocks) / 1000,
    }
