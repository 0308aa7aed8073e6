"""Attendee arrivals: a non-homogeneous Poisson process of groups (thinning), or fixed bursts."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np
import simpy

from models.distributions import choices
from models.rate_profiles import RateProfile, thinned
from models.sink import Emit
from traces.event import ARRIVE


@dataclass(frozen=True, slots=True)
class ArrivalParams:
    """Who comes to the gate and when.

    `profile` is the attendee rate (attendees per second); groups arrive at that rate divided by the
    mean group size, and `group_weights[k]` is the weight of a group of k + 1. Without a profile,
    `burst` attendees arrive at once at each time of `burst_at` (a scanner burst).
    """

    profile: RateProfile | None = None
    group_weights: tuple[float, ...] = (1.0,)
    burst: int = 0
    burst_at: tuple[float, ...] = ()
    gate: str = "main"

    @property
    def mean_group(self) -> float:
        """Mean group size."""
        w = np.asarray(self.group_weights, dtype=float)
        return float((w * np.arange(1, len(w) + 1)).sum() / w.sum())

    def group_profile(self) -> RateProfile | None:
        """The rate of group arrivals."""
        return None if self.profile is None else self.profile.scaled(1.0 / self.mean_group)


Join = Callable[[list[str]], None]


def arrivals(
    env: simpy.Environment, params: ArrivalParams, rng: np.random.Generator, emit: Emit, join: Join
) -> Generator[simpy.Event, None, None]:
    """Emit an `arrive` per attendee and hand each group to `join` (the gate) as a list of actors."""
    times_rng, size_rng = rng.spawn(2)
    aid = 0
    if params.profile is None:
        times = iter(sorted(params.burst_at))
        sizes = iter(())
    else:
        times = thinned(params.group_profile(), times_rng)
        sizes = choices(size_rng, params.group_weights)
    gate = params.gate
    for group, t in enumerate(times):
        if t > env.now:
            yield env.timeout(t - env.now)
        k = params.burst if params.profile is None else next(sizes) + 1
        payload = {"gate": gate, "group": group, "size": k}
        actors = [f"attendee:{a}" for a in range(aid, aid + k)]
        for actor in actors:
            emit(ARRIVE, actor, None, payload)
        join(actors)
        aid += k
