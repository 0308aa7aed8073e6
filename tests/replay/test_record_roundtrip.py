"""Round trip: simulate, replay against the stand-in through `gaterush record`, and the recorded
trace matches the simulated one: the same requests, in the same order per actor, at the times
the replay sent them."""

from __future__ import annotations

from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import pytest

from judge.resultlog import iter_rows
from replay.engine import ReplayConfig, run_replay
from replay.record import recorder_in_thread
from sim.runner import simulate
from sim.scenario import load
from staging.server import standin_in_thread
from traces import event as ev
from traces.event import Event
from traces.importers.request import REQUEST
from traces.io import open_reader

SPEED = 10.0


def key(e: Event, checkouts: dict[int, Any]) -> tuple:
    """What identifies a request whoever sent it: target and payload, less what replay adds."""
    data = e.data()
    data.pop("load", None)
    data.pop(REQUEST, None)  # the request as sent: compared by test_record_replay_record
    if e.kind == ev.CONFIRM:  # a confirm is its checkout's: the PaymentIntent id differs per run
        data.pop("payment_intent", None)
        data["checkout"] = checkouts.get(e.after)
    return (e.target, repr(sorted(data.items())))


def keyed(events: list[Event]) -> list[tuple[tuple, Event]]:
    checkouts: dict[int, Any] = {}
    out = []
    for e in events:
        k = key(e, checkouts)
        if e.kind == ev.CHECKOUT:
            checkouts[e.seq] = k
        out.append((k, e))
    return out


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("scenario", "sets"),
    [
        (
            "purchase-load",
            ["sales.buyers=12", "sales.window_s=5", "sales.delivery.duplicate_prob=0.3"],
        ),
        ("scanner-burst", []),
    ],
)
def test_recorded_trace_matches_the_simulated_one(
    tmp_path: Path, scenario: str, sets: list[str]
) -> None:
    sim_path, rec_path, res_path = tmp_path / "sim.grt", tmp_path / "rec.grt", tmp_path / "res.grr"
    simulate(load(scenario, sets), 7, sim_path)
    with open_reader(sim_path) as r:
        header = r.header
        simulated = [e for e in r if e.target is not None]
    assert simulated

    with (
        standin_in_thread(inventory=header.inventory, deliver_webhooks=False) as standin,
        recorder_in_thread(standin.url, rec_path) as rec,
    ):
        env = {**standin.env(), "SUPABASE_URL": rec.url, "STRIPE_API_BASE": rec.url}
        cfg = ReplayConfig(
            trace=str(sim_path),
            out=str(res_path),
            target=rec.url,
            stripe=rec.url,
            speed=SPEED,
            progress=False,
        )
        result = run_replay(cfg, env=env, progress=None)
        assert result is not None and result.errors == 0
    with open_reader(rec_path) as r:
        recorded = list(r)

    # the same requests
    sim_keyed, rec_keyed = keyed(simulated), keyed(recorded)
    assert sorted(k for k, _ in rec_keyed) == sorted(k for k, _ in sim_keyed)
    # ... with the outcomes the model expected
    assert sorted((k, e.expect) for k, e in rec_keyed) == sorted(
        (k, e.expect) for k, e in sim_keyed
    )

    # in the same order per actor: pair each recorded request with the simulated one it is
    queues: dict[tuple, deque[Event]] = defaultdict(deque)
    for k, e in sim_keyed:
        queues[k].append(e)
    position: dict[int, int] = {}
    pairs = []
    for i, (k, e) in enumerate(rec_keyed):
        s = queues[k].popleft()
        position[s.seq] = i
        pairs.append((s, e))
    by_actor: dict[str, list[int]] = defaultdict(list)
    for s in simulated:
        by_actor[s.actor].append(position[s.seq])
    for actor, positions in by_actor.items():
        assert positions == sorted(positions), f"{actor}: recorded out of order"
    # ... under the same actors (replay names each request's actor in X-Gaterush-Actor)
    assert all(s.actor == e.actor for s, e in pairs)

    # at the times the replay sent them (the recorder's clock against the replay's)
    _, rows = iter_rows(res_path)
    sent = {row.seq: row.sent_us for row in rows if row.metric is None}
    s0, r0 = pairs[0][0], pairs[0][1]
    for s, e in pairs:
        replay_t = sent[s.seq] - sent[s0.seq]
        recorded_t = e.t_us - r0.t_us
        assert abs(recorded_t - replay_t) < 250_000, (
            s,
            e,
        )  # the proxy's own delay, on a shared machine
