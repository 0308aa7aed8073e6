"""Scenarios: TOML -> validated frozen config, `--set` overrides, built-ins, and the inventory to seed.

A scenario file has tables [scenario], [event], and one per model it runs: [arrivals] with [gate],
[sales], [webhook_burst], [dashboard]; optionally [capacity] (backends for what-if predictions) and
[thresholds] (k6 grammar). Every value is validated when the file is read; an error names the dotted
key (`gate.lanes: expected an integer >= 1, got 0`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models import rate_profiles as profiles
from models.capacity import Backend, CapacityParams
from models.distributions import Dist
from sim.validate import ScenarioError, build, spec, to_plain
from traces.header import Inventory, VenueEvent
from traces.limits import (
    MAX_COUNT,
    MAX_EVENT_ID,
    MAX_LANES,
    MAX_PEOPLE,
    MAX_PRICE_CENTS,
    MAX_SECONDS,
    MAX_TICKETS,
    MAX_VIEWERS,
    MAX_WORKERS,
)

__all__ = [
    "ScenarioError",
    "Scenario",
    "load",
    "parse",
    "builtin_names",
    "builtin_text",
    "inventory",
    "inventory_for",
    "apply_overrides",
    "capacity_params",
]


@dataclass(frozen=True, slots=True)
class Meta:
    """What the scenario is."""

    name: str = spec("custom")
    description: str = spec("")
    origin: str = spec("2026-06-13T12:00:00+00:00", doc="wall-clock time of t = 0 (RFC 3339)")


@dataclass(frozen=True, slots=True)
class EventConfig:
    """The venue event being sold and scanned, and another event whose tickets are wrong here."""

    id: int = spec(1, ge=1, limit=MAX_EVENT_ID)
    name: str = spec("Stadium match")
    capacity: int = spec(1000, ge=0, limit=MAX_TICKETS)
    presold: int = spec(
        1000,
        ge=0,
        limit=MAX_TICKETS,
        doc="tickets sold before t = 0: codes ticket_code(id, 0..presold-1)",
    )
    price_cents: int = spec(8500, ge=0, limit=MAX_PRICE_CENTS)
    currency: str = spec("usd")
    start_s: float = spec(0.0, ge=0, doc="when the event starts, seconds after the origin")
    length_s: float = spec(7200.0, gt=0, doc="how long it lasts; the crowd leaves after")
    allow_reentry: bool = spec(False)
    other_event_id: int = spec(2, ge=1, limit=MAX_EVENT_ID)
    other_presold: int = spec(100, ge=1, limit=MAX_TICKETS)


@dataclass(frozen=True, slots=True)
class ArrivalsConfig:
    """How the crowd comes: profile stadium | constant | table | burst, in groups."""

    profile: str = spec("constant", choices=("stadium", "constant", "table", "burst"))
    attendees: int = spec(
        1000,
        ge=0,
        limit=MAX_PEOPLE,
        doc="expected attendees (stadium, constant, and per wave for burst; a table gives its own rates)",
    )
    group_sizes: tuple[float, ...] = spec((1.0,), ge=0, doc="weights of groups of 1, 2, 3, ...")
    # stadium
    gates_open_min: float = spec(
        90.0, gt=0, doc="the lanes start scanning this long before the start"
    )
    early_min: float = spec(
        30.0, ge=0, doc="the first arrivals come this long before the gates open, and queue"
    )
    late_share: float = spec(0.6, ge=0, le=1)
    after_share: float = spec(0.03, ge=0, le=1)
    after_min: float = spec(30.0, ge=0)
    peak_min: float = spec(15.0, gt=0, lt=60)
    # constant
    start_s: float = spec(0.0, ge=0)
    duration_s: float = spec(600.0, gt=0)
    # table: [[t_s, attendees per second], ...]
    table: tuple[tuple[float, float], ...] = spec((), ge=0, limit=MAX_SECONDS)
    interpolate: str = spec("step", choices=("step", "linear"))
    # burst: `attendees` at once, `waves` times, `wave_gap_s` apart, from start_s
    waves: int = spec(1, ge=1, limit=MAX_COUNT)
    wave_gap_s: float = spec(5.0, ge=0)


@dataclass(frozen=True, slots=True)
class TicketMix:
    """Weights of the tickets attendees hold."""

    valid: float = spec(0.95, ge=0)
    screenshot: float = spec(0.02, ge=0, doc="a copy of someone's ticket: the first copy gets in")
    invalid: float = spec(0.02, ge=0)
    wrong_event: float = spec(0.01, ge=0)


@dataclass(frozen=True, slots=True)
class GateConfig:
    """Lanes and what happens at them."""

    name: str = spec("main")
    lanes: int = spec(4, ge=1, limit=MAX_LANES)
    queue: str = spec("shortest", choices=("shortest", "shared"))
    open_spread_s: float = spec(0.0, ge=0, doc="lanes open one by one over this many seconds")
    service: Dist = spec(Dist("lognormal", 3.5, 1.5))
    tickets: TicketMix = spec(factory=TicketMix)
    screenshot_gap_s: float = spec(60.0, ge=0)
    rescan_prob: float = spec(0.0, ge=0, le=1)
    rescan_delay: Dist = spec(Dist("uniform", low=2.0, high=6.0))
    reentry_prob: float = spec(0.0, ge=0, le=1)
    passout_after: Dist = spec(Dist("exponential", 1800.0))
    away: Dist = spec(Dist("exponential", 600.0))
    leave_after: Dist = spec(Dist("exponential", 900.0))
    departures: bool = spec(True, doc="emit a leave per attendee after the event ends")


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """Stripe's webhook delivery (figures unverified: see DOMAIN.md)."""

    delay: Dist = spec(Dist("lognormal", 2.0, 1.5))
    duplicate_prob: float = spec(0.02, ge=0, le=1)
    fail_prob: float = spec(0.0, ge=0, le=1)
    fail_window: tuple[float, float] | None = spec(None, ge=0)
    retry_base_s: float = spec(60.0, gt=0)
    retry_factor: float = spec(2.0, ge=1)
    max_retries: int = spec(3, ge=0, limit=MAX_COUNT)


@dataclass(frozen=True, slots=True)
class SalesConfig:
    """The on-sale rush."""

    buyers: int = spec(100, ge=0, limit=MAX_PEOPLE)
    start_s: float = spec(0.0, ge=0)
    window_s: float = spec(600.0, gt=0)
    tau_s: float = spec(120.0, ge=0)
    quantities: tuple[float, ...] = spec(
        (0.4, 0.35, 0.15, 0.1), ge=0, doc="weights of 1, 2, ... tickets"
    )
    think: Dist = spec(Dist("lognormal", 20.0, 10.0))
    abandon_prob: float = spec(0.0, ge=0, le=1)
    decline_prob: float = spec(0.0, ge=0, le=1)
    refund_prob: float = spec(0.0, ge=0, le=1)
    refund_after: Dist = spec(Dist("exponential", 3600.0))
    send_created: bool = spec(True)
    delivery: DeliveryConfig = spec(factory=DeliveryConfig)


@dataclass(frozen=True, slots=True)
class BurstConfig:
    """Stripe events delivered all at once at the end of the event."""

    events: int = spec(50, ge=0, limit=MAX_PEOPLE)
    start_s: float = spec(0.0, ge=0)
    window_s: float = spec(10.0, ge=0)
    price_cents: int = spec(2500, ge=0, limit=MAX_PRICE_CENTS)
    quantities: tuple[float, ...] = spec((0.7, 0.2, 0.1), ge=0)
    delivery: DeliveryConfig = spec(
        factory=lambda: DeliveryConfig(delay=Dist("fixed", 0.0), duplicate_prob=0.0)
    )


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    """Dashboard viewers."""

    viewers: int = spec(20, ge=0, limit=MAX_VIEWERS)
    start_s: float = spec(0.0, ge=0)
    window_s: float = spec(10.0, ge=0)
    stay: Dist = spec(Dist("fixed", 300.0))
    reload: Dist = spec(Dist("exponential", 60.0))


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """One endpoint's capacity for what-if predictions."""

    workers: int = spec(8, ge=1, limit=MAX_WORKERS)
    service: Dist = spec(Dist("exponential", 0.02))
    timeout_s: float | None = spec(None, gt=0)


@dataclass(frozen=True, slots=True)
class CapacityConfig:
    """Backend capacity per target (`default` for the others)."""

    default: BackendConfig = spec(factory=BackendConfig)
    targets: dict[str, BackendConfig] = spec(factory=dict)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A whole validated scenario; absent model tables are None (that model does not run)."""

    scenario: Meta = field(default_factory=Meta)
    event: EventConfig = field(default_factory=EventConfig)
    arrivals: ArrivalsConfig | None = None
    gate: GateConfig | None = None
    sales: SalesConfig | None = None
    webhook_burst: BurstConfig | None = None
    dashboard: DashboardConfig | None = None
    capacity: CapacityConfig | None = None
    thresholds: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The scenario's name."""
        return self.scenario.name

    def to_dict(self) -> dict[str, Any]:
        """The full config as plain data (what a trace header carries)."""
        return to_plain(self)


SCENARIOS_DIR = Path(__file__).parent / "scenarios"  # the built-ins

# k6 threshold expressions: aggregation, operator, number, and an optional window ("over 10s")
_THRESHOLD = re.compile(
    r"^\s*(avg|min|med|max|count|rate|value|p\(\d+(\.\d+)?\))\s*(<=|>=|===|==|!=|<|>)\s*"
    r"-?\d+(\.\d+)?\s*(over\s+\d+(\.\d+)?(ms|s|m|h))?\s*$"
)
_METRIC = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\{[^{}]+\})?$")


def _check(sc: Scenario) -> None:
    """Checks across fields, after each field is valid on its own."""
    a, g = sc.arrivals, sc.gate
    try:
        dt.datetime.fromisoformat(sc.scenario.origin)
    except ValueError:
        raise ScenarioError(
            "scenario.origin",
            f"expected an RFC 3339 time like 2026-06-13T12:00:00+00:00, got {sc.scenario.origin!r}",
        ) from None
    if sc.event.other_event_id == sc.event.id:
        raise ScenarioError(
            "event.other_event_id", f"expected an id other than event.id ({sc.event.id})"
        )
    if a is not None and g is None:
        raise ScenarioError("gate", "missing: [arrivals] needs a [gate] to arrive at")
    if g is not None and a is None:
        raise ScenarioError("arrivals", "missing: a [gate] needs [arrivals]")
    if a is not None:
        if not a.group_sizes or sum(a.group_sizes) <= 0:
            raise ScenarioError("arrivals.group_sizes", "expected at least one positive weight")
        if a.profile == "table":
            if len(a.table) < 2:
                raise ScenarioError("arrivals.table", "expected at least two [t_s, rate] rows")
            ts = [r[0] for r in a.table]
            if any(t2 <= t1 for t1, t2 in zip(ts, ts[1:], strict=False)):
                raise ScenarioError("arrivals.table", "expected times increasing strictly")
        lead_s = (a.gates_open_min + a.early_min) * 60
        if a.profile == "stadium" and sc.event.start_s < lead_s:
            raise ScenarioError(
                "event.start_s",
                f"expected a number >= {lead_s:g} with a stadium crowd (arrivals begin "
                f"arrivals.gates_open_min + arrivals.early_min before the start), got {sc.event.start_s:g}",
            )
        try:
            arrival_profile(sc)
        except ValueError as e:
            field = str(e).split()[0]  # the profile's messages start with the parameter's name
            key = (
                f"arrivals.{field}" if field in ArrivalsConfig.__dataclass_fields__ else "arrivals"
            )
            raise ScenarioError(key, str(e)) from e
    if g is not None:
        m = g.tickets
        if m.valid + m.screenshot + m.invalid + m.wrong_event <= 0:
            raise ScenarioError("gate.tickets", "expected at least one positive weight")
    for name, d in (
        ("sales.delivery", sc.sales and sc.sales.delivery),
        ("webhook_burst.delivery", sc.webhook_burst and sc.webhook_burst.delivery),
    ):
        if d and d.fail_window is not None and d.fail_window[1] <= d.fail_window[0]:
            raise ScenarioError(
                f"{name}.fail_window",
                f"expected [start, end] with end > start, got {list(d.fail_window)}",
            )
    for name, q in (
        ("sales.quantities", sc.sales and sc.sales.quantities),
        ("webhook_burst.quantities", sc.webhook_burst and sc.webhook_burst.quantities),
    ):
        if q is not None and (not q or sum(q) <= 0):
            raise ScenarioError(name, "expected at least one positive weight")
    if not any((a, sc.sales, sc.webhook_burst, sc.dashboard)):
        raise ScenarioError(
            "",
            "the scenario runs no model: add [arrivals]+[gate], [sales], [webhook_burst] or [dashboard]",
        )
    for metric, exprs in sc.thresholds.items():
        key = f'thresholds."{metric}"'
        if not _METRIC.match(metric):
            raise ScenarioError(key, "expected a metric name with optional {tag:value} filters")
        for e in exprs:
            if not _THRESHOLD.match(e):
                raise ScenarioError(
                    key,
                    f'expected k6 threshold expressions like "p(95)<500" or "rate==0", got {e!r}',
                )


def arrival_profile(sc: Scenario) -> profiles.RateProfile | None:
    """The attendee rate profile of the scenario (None for a burst)."""
    a = sc.arrivals
    if a is None or a.profile == "burst":
        return None
    if a.profile == "stadium":
        return profiles.stadium(
            a.attendees,
            sc.event.start_s,
            a.gates_open_min,
            a.early_min,
            a.late_share,
            a.after_share,
            a.after_min,
            a.peak_min,
        )
    if a.profile == "constant":
        return profiles.constant(a.attendees / a.duration_s, a.start_s, a.duration_s)
    return profiles.RateProfile(
        tuple(r[0] for r in a.table), tuple(r[1] for r in a.table), a.interpolate
    )


def capacity_params(sc: Scenario) -> CapacityParams:
    """The backend capacity model of the scenario's [capacity] table (defaults when absent)."""
    cap = sc.capacity or CapacityConfig()

    def backend(b: BackendConfig) -> Backend:
        return Backend(b.workers, b.service, b.timeout_s)

    return CapacityParams(
        targets=tuple((name, backend(b)) for name, b in sorted(cap.targets.items())),
        default=backend(cap.default),
    )


def parse(data: dict[str, Any]) -> Scenario:
    """A validated Scenario from parsed TOML data."""
    sc = build(Scenario, data)
    _check(sc)
    return sc


def _toml(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError("", f"{where}: not valid TOML: {e}") from e


def builtin_names() -> list[str]:
    """Names of the built-in scenarios."""
    return sorted(p.stem for p in SCENARIOS_DIR.glob("*.toml"))


def builtin_text(name: str) -> str:
    """The TOML text of a built-in scenario."""
    if name not in builtin_names():
        raise ScenarioError(
            "", f"unknown scenario {name!r}; built-ins: {', '.join(builtin_names())}"
        )
    return (SCENARIOS_DIR / f"{name}.toml").read_text(encoding="utf-8")


def source_text(name_or_path: str) -> tuple[str, str]:
    """(TOML text, where it came from) for a built-in name or a .toml file path."""
    if name_or_path in builtin_names():
        return builtin_text(name_or_path), f"built-in scenario {name_or_path!r}"
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        try:
            return p.read_text(encoding="utf-8"), str(p)
        except (OSError, UnicodeDecodeError) as e:
            raise ScenarioError("", f"{p}: cannot read: {e}") from e
    raise ScenarioError(
        "",
        f"unknown scenario {name_or_path!r}: not a built-in ({', '.join(builtin_names())})"
        " and not a .toml file",
    )


def _set_line(assignment: str) -> dict[str, Any]:
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise ScenarioError("", f"--set {assignment!r}: expected KEY=VALUE, e.g. gate.lanes=12")
    for v in (value.strip(), json.dumps(value.strip())):  # TOML value syntax, else a bare string
        try:
            return tomllib.loads(f"{key.strip()} = {v}")
        except tomllib.TOMLDecodeError:
            continue
    raise ScenarioError("", f"--set {assignment!r}: {key.strip()!r} is not a valid dotted key")


def _merge(base: dict[str, Any], over: dict[str, Any], key: str = "") -> None:
    for k, v in over.items():
        sub = f"{key}.{k}" if key else k
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v, sub)
        elif isinstance(v, dict) and k in base:
            raise ScenarioError(sub, f"is not a table (it is {base[k]!r}); set it as a whole")
        else:
            base[k] = v


def apply_overrides(data: dict[str, Any], sets: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply `--set key=value` overrides (TOML value syntax; bare words are strings) to TOML data."""
    for s in sets:
        _merge(data, _set_line(s))
    return data


def load(name_or_path: str, sets: list[str] | tuple[str, ...] = ()) -> Scenario:
    """A validated Scenario from a built-in name or a TOML file, with `--set` overrides applied."""
    text, where = source_text(name_or_path)
    data = _toml(text, where)
    apply_overrides(data, sets)
    return parse(data)


def inventory(sc: Scenario) -> Inventory:
    """The events and pre-sold tickets a target must hold before replay (the stand-in seeds this)."""
    e = sc.event
    main = VenueEvent(
        id=e.id,
        name=e.name,
        capacity=e.capacity,
        presold=e.presold,
        price_cents=e.price_cents,
        currency=e.currency,
    )
    other = VenueEvent(
        id=e.other_event_id,
        name=f"Another event (not {e.name})",
        capacity=e.other_presold,
        presold=e.other_presold,
        price_cents=e.price_cents,
        currency=e.currency,
    )
    return Inventory(events=(main, other), allow_reentry=e.allow_reentry)


def inventory_for(name_or_path: str) -> Inventory:
    """The inventory of a built-in scenario name or scenario file (for `staging serve --seed-data`)."""
    return inventory(load(name_or_path))
