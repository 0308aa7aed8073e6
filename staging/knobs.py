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
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

from msgspec import UNSET, Meta, UnsetType

from traces import config
from traces.durations import DurationMs


class KnobError(config.ConfigError):
    """A knob value is wrong; the message names the key."""


MAX_DURATION = 3600.0  # seconds: longer latencies and stalls are typos, not studies
MAX_SIGMA = 3.0  # lognormal sigma: beyond it one draw in a thousand is over e^9 times the median


def parse_duration(text: Any, key: str) -> float:
    """Seconds from '20ms', '1.5s', '300us' or a bare number of milliseconds."""
    try:
        value = DurationMs.parse(text)
    except ValueError:
        raise KnobError(key, f"expected a duration like '20ms' or '1.5s', got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise KnobError(key, f"expected a duration >= 0, got {text!r}")
    if value > MAX_DURATION:
        raise KnobError(key, f"{text!r} is longer than the limit of {MAX_DURATION:g} s")
    return float(value)


class Latency(config.Value):
    """A latency distribution in seconds: fixed, uniform, exp, normal (clipped at 0) or lognormal."""

    __slots__ = ("kind", "a", "b")
    DEFAULTS = ("fixed", 0.0, 0.0)
    kind: str
    a: float
    b: float

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
        ms = lambda s: DurationMs(s).format()  # noqa: E731
        return {
            "fixed": lambda: ms(self.a),
            "uniform": lambda: f"uniform:{ms(self.a)}..{ms(self.b)}",
            "exp": lambda: f"exp:{ms(self.a)}",
            "normal": lambda: f"normal:{ms(self.a)},{ms(self.b)}",
            "lognormal": lambda: f"lognormal:{ms(self.a)},{self.b:g}",
        }[self.kind]()


OFF = Latency("off")  # a patch's `latency = 0` or "": no added latency


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
                raise KnobError(key, f"uniform needs low <= high, got {text!r}")
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
                    key,
                    f"lognormal sigma must be between 0 and {MAX_SIGMA:g}, got {sigma.strip()!r}",
                )
            return Latency("lognormal", parse_duration(median, key), s)
    except KnobError:
        raise
    except ValueError as exc:
        raise KnobError(key, f"cannot read latency {text!r}: {exc}") from None
    raise KnobError(
        key, f"unknown latency distribution {kind!r}; use fixed, uniform, exp, normal or lognormal"
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
            d["stall"] = DurationMs(self.stall).format()
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
            "retry_base": DurationMs(self.retry_base).format(),
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


# What a TOML/JSON dict of knobs may hold: every key optional (UNSET: keep the base's value).
Rate = Annotated[float, Meta(ge=0, le=1)]


class EndpointPatch(config.Section):
    """Knobs of one endpoint to change; `latency = 0` and `workers = 0` switch them off."""

    latency: Latency | None | UnsetType = UNSET
    workers: Annotated[int, Meta(ge=0)] | None | UnsetType = UNSET
    error_rate: Rate | UnsetType = UNSET
    stall_rate: Rate | UnsetType = UNSET
    stall: DurationMs | UnsetType = UNSET


class DeliveryPatch(config.Section):
    """Webhook delivery knobs to change."""

    delay: Latency | UnsetType = UNSET
    duplicate_rate: Rate | UnsetType = UNSET
    max_attempts: Annotated[int, Meta(ge=1)] | UnsetType = UNSET
    retry_base: DurationMs | UnsetType = UNSET


class KnobsPatch(config.Section):
    """A TOML/JSON dict of knobs, decoded."""

    endpoints: dict[str, EndpointPatch] = {}
    delivery: DeliveryPatch = DeliveryPatch()
    seed: Annotated[int, Meta(ge=0)] | None | UnsetType = UNSET


def _read_latency(v: Any) -> Latency:
    if v in ("", "0", 0) and not isinstance(v, bool):
        return OFF
    try:
        return parse_latency(v, "")
    except KnobError as e:
        raise config.KeyedError("", e.message) from None


def _read_duration(v: Any) -> DurationMs:
    try:
        return DurationMs(parse_duration(v, ""))
    except KnobError as e:
        raise config.KeyedError("", e.message) from None


def _changes(patch: config.Section) -> dict[str, Any]:
    return {k: getattr(patch, k) for k in patch.__struct_fields__ if getattr(patch, k) is not UNSET}


def _endpoint(base: EndpointKnobs, patch: EndpointPatch) -> EndpointKnobs:
    changes = _changes(patch)
    if "latency" in changes and changes["latency"] in (None, OFF):
        changes["latency"] = None
    if changes.get("workers") == 0:
        changes["workers"] = None
    if "stall" in changes:
        changes["stall"] = float(changes["stall"])
    return replace(base, **changes)


def merge_knobs(base: Knobs, d: Any) -> Knobs:
    """`base` with the knobs of a TOML/JSON dict applied on top (an endpoint's unnamed knobs are kept)."""
    if not isinstance(d, Mapping):
        raise KnobError("knobs", f"expected a table, got {type(d).__name__}")
    if isinstance(d.get("endpoints"), Mapping):
        for name in d["endpoints"]:
            _check_endpoint_name(name)
    patch = config.decode(
        KnobsPatch,
        dict(d),
        readers={Latency: _read_latency, DurationMs: _read_duration},
        error=KnobError,
        quote=False,
    )
    endpoints = dict(base.endpoints)
    for name, ep in patch.endpoints.items():
        endpoints[name] = _endpoint(endpoints.get(name, INERT), ep)
    delivery = _changes(patch.delivery)
    if "retry_base" in delivery:
        delivery["retry_base"] = float(delivery["retry_base"])
    seed = base.seed if patch.seed is UNSET else patch.seed
    endpoints = {n: e for n, e in endpoints.items() if not e.inert}
    return Knobs(endpoints=endpoints, delivery=replace(base.delivery, **delivery), seed=seed)


def knobs_from_dict(d: Any) -> Knobs:
    """Knobs from a TOML/JSON dict; KnobError naming the key on a bad value."""
    return merge_knobs(Knobs(), d)


def _check_endpoint_name(name: Any) -> None:
    if not isinstance(name, str) or not name or (name != "*" and ":" not in name):
        raise KnobError(
            f"endpoints.{name}",
            "expected a target name like 'rpc:scan_ticket_atomic', 'rest:*' or '*'",
        )
