"""Clock offsets between the replay client and its shards' hosts, measured as NTP does.

Each probe reads our wall clock, asks the remote one, and reads ours again: the remote read happened
somewhere inside that round trip, so ``offset = remote - midpoint`` is off by at most half the round
trip. Of several probes the one with the smallest round trip bounds the error best, and its half
round trip is the offset's uncertainty. The start instant is agreed in the client's clock; a shard
converts it to its own wall clock with its offset, then to its own monotonic clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ROUNDS = 8


@dataclass(frozen=True, slots=True)
class ClockOffset:
    """A remote wall clock against ours: remote = ours + offset_s, within ± uncertainty_s."""

    offset_s: float
    uncertainty_s: float  # half the round trip of the best probe
    rounds: int
    worst_delay_s: float = 0.0  # the slowest round trip: how late a message may arrive (the lead)

    def to_dict(self, **extra: Any) -> dict[str, Any]:
        """Microseconds for a result header (`extra`: shard, host)."""
        return {
            **extra,
            "offset_us": round(self.offset_s * 1e6),
            "uncertainty_us": round(self.uncertainty_s * 1e6),
            "rounds": self.rounds,
        }


def measure_offset(
    probe: Callable[[], float], rounds: int = ROUNDS, clock: Callable[[], float] = time.time
) -> ClockOffset:
    """The remote clock's offset from `rounds` probes (`probe` returns the remote wall time)."""
    if rounds < 1:
        raise ValueError(f"rounds: expected an integer >= 1, got {rounds}")
    best: tuple[float, float] | None = None
    worst = 0.0
    for _ in range(rounds):
        t0 = clock()
        remote = probe()
        t1 = clock()
        delay = max(0.0, t1 - t0)
        worst = max(worst, delay)
        if best is None or delay < best[0]:
            best = (delay, remote - (t0 + t1) / 2)
    assert best is not None
    return ClockOffset(best[1], best[0] / 2, rounds, worst)
