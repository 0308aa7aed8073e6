"""The trace header: what a trace is, where it came from, and what its events add up to."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from traces.event import FORMAT_NAME, FORMAT_VERSION


@dataclass(frozen=True, slots=True)
class VenueEvent:
    """One event (a match, a concert) whose tickets the trace sells and scans."""

    id: int
    name: str
    capacity: int
    presold: int  # tickets that exist before the trace starts: codes ticket_code(id, 0..presold-1)
    price_cents: int
    currency: str = "usd"


@dataclass(frozen=True, slots=True)
class Inventory:
    """The data a target must hold before replay: the stand-in seeds exactly this."""

    events: tuple[VenueEvent, ...] = ()
    allow_reentry: bool = False
    # recorded traffic: ticket codes it scanned that are not ticket_code(id, n), as (code, event id)
    tickets: tuple[tuple[str, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "events": [asdict(e) for e in self.events],
            "allow_reentry": self.allow_reentry,
        }
        if self.tickets:
            d["tickets"] = [list(t) for t in self.tickets]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Inventory:
        return cls(
            events=tuple(VenueEvent(**e) for e in d.get("events", ())),
            allow_reentry=bool(d.get("allow_reentry", False)),
            tickets=tuple((str(c), int(e)) for c, e in d.get("tickets", ())),
        )


@dataclass(frozen=True, slots=True)
class TraceHeader:
    """Header of a trace: format, scenario config, seed, origin, counts and expected end state.

    `counts`, `targets` and `expected` are projections of the events (traces.projection); writers
    fill them in when they close, so they are empty in a header given to a writer.
    """

    scenario: dict[str, Any] = field(default_factory=dict)  # the full, validated scenario config
    seed: int | None = None
    origin_unix_us: int = 0  # wall-clock time of t_us = 0
    inventory: Inventory = field(default_factory=Inventory)
    counts: dict[str, int] = field(default_factory=dict)  # events per kind
    targets: dict[str, int] = field(default_factory=dict)  # events per target
    expected: dict[str, Any] = field(default_factory=dict)  # expected end state (projection)
    source: str = "simulate"  # simulate | record | import:<format> | transform:<name>
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = {f: getattr(self, f) for f in self.__slots__}
        d["inventory"] = self.inventory.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TraceHeader:
        known = {k: v for k, v in d.items() if k in cls.__slots__}
        known["inventory"] = Inventory.from_dict(d.get("inventory") or {})
        return cls(**known)
