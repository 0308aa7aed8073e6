"""Which shard sends each event: an actor's events together, a Stripe call's dependents with it."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from replay.engine import events_per_shard
from replay.scheduler import shard_of
from replay.shards import shard_events
from traces.event import Event, pack_payload
from traces.header import TraceHeader
from traces.io import open_writer

TARGETS = (
    "rpc:scan_ticket_atomic",
    "stripe:payment_intents.create",
    "stripe:payment_intents.confirm",
    None,
)


@st.composite
def linked_events(draw) -> list[Event]:
    """Events of a few actors; some come `after` an earlier event of any actor."""
    n = draw(st.integers(1, 60))
    evs = []
    for seq in range(1, n + 1):
        actor = f"buyer:{draw(st.integers(0, 9))}"
        target = draw(st.sampled_from(TARGETS))
        after = draw(st.none() | st.integers(1, seq - 1)) if seq > 1 else None
        evs.append(Event(seq * 10, seq, "confirm", actor, target, pack_payload({}), after))
    return evs


@settings(max_examples=60, deadline=None)
@given(linked_events(), st.integers(1, 4))
def test_every_event_has_one_shard_and_follows_the_stripe_call_it_needs(
    evs: list[Event], workers: int
) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.grt"
        with open_writer(path, TraceHeader(scenario={"name": "owners"})) as w:
            w.write_many(evs)
        where = {}
        for k in range(workers):
            for ev in shard_events(str(path), k, workers):
                assert ev.seq not in where  # in one shard only
                where[ev.seq] = k
        assert events_per_shard(str(path), workers) == {
            k: list(where.values()).count(k) for k in range(workers)
        }
    by_seq = {e.seq: e for e in evs}
    assert set(where) == {e.seq for e in evs if e.target is not None}  # every event sent somewhere
    for e in evs:
        if e.target is None:
            continue
        dep = by_seq.get(e.after) if e.after is not None else None
        if dep is not None and dep.target is not None and dep.target.startswith("stripe:"):
            assert where[e.seq] == where[dep.seq]  # it needs that call's answer
        else:
            assert where[e.seq] == shard_of(e.actor, workers)  # its actor's shard
