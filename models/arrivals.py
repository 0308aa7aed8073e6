"""Attendee arrivals: a non-homogeneous Poisson process of groups (thinning), or fixed bursts."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import simpy
from msgspec import Meta

from models import rate_profiles
from models.distributions import choices
from models.rate_profiles import RateProfile, thinned
from models.sink import Emit
from traces.config import NonNegative, Positive, Probability, Section, Weights
from traces.event import ARRIVE
from traces.limits import MAX_COUNT, MAX_PEOPLE, MAX_SECONDS


class CrowdParams(Section):
    """The [arrivals] table, how the crowd comes: profile stadium | constant | table | burst, in groups."""

    profile: Literal["stadium", "constant", "table", "burst"] = "constant"
    # expected attendees (stadium, constant, and per wave for burst; a table gives its own rates)
    attendees: Annotated[int, Meta(ge=0, extra={"limit": MAX_PEOPLE})] = 1000
    group_sizes: Weights = (1.0,)  # weights of groups of 1, 2, 3, ...
    # stadium
    gates_open_min: Positive = 90.0  # the lanes start scanning this long before the start
    early_min: NonNegative = 30.0  # the first arrivals come this long before the gates open
    late_share: Probability = 0.6
    after_share: Probability = 0.03
    after_min: NonNegative = 30.0
    peak_min: Annotated[float, Meta(gt=0, lt=60)] = 15.0
    # constant
    start_s: NonNegative = 0.0
    duration_s: Positive = 600.0
    # table: [[t_s, attendees per second], ...]
    table: tuple[
        tuple[
            Annotated[float, Meta(ge=0, extra={"limit": MAX_SECONDS})],
            Annotated[float, Meta(ge=0, extra={"limit": MAX_SECONDS})],
        ],
        ...,
    ] = ()
    interpolate: Literal["step", "linear"] = "step"
    # burst: `attendees` at once, `waves` times, `wave_gap_s` apart, from start_s
    waves: Annotated[int, Meta(ge=1, extra={"limit": MAX_COUNT})] = 1
    wave_gap_s: NonNegative = 5.0

    def rate_profile(self, event_start_s: float) -> RateProfile | None:
        """The attendee rate (None for a burst); a stadium crowd comes before `event_start_s`."""
        if self.profile == "burst":
            return None
        if self.profile == "stadium":
            return rate_profiles.stadium(
                self.attendees,
                event_start_s,
                self.gates_open_min,
                self.early_min,
                self.late_share,
                self.after_share,
                self.after_min,
                self.peak_min,
            )
        if self.profile == "constant":
            return rate_profiles.constant(
                self.attendees / self.duration_s, self.start_s, self.duration_s
            )
        return RateProfile(
            tuple(r[0] for r in self.table), tuple(r[1] for r in self.table), self.interpolate
        )

    def process(self, event_start_s: float, gate: str) -> ArrivalParams:
        """What the arrival process draws from: the rate profile, or the burst's times."""
        return ArrivalParams(
            profile=self.rate_profile(event_start_s),
            group_weights=self.group_sizes,
            burst=self.attendees,
            burst_at=tuple(self.start_s + w * self.wave_gap_s for w in range(self.waves)),
            gate=gate,
        )


@dataclass(frozen=True, slots=True)
class ArrivalParams:
    """Who comes to the gate and when, as the process draws it (CrowdParams.process makes it).

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
