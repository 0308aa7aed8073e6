"""Knobs for studies: added latency, capacity (workers), injected errors and stalls per endpoint,
and the Stripe subset's webhook delivery semantics. Frozen, validated once at the edge.

Endpoint names are trace target names (`rpc:scan_ticket_atomic`, `fn:stripe-webhook`,
`rest:tickets`, `stripe:payment_intents.confirm`, ...); `rpc:*` covers a kind and `*` everything.

TOML / JSON shape (also what `POST /admin/v1/knobs` takes):

    seed = 1
    [endpoints."rpc:scan_ticket_atomic"]
    latency = "exp:5ms"       # fixed "20ms", "uniform:10ms..50ms", "exp:MEAN", "normal:MEAN,SD", "lognormal:MEDIAN,SIGMA"
    workers = 8               # capacity: excess requests wait, as on a connection pool
    error_rate = 0.01         # share answered 500 without touching state
    stall_rate = 0.001        # share that stall for `stall` before being served
    stall = "2s"
    [delivery]                # webhooks the Stripe subset sends
    delay = "exp:200ms"
    duplicate_rate = 0.02
    max_attempts = 5
    retry_base = "500ms"      # backoff: retry_base * 2**attempt
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any


class KnobError(ValueError):
    """A knob value is wrong; the message names the key."""


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(us|µs|ms|s|m)?\s*$")
MAX_DURATION = 3600.0  # seconds: longer latencies and stalls are typos, not studies
MAX_SIGMA = 3.0  # lognormal sigma: beyond it one draw in a thousand is over e^9 times the median
_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, None: 1e-3}


def parse_duration(text: Any, key: str) -> float:
    """Seconds from '20ms', '1.5s', '300us' or a bare number of milliseconds."""
    if isinstance(text, bool):
        raise KnobError(f"{key}: expected a duration like '20ms', got {text!r}")
    if isinstance(text, int | float):
        value = float(text) * 1e-3
    else:
        m = _DURATION.match(str(text))
        if not m:
            raise KnobError(f"{key}: expected a duration like '20ms' or '1.5s', got {text!r}")
        value = float(m.group(1)) * _UNITS[m.group(2)]
    if not math.isfinite(value) or value < 0:
        raise KnobError(f"{key}: expected a duration >= 0, got {text!r}")
    if value > MAX_DURATION:
        raise KnobError(f"{key}: {text!r} is longer than the limit of {MAX_DURATION:g} s")
    return value


@dataclass(frozen=True, slots=True)
class Latency:
    """A latency distribution in seconds: fixed, uniform, exp, normal (clipped at 0) or lognormal."""

    kind: str = "fixed"
    a: float = 0.0
    b: float = 0.0

    def sample(self, rng: random.Random) -> float:
        """One draw, in seconds, never negative."""
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        if self.kind == "exp":
            return min(MAX_DURATION, rng.expovariate(1.0 / self.a)) if self.a > 0 else 0.0
        if self.kind == "normal":
            return min(MAX_DURATION, max(0.0, rng.gauss(self.a, self.b)))
        # lognormal: median a, sigma b; a draw never exceeds MAX_DURATION
        return min(MAX_DURATION, self.a * math.exp(min(50.0, rng.gauss(0.0, self.b))))

    @property
    def mean(self) -> float:
        """The distribution's mean in seconds (normal ignores the clip)."""
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        if self.kind == "lognormal":
            return self.a * math.exp(self.b**2 / 2)
        return self.a

    def spec(self) -> str:
        """The text form parse_latency reads back."""
        ms = lambda s: f"{s * 1e3:g}ms"  # noqa: E731
        return {
            "fixed": lambda: ms(self.a),
            "uniform": lambda: f"uniform:{ms(self.a)}..{ms(self.b)}",
            "exp": lambda: f"exp:{ms(self.a)}",
            "normal": lambda: f"normal:{ms(self.a)},{ms(self.b)}",
            "lognormal": lambda: f"lognormal:{ms(self.a)},{self.b:g}",
        }[self.kind]()


def parse_latency(text: Any, key: str) -> Latency:
    """A Latency from '20ms', 'uniform:10ms..50ms', 'exp:20ms', 'normal:20ms,5ms', 'lognormal:20ms,0.5'."""
    if not isinstance(text, str):
        return Latency("fixed", parse_duration(text, key))
    kind, sep, rest = text.partition(":")
    kind = kind.strip().lower()
    if not sep:
        return Latency("fixed", parse_duration(text, key))
    try:
        if kind == "fixed":
            return Latency("fixed", parse_duration(rest, key))
        if kind == "uniform":
            lo, _, hi = rest.partition("..")
            a, b = parse_duration(lo, key), parse_duration(hi, key)
            if b < a:
                raise KnobError(f"{key}: uniform needs low <= high, got {text!r}")
            return Latency("uniform", a, b)
        if kind == "exp":
            return Latency("exp", parse_duration(rest, key))
        if kind == "normal":
            mean, _, sd = rest.partition(",")
            return Latency("normal", parse_duration(mean, key), parse_duration(sd, key))
        if kind == "lognormal":
            median, _, sigma = rest.partition(",")
            s = float(sigma)
            if not math.isfinite(s) or s < 0 or s > MAX_SIGMA:
                raise KnobError(
                    f"{key}: lognormal sigma must be between 0 and {MAX_SIGMA:g}, got {sigma.strip()!r}"
                )
            return Latency("lognormal", parse_duration(median, key), s)
    except KnobError:
        raise
    except ValueError as exc:
        raise KnobError(f"{key}: cannot read latency {text!r}: {exc}") from None
    raise KnobError(
        f"{key}: unknown latency distribution {kind!r}; use fixed, uniform, exp, normal or lognormal"
    )


@dataclass(frozen=True, slots=True)
class EndpointKnobs:
    """What one endpoint adds to a request: latency, a capacity, injected errors and stalls."""

    latency: Latency | None = None
    workers: int | None = None
    error_rate: float = 0.0
    stall_rate: float = 0.0
    stall: float = 0.0  # seconds

    @property
    def inert(self) -> bool:
        """True when these knobs change nothing."""
        return (
            self.latency is None
            and self.workers is None
            and self.error_rate == 0
            and (self.stall_rate == 0 or self.stall == 0)
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.latency is not None:
            d["latency"] = self.latency.spec()
        if self.workers is not None:
            d["workers"] = self.workers
        if self.error_rate:
            d["error_rate"] = self.error_rate
        if self.stall_rate:
            d["stall_rate"] = self.stall_rate
            d["stall"] = f"{self.stall * 1e3:g}ms"
        return d


@dataclass(frozen=True, slots=True)
class DeliveryKnobs:
    """How the Stripe subset delivers webhooks: delay, duplicates, retries with backoff."""

    delay: Latency = field(default_factory=lambda: Latency("exp", 0.05))
    duplicate_rate: float = 0.02
    max_attempts: int = 5
    retry_base: float = 0.25  # seconds; attempt n waits retry_base * 2**(n-1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "delay": self.delay.spec(),
            "duplicate_rate": self.duplicate_rate,
            "max_attempts": self.max_attempts,
            "retry_base": f"{self.retry_base * 1e3:g}ms",
        }


INERT = EndpointKnobs()


@dataclass(frozen=True, slots=True)
class Knobs:
    """All knobs of a stand-in."""

    endpoints: Mapping[str, EndpointKnobs] = field(default_factory=dict)
    delivery: DeliveryKnobs = field(default_factory=DeliveryKnobs)
    seed: int | None = None

    def for_endpoint(self, name: str) -> EndpointKnobs:
        """The knobs of an endpoint: its own, else its kind's (`rpc:*`), else `*`, else inert."""
        eps = self.endpoints
        if not eps:
            return INERT
        k = eps.get(name)
        if k is None:
            k = eps.get(name.partition(":")[0] + ":*") or eps.get("*") or INERT
        return k

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "endpoints": {k: v.to_dict() for k, v in self.endpoints.items()},
            "delivery": self.delivery.to_dict(),
        }
        if self.seed is not None:
            d["seed"] = self.seed
        return d


def _rate(v: Any, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not (0.0 <= float(v) <= 1.0):
        raise KnobError(f"{key}: expected a number between 0 and 1, got {v!r}")
    return float(v)


def _int(v: Any, key: str, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise KnobError(f"{key}: expected an integer >= {lo}, got {v!r}")
    return v


def _endpoint(base: EndpointKnobs, d: Any, key: str) -> EndpointKnobs:
    if not isinstance(d, Mapping):
        raise KnobError(f"{key}: expected a table of knobs, got {d!r}")
    changes: dict[str, Any] = {}
    for k, v in d.items():
        kk = f"{key}.{k}"
        if k == "latency":
            changes["latency"] = None if v in (None, "", "0", 0) else parse_latency(v, kk)
        elif k == "workers":
            changes["workers"] = None if v in (None, 0) else _int(v, kk, 1)
        elif k == "error_rate":
            changes["error_rate"] = _rate(v, kk)
        elif k == "stall_rate":
            changes["stall_rate"] = _rate(v, kk)
        elif k == "stall":
            changes["stall"] = parse_duration(v, kk)
        else:
            raise KnobError(
                f"{kk}: unknown knob; known: latency, workers, error_rate, stall_rate, stall"
            )
    return replace(base, **changes)


def _delivery(base: DeliveryKnobs, d: Any, key: str) -> DeliveryKnobs:
    if not isinstance(d, Mapping):
        raise KnobError(f"{key}: expected a table, got {d!r}")
    changes: dict[str, Any] = {}
    for k, v in d.items():
        kk = f"{key}.{k}"
        if k == "delay":
            changes["delay"] = parse_latency(v, kk)
        elif k == "duplicate_rate":
            changes["duplicate_rate"] = _rate(v, kk)
        elif k == "max_attempts":
            changes["max_attempts"] = _int(v, kk, 1)
        elif k == "retry_base":
            changes["retry_base"] = parse_duration(v, kk)
        else:
            raise KnobError(
                f"{kk}: unknown knob; known: delay, duplicate_rate, max_attempts, retry_base"
            )
    return replace(base, **changes)


def merge_knobs(base: Knobs, d: Any) -> Knobs:
    """`base` with the knobs of a TOML/JSON dict applied on top (an endpoint's unnamed knobs are kept)."""
    if not isinstance(d, Mapping):
        raise KnobError(f"knobs: expected a table, got {type(d).__name__}")
    endpoints = dict(base.endpoints)
    delivery = base.delivery
    seed = base.seed
    for k, v in d.items():
        if k == "endpoints":
            if not isinstance(v, Mapping):
                raise KnobError(f"endpoints: expected a table of endpoint names, got {v!r}")
            for name, ek in v.items():
                _check_endpoint_name(name)
                endpoints[name] = _endpoint(endpoints.get(name, INERT), ek, f"endpoints.{name}")
        elif k == "delivery":
            delivery = _delivery(delivery, v, "delivery")
        elif k == "seed":
            seed = None if v is None else _int(v, "seed", 0)
        else:
            raise KnobError(f"{k}: unknown key; known: endpoints, delivery, seed")
    endpoints = {n: e for n, e in endpoints.items() if not e.inert}
    return Knobs(endpoints=endpoints, delivery=delivery, seed=seed)


def knobs_from_dict(d: Any) -> Knobs:
    """Knobs from a TOML/JSON dict; KnobError naming the key on a bad value."""
    return merge_knobs(Knobs(), d)


def _check_endpoint_name(name: Any) -> None:
    if not isinstance(name, str) or not name or (name != "*" and ":" not in name):
        raise KnobError(
            f"endpoints.{name}: expected a target name like 'rpc:scan_ticket_atomic', 'rest:*' or '*'"
        )
