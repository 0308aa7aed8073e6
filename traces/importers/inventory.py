"""The inventory recorded traffic touched, inferred from its events, for the header.

A recording or an import holds no inventory of its own, but a replay at a fresh stand-in needs
the events and tickets the traffic used, or every scan answers `invalid`. Folded from the events:
- a scan that the target knew (expect valid, already_scanned, exited, wrong_event) names a ticket
  that existed: a code `ticket_code(id, n)` makes event `id` hold at least n+1 presold tickets;
  any other code (not an order's `O<pi>-<i>`, which replay creates again) is kept as it is;
- an event id in a scan, a checkout's metadata, or a REST filter (`event_id=eq.N`, `id=eq.N` on
  rest:events) makes that event exist; a checkout's amount / quantity gives its price.
"""

from __future__ import annotations

import re
from typing import Any

from traces import event as ev
from traces.event import Event, unpack_payload
from traces.header import Inventory, VenueEvent

_CODE = re.compile(r"^T(\d{1,18})-(\d{7})$")
_KNOWN = frozenset({ev.VALID, ev.ALREADY_SCANNED, ev.EXITED, ev.WRONG_EVENT})
_EQ = re.compile(r"^eq\.(\d{1,18})$")
MAX_TICKETS = 1_000_000  # codes kept as they are (a recording of a bigger day keeps the first)


def _event_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 0 < value < 2**63:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value) or None
    return None


class InventoryFold:
    """Folds events (`add`) into the Inventory they touched (`inventory`)."""

    def __init__(self) -> None:
        self.presold: dict[int, int] = {}
        self.prices: dict[int, int] = {}
        self.currency: dict[int, str] = {}
        self.tickets: dict[str, int] = {}
        self.reentry = False

    def _seen(self, event_id: int | None) -> None:
        if event_id is not None:
            self.presold.setdefault(event_id, 0)

    def add(self, e: Event) -> None:
        """Fold one event."""
        if e.target is None or e.target.startswith("realtime:"):
            return
        try:
            data = unpack_payload(e.payload)
        except Exception:  # noqa: BLE001 - a damaged payload touches nothing
            return
        if not isinstance(data, dict):
            return
        if e.target == ev.TARGET_SCAN or e.kind == ev.SCAN:
            self._scan(data, e.expect)
        elif e.kind == ev.CHECKOUT:
            self._checkout(data)
        elif e.target.startswith("rest:"):
            self._rest(e.target, data.get("query"))

    def _scan(self, data: dict[str, Any], expect: str | None) -> None:
        eid = _event_id(data.get("event_id"))
        self._seen(eid)
        if expect == ev.EXITED:
            self.reentry = True
        code = data.get("ticket_code")
        if expect not in _KNOWN or not isinstance(code, str) or code.startswith("O"):
            return
        m = _CODE.match(code)
        if m:
            owner, n = int(m[1]), int(m[2])
            self.presold[owner] = max(self.presold.get(owner, 0), n + 1)
        elif eid is not None and expect != ev.WRONG_EVENT and len(self.tickets) < MAX_TICKETS:
            self.tickets.setdefault(code, eid)

    def _checkout(self, data: dict[str, Any]) -> None:
        eid = _event_id(data.get("event_id"))
        self._seen(eid)
        amount, quantity = data.get("amount"), _event_id(data.get("quantity")) or 1
        if eid is not None and isinstance(amount, int) and amount > 0:
            self.prices.setdefault(eid, amount // quantity)
            if isinstance(data.get("currency"), str):
                self.currency.setdefault(eid, data["currency"])

    def _rest(self, target: str, query: Any) -> None:
        if not isinstance(query, dict):
            return
        for key in ("event_id", "id") if target == ev.TARGET_REST_EVENTS else ("event_id",):
            value = query.get(key)
            m = _EQ.match(value) if isinstance(value, str) else None
            if m:
                self._seen(_event_id(m[1]))

    def inventory(self, base: Inventory | None = None) -> Inventory:
        """The inferred inventory, over `base` (its events kept, grown where traffic needs more)."""
        base = base or Inventory()
        known = {v.id: v for v in base.events}
        out = []
        for eid in sorted(set(known) | set(self.presold)):
            have = known.get(eid)
            presold = max(self.presold.get(eid, 0), have.presold if have else 0)
            if have is not None:
                out.append(VenueEvent(**{**_fields(have), "presold": presold,
                                         "capacity": max(have.capacity, presold)}))  # fmt: skip
                continue
            out.append(
                VenueEvent(
                    eid,
                    f"event {eid}",
                    max(presold, 1) * 10,
                    presold,
                    self.prices.get(eid, 0),
                    self.currency.get(eid, "usd"),
                )
            )
        return Inventory(
            events=tuple(out),
            allow_reentry=base.allow_reentry or self.reentry,
            tickets=tuple(sorted({**dict(base.tickets), **self.tickets}.items())),
        )


def _fields(v: VenueEvent) -> dict[str, Any]:
    return {f: getattr(v, f) for f in v.__slots__}


def infer_inventory(events: list[Event], base: Inventory | None = None) -> Inventory:
    """The inventory a list of events touched (over `base`)."""
    fold = InventoryFold()
    for e in events:
        fold.add(e)
    return fold.inventory(base)
