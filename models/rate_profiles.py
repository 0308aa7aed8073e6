"""Time-varying arrival rates and non-homogeneous Poisson sampling by thinning."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

CHUNK = 8192  # expected candidate points drawn per numpy call


@dataclass(frozen=True, slots=True)
class RateProfile:
    """A rate in events per second over time: knots (t_s, rate), `step` (held) or `linear` between them.

    The rate is 0 before the first knot and from the last knot on; with `step`, the last knot's rate is
    not used (it marks the end).
    """

    times: tuple[float, ...]
    rates: tuple[float, ...]
    mode: str = "step"

    def __post_init__(self) -> None:
        if len(self.times) != len(self.rates) or len(self.times) < 2:
            raise ValueError("a rate profile needs at least two knots (t, rate)")
        if any(b <= a for a, b in zip(self.times, self.times[1:], strict=False)):
            raise ValueError("knot times must increase strictly")
        if any(r < 0 for r in self.rates):
            raise ValueError("rates must be >= 0")
        if self.mode not in ("step", "linear"):
            raise ValueError("mode must be 'step' or 'linear'")

    @property
    def start(self) -> float:
        """Time of the first knot."""
        return self.times[0]

    @property
    def end(self) -> float:
        """Time of the last knot (no arrivals from then on)."""
        return self.times[-1]

    def rate(self, t: np.ndarray | float) -> np.ndarray:
        """The rate at time(s) t."""
        t = np.asarray(t, dtype=float)
        ts, rs = np.asarray(self.times), np.asarray(self.rates)
        if self.mode == "linear":
            return np.interp(t, ts, rs, left=0.0, right=0.0)
        idx = np.searchsorted(ts, t, side="right") - 1
        out = np.where((idx >= 0) & (idx < len(ts) - 1), rs[np.clip(idx, 0, len(rs) - 1)], 0.0)
        return out

    def integral(self, a: float, b: float) -> float:
        """The expected number of events in [a, b): the integral of the rate."""
        cum = self._cumulative()
        return float(self._cum_at(b, cum) - self._cum_at(a, cum))

    def total(self) -> float:
        """The expected number of events over the whole profile."""
        return self.integral(self.start, self.end)

    def scaled(self, factor: float) -> RateProfile:
        """The same shape with every rate multiplied by factor."""
        return RateProfile(self.times, tuple(r * factor for r in self.rates), self.mode)

    def _cumulative(self) -> np.ndarray:
        ts, rs = np.asarray(self.times), np.asarray(self.rates)
        dt = np.diff(ts)
        seg = dt * (rs[:-1] + rs[1:]) / 2 if self.mode == "linear" else dt * rs[:-1]
        return np.concatenate([[0.0], np.cumsum(seg)])

    def _cum_at(self, x: float, cum: np.ndarray) -> float:
        ts, rs = self.times, self.rates
        if x <= ts[0]:
            return 0.0
        if x >= ts[-1]:
            return float(cum[-1])
        i = int(np.searchsorted(ts, x, side="right")) - 1
        d = x - ts[i]
        if self.mode == "linear":
            r_x = rs[i] + (rs[i + 1] - rs[i]) * d / (ts[i + 1] - ts[i])
            return float(cum[i] + d * (rs[i] + r_x) / 2)
        return float(cum[i] + d * rs[i])


def constant(rate: float, start: float, duration: float) -> RateProfile:
    """A constant rate over [start, start + duration)."""
    return RateProfile((start, start + duration), (rate, 0.0), "step")


def stadium(
    attendees: float,
    start_s: float,
    gates_open_min: float = 90,
    early_min: float = 30,
    late_share: float = 0.6,
    after_share: float = 0.03,
    after_min: float = 30,
    peak_min: float = 15,
) -> RateProfile:
    """A stadium crowd: arrivals from `early_min` before the gates open, `late_share` of them in the
    last hour before the start with a peak `peak_min` before it, `after_share` latecomers after it.

    Piecewise linear: a ramp from half the early rate up to the rate an hour before the start, then up
    to the peak, down to the start, and to zero `after_min` after it. Raises ValueError when the shares
    cannot make such a shape.
    """
    first = start_s - (gates_open_min + early_min) * 60
    hour = start_s - 3600
    peak_t = start_s - peak_min * 60
    end = start_s + after_min * 60
    pre_share = 1.0 - late_share - after_share
    if pre_share < 0:
        raise ValueError("late_share + after_share must be <= 1")
    if first >= hour:
        raise ValueError(
            "gates_open_min + early_min must exceed 60 (the last hour is the late window)"
        )
    # pre window: linear from a/2 to a  ->  integral = T * 0.75 a
    a = pre_share * attendees / ((hour - first) * 0.75)
    q = 2 * after_share * attendees / (end - start_s) if after_min > 0 else 0.0
    t1, t2 = peak_t - hour, start_s - peak_t
    # late window integral: t1 (a + p) / 2 + t2 (p + q) / 2 = late_share * N
    p = (late_share * attendees - t1 * a / 2 - t2 * q / 2) / ((t1 + t2) / 2)
    if p < 0:
        raise ValueError(
            "late_share is too small for the other shares (the peak rate would be negative)"
        )
    times = [first, hour, peak_t, start_s]
    rates = [a / 2, a, p, q]
    if after_min > 0:
        times.append(end)
        rates.append(0.0)
    else:
        rates[-1] = 0.0
    return RateProfile(tuple(times), tuple(rates), "linear")


def thinned(profile: RateProfile, rng: np.random.Generator, chunk: int = CHUNK) -> Iterator[float]:
    """Event times of a non-homogeneous Poisson process with this rate, in increasing order.

    Lewis-Shedler thinning per segment between knots (the bound is the segment's own maximum, so a
    quiet hour costs no candidates); candidates come from numpy `chunk` at a time, so memory is
    bounded whatever the length.
    """
    ts, rs = profile.times, profile.rates
    for i in range(len(ts) - 1):
        a, b = ts[i], ts[i + 1]
        hi = rs[i] if profile.mode == "step" else max(rs[i], rs[i + 1])
        if hi <= 0:
            continue
        n_pieces = max(1, int(np.ceil(hi * (b - a) / chunk)))
        edges = np.linspace(a, b, n_pieces + 1)
        for lo, up in zip(edges[:-1], edges[1:], strict=True):
            n = rng.poisson(hi * (up - lo))
            if n == 0:
                continue
            t = np.sort(rng.uniform(lo, up, n))
            if profile.mode == "linear" and rs[i] != rs[i + 1]:
                keep = rng.random(n) * hi < profile.rate(t)
                t = t[keep]
            yield from t.tolist()
