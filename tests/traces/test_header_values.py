"""Trace header values are validated when a trace is read (types, signs, ranges), naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traces.event import TraceError
from traces.header import Inventory, TraceHeader, VenueEvent, header_problem
from traces.io import open_reader, open_writer
from traces.limits import ALLOW_HUGE_ENV, MAX_TICKETS


def _venue(**over) -> Inventory:
    fields = {"id": 1, "name": "m", "capacity": 100, "presold": 10, "price_cents": 500, **over}
    return Inventory(events=(VenueEvent(**fields),))


@pytest.mark.parametrize("header,key", [
    (TraceHeader(inventory=_venue(presold=-5)), "inventory.events[0].presold"),
    (TraceHeader(inventory=_venue(id="x")), "inventory.events[0].id"),
    (TraceHeader(inventory=_venue(id=0)), "inventory.events[0].id"),
    (TraceHeader(inventory=_venue(price_cents=1e308)), "inventory.events[0].price_cents"),
    (TraceHeader(inventory=_venue(capacity=True)), "inventory.events[0].capacity"),
    (TraceHeader(inventory=_venue(presold=MAX_TICKETS + 1)), "inventory.events[0].presold"),
    (TraceHeader(inventory=_venue(name=5)), "inventory.events[0].name"),
    (TraceHeader(seed=-1), "seed"),
    (TraceHeader(seed="7"), "seed"),
    (TraceHeader(origin_unix_us=1.5), "origin_unix_us"),
    (TraceHeader(counts={"scan": -1}), "counts.scan"),
    (TraceHeader(scenario=[1]), "scenario"),
])  # fmt: skip
def test_bad_values_are_named(header: TraceHeader, key: str, monkeypatch) -> None:
    monkeypatch.delenv(ALLOW_HUGE_ENV, raising=False)
    assert header_problem(header).startswith(f"{key}: ")


@pytest.mark.parametrize("suffix", [".parquet", ".grt"])
def test_a_crafted_header_is_refused_when_read(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"t{suffix}"
    with open_writer(path, TraceHeader(inventory=_venue(presold=-5))):
        pass
    with pytest.raises(TraceError, match=r"t\.\w+: bad header: inventory\.events\[0\]\.presold"):
        open_reader(path)


@settings(deadline=None)
@given(
    presold=st.integers(0, MAX_TICKETS),
    event_id=st.integers(1, 2**53),
    price=st.integers(0, 10**12),
    seed=st.none() | st.integers(0, 2**64 - 1),
)
def test_every_sane_header_passes(presold: int, event_id: int, price: int, seed) -> None:
    inv = _venue(presold=presold, capacity=presold, id=event_id, price_cents=price)
    assert header_problem(TraceHeader(inventory=inv, seed=seed)) is None
