"""Scenarios: TOML -> validated frozen config, `--set` overrides, built-ins, and the inventory to seed.

A scenario file has tables [scenario], [event], and one per model it runs: [arrivals] with [gate],
[sales], [webhook_burst], [dashboard]; optionally [capacity] (backends for what-if predictions) and
[thresholds] (k6 grammar). Every value is validated when the file is read; an error names the dotted
key (`gate.lanes: expected an integer >= 1, got 0`).
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from pathlib import Path
from typing import Any

from msgspec import field

from judge.thresholds import ThresholdError, parse_expression, parse_selector
from models import rate_profiles as profiles
from models.arrivals import CrowdParams
from models.capacity import Backend, CapacityConfig, CapacityParams
from models.dashboard import DashboardParams
from models.gate import GateParams, TicketMix
from models.sales import SalesParams
from models.stripe_objects import DeliveryParams
from models.venue import EventParams
from models.webhook_burst import BurstParams
from sim.validate import ScenarioError, build, to_plain
from traces.config import Section
from traces.header import Inventory, VenueEvent

__all__ = [
    "TicketMix",
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


class Meta(Section):
    """The [scenario] table: what the scenario is."""

    name: str = "custom"
    description: str = ""
    origin: str = "2026-06-13T12:00:00+00:00"  # wall-clock time of t = 0 (RFC 3339)


# the models' parameter structs are the scenario's tables
EventConfig = EventParams
ArrivalsConfig = CrowdParams
GateConfig = GateParams
DeliveryConfig = DeliveryParams
SalesConfig = SalesParams
BurstConfig = BurstParams
DashboardConfig = DashboardParams
BackendConfig = Backend


class Scenario(Section):
    """A whole validated scenario; absent model tables are None (that model does not run)."""

    scenario: Meta = field(default_factory=Meta)
    event: EventParams = field(default_factory=EventParams)
    arrivals: CrowdParams | None = None
    gate: GateParams | None = None
    sales: SalesParams | None = None
    webhook_burst: BurstParams | None = None
    dashboard: DashboardParams | None = None
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
            key = f"arrivals.{field}" if field in CrowdParams.__struct_fields__ else "arrivals"
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
        try:
            parse_selector(metric)
        except ThresholdError as e:
            raise ScenarioError(
                key, f"expected a metric name with optional {{tag:value}} filters ({e})"
            ) from None
        for expr in exprs:
            try:
                parse_expression(expr)  # the judge's own grammar: what it accepts, it can judge
            except ThresholdError as e:
                raise ScenarioError(
                    key,
                    f'expected k6 threshold expressions like "p(95)<500" or "rate==0", got {expr!r}'
                    f" ({e})",
                ) from None


def arrival_profile(sc: Scenario) -> profiles.RateProfile | None:
    """The attendee rate profile of the scenario (None for a burst)."""
    return None if sc.arrivals is None else sc.arrivals.rate_profile(sc.event.start_s)


def capacity_params(sc: Scenario) -> CapacityParams:
    """The backend capacity model of the scenario's [capacity] table (defaults when absent)."""
    cap = sc.capacity or CapacityConfig()
    return CapacityParams(targets=tuple(sorted(cap.targets.items())), default=cap.default)


def parse(data: dict[str, Any]) -> Scenario:
    """A validated Scenario from parsed TOML data."""
    origin = data.get("scenario", {}).get("origin") if isinstance(data, dict) else None
    if isinstance(origin, dt.date):  # an unquoted TOML date-time
        data = {**data, "scenario": {**data["scenario"], "origin": origin.isoformat()}}
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
