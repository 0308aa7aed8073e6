"""Service-time and delay distributions, drawn from numpy in batches (never one call per event)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from traces.config import KeyedError, Value, describe
from traces.limits import MAX_SECONDS, over_limit

KINDS = ("exponential", "lognormal", "fixed", "uniform")
BATCH = 4096  # values drawn per numpy call


class Dist(Value):
    """A non-negative distribution of seconds: exponential(mean), lognormal(mean, sd), fixed(mean), uniform(low, high)."""

    __slots__ = ("dist", "mean", "sd", "low", "high")
    DEFAULTS = ("fixed", 0.0, 0.0, 0.0, 0.0)
    dist: str
    mean: float
    sd: float
    low: float
    high: float

    @property
    def expected(self) -> float:
        """The mean of the distribution."""
        if self.dist == "uniform":
            return (self.low + self.high) / 2
        return self.mean

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n independent draws as a float64 array."""
        if self.dist == "exponential":
            return rng.exponential(self.mean, n) if self.mean > 0 else np.zeros(n)
        if self.dist == "lognormal":
            if self.sd <= 0:
                return np.full(n, self.mean)
            # mean and sd of the lognormal itself, not of the underlying normal
            s2 = np.log1p((self.sd / self.mean) ** 2)
            return rng.lognormal(np.log(self.mean) - s2 / 2, np.sqrt(s2), n)
        if self.dist == "uniform":
            return rng.uniform(self.low, self.high, n)
        if self.dist == "fixed":
            return np.full(n, self.mean)
        raise ValueError(f"unknown distribution {self.dist!r}; expected one of {', '.join(KINDS)}")

    def stream(self, rng: np.random.Generator) -> Iterator[float]:
        """An endless iterator of draws; numbers come from numpy BATCH at a time."""
        return batched(lambda: self.sample(rng, BATCH))


def batched(draw) -> Iterator[float]:
    """An endless iterator over successive arrays returned by draw(), as Python floats."""
    while True:
        yield from draw().tolist()


def uniforms(rng: np.random.Generator) -> Iterator[float]:
    """An endless iterator of U[0, 1) draws, drawn in batches."""
    return batched(lambda: rng.random(BATCH))


def choices(rng: np.random.Generator, weights: tuple[float, ...]) -> Iterator[int]:
    """An endless iterator of indices drawn with the given (not necessarily normalised) weights."""
    p = np.asarray(weights, dtype=float)
    p = p / p.sum()
    return batched(lambda: rng.choice(len(p), size=BATCH, p=p))


_PARAMS = {
    "exponential": ("mean",),
    "fixed": ("mean",),
    "lognormal": ("mean", "sd"),
    "uniform": ("low", "high"),
}


def _seconds(sub: str, v: Any, positive: bool) -> float:
    what = "a number > 0" if positive else "a number >= 0"
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise KeyedError(sub, f"expected {what}, got {describe(v)}")
    if not math.isfinite(v):
        raise KeyedError(sub, f"expected a finite number, got {v!r}")
    if v < 0 or (positive and v == 0):
        raise KeyedError(sub, f"expected {what}, got {v!r}")
    problem = over_limit(v, MAX_SECONDS, size=False)
    if problem:
        raise KeyedError(sub, problem)
    return float(v)


def read_dist(v: Any) -> Dist:
    """A Dist from a config value: a table {dist = "lognormal", mean = 3.5, sd = 1.5} or a number
    of seconds (fixed); KeyedError naming the key below the value."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        return Dist("fixed", _seconds("", v, False))
    if not isinstance(v, dict):
        raise KeyedError(
            "",
            'expected a distribution table like {dist = "exponential", mean = 3.0}'
            f" or a number of seconds, got {describe(v)}",
        )
    kind = v.get("dist")
    if kind not in KINDS:
        raise KeyedError(".dist", f"expected one of {', '.join(KINDS)}, got {describe(kind)}")
    allowed = _PARAMS[kind]
    for k in v:
        if k != "dist" and k not in allowed:
            raise KeyedError(
                f".{k}", f"unknown key for a {kind} distribution (it takes {', '.join(allowed)})"
            )
    for k in allowed:
        if k not in v:
            raise KeyedError(f".{k}", f"missing (a {kind} distribution needs {', '.join(allowed)})")
    nums = {k: _seconds(f".{k}", v[k], k == "mean" and kind == "lognormal") for k in allowed}
    if kind == "uniform" and nums["high"] < nums["low"]:
        raise KeyedError(
            ".high", f"expected a number >= low ({nums['low']:g}), got {nums['high']!r}"
        )
    return Dist(kind, **nums)


def dist_plain(d: Dist) -> dict[str, Any]:
    """A Dist as the table read_dist reads back."""
    return {"dist": d.dist, **{k: getattr(d, k) for k in _PARAMS.get(d.dist, ("mean",))}}
