"""Service-time and delay distributions, drawn from numpy in batches (never one call per event)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

KINDS = ("exponential", "lognormal", "fixed", "uniform")
BATCH = 4096  # values drawn per numpy call


@dataclass(frozen=True, slots=True)
class Dist:
    """A non-negative distribution of seconds: exponential(mean), lognormal(mean, sd), fixed(mean), uniform(low, high)."""

    dist: str = "fixed"
    mean: float = 0.0
    sd: float = 0.0
    low: float = 0.0
    high: float = 0.0

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
