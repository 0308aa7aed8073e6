"""Gate behaviours: gate opening, ticket mix, screenshots, rescans, re-entry, departures."""

from collections import Counter

import numpy as np
import pytest
import simpy

from models.arrivals import ArrivalParams, arrivals
from models.distributions import Dist
from models.gate import Gate, GateParams, TicketMix
from models.rate_profiles import constant
from models.sink import ListSink
from models.venue import EventParams
from traces.event import ALREADY_SCANNED, ARRIVE, EXITED, INVALID, LEAVE, SCAN, VALID, WRONG_EVENT


def gate_of(presold=1000, mix=None, open_s=0.0, end_s=None, allow_reentry=False, **kw):
    """Gate(...) arguments from one set of keywords: the [gate] table, the event, the opening."""
    event = EventParams(
        presold=presold, other_presold=1, allow_reentry=allow_reentry, length_s=end_s or 1.0
    )
    if mix is not None:
        kw["tickets"] = TicketMix(
            **dict(zip(("valid", "screenshot", "invalid", "wrong_event"), mix, strict=True))
        )
    return GateParams(departures=end_s is not None, **kw), event, open_s


def run_gate(n=2000, seconds=2000.0, seed=1, **kw):
    env = simpy.Environment()
    sink = ListSink(env)
    a_rng, g_rng = np.random.default_rng(seed).spawn(2)
    params, event, open_s = gate_of(**kw)
    gate = Gate(env, params, g_rng, sink.emit, event, open_s)
    env.process(
        arrivals(
            env,
            ArrivalParams(profile=constant(n / seconds, 0.0, seconds)),
            a_rng,
            sink.emit,
            gate.join,
        )
    )
    env.run()
    sink.flush()
    return sink.events


def test_ticket_mix_follows_the_weights():
    events = run_gate(presold=5000, lanes=4, service=Dist("fixed", 0.5), mix=(0.7, 0.0, 0.2, 0.1))
    c = Counter(e.expect for e in events if e.kind == SCAN)
    total = sum(c.values())
    assert c[VALID] / total == pytest.approx(0.7, abs=0.01)
    assert c[INVALID] / total == pytest.approx(0.2, abs=0.01)
    assert c[WRONG_EVENT] / total == pytest.approx(0.1, abs=0.01)
    codes = [e.data()["ticket_code"] for e in events if e.kind == SCAN and e.expect == WRONG_EVENT]
    assert all(code.startswith("T2-") for code in codes)


def test_screenshots_are_rejected_after_the_first_copy():
    events = run_gate(
        presold=5000,
        lanes=4,
        service=Dist("fixed", 0.5),
        mix=(0.8, 0.2, 0.0, 0.0),
        screenshot_gap_s=10.0,
    )
    c = Counter(e.expect for e in events if e.kind == SCAN)
    assert c[ALREADY_SCANNED] / sum(c.values()) == pytest.approx(0.2, abs=0.02)
    valid_codes = [e.data()["ticket_code"] for e in events if e.kind == SCAN and e.expect == VALID]
    assert len(valid_codes) == len(set(valid_codes))


def test_nobody_is_scanned_before_the_gates_open():
    events = run_gate(
        n=500, seconds=1000.0, presold=1000, lanes=4, service=Dist("fixed", 1.0), open_s=600.0
    )
    scans = [e.t_us for e in events if e.kind == SCAN]
    assert min(scans) == 600_000_000
    assert min(e.t_us for e in events if e.kind == ARRIVE) < 600_000_000
    # the queue that formed is served at full speed: 4 lanes x 1 per second
    assert sum(1 for t in scans if t < 610_000_000) == 40


def test_rescans_after_scanner_errors():
    events = run_gate(
        presold=5000,
        lanes=4,
        service=Dist("fixed", 0.5),
        mix=(1.0, 0.0, 0.0, 0.0),
        rescan_prob=0.1,
        rescan_delay=Dist("fixed", 3.0),
    )
    per_actor = Counter(e.actor for e in events if e.kind == SCAN)
    rescanned = [a for a, k in per_actor.items() if k == 2]
    assert len(rescanned) / len(per_actor) == pytest.approx(0.1, abs=0.025)
    by_actor = {}
    for e in events:
        if e.kind == SCAN:
            by_actor.setdefault(e.actor, []).append(e)
    for a in rescanned:
        first, second = by_actor[a]
        assert (first.expect, second.expect) == (VALID, ALREADY_SCANNED)
        assert second.t_us - first.t_us == 3_000_000
        assert first.payload == second.payload


def test_reentry_pass_out_then_back_in():
    events = run_gate(
        n=1000,
        seconds=500.0,
        presold=2000,
        lanes=8,
        service=Dist("fixed", 0.5),
        mix=(1.0, 0.0, 0.0, 0.0),
        allow_reentry=True,
        reentry_prob=0.2,
        passout_after=Dist("fixed", 100.0),
        away=Dist("fixed", 50.0),
    )
    outs = [e for e in events if e.kind == SCAN and e.expect == EXITED]
    assert len(outs) == pytest.approx(
        0.2 * 1000 / (1 - 0.2), rel=0.25
    )  # re-entered ones may go out again
    for out in outs:
        code = out.data()["ticket_code"]
        assert out.data()["direction"] == "out"
        back = [
            e
            for e in events
            if e.kind == SCAN
            and e.t_us > out.t_us
            and e.data()["ticket_code"] == code
            and e.data()["direction"] == "in"
        ]
        assert back and back[0].expect == VALID and back[0].t_us >= out.t_us + 50_000_000


def test_everyone_inside_leaves_after_the_end():
    events = run_gate(
        n=500,
        seconds=500.0,
        presold=1000,
        lanes=8,
        service=Dist("fixed", 0.5),
        mix=(0.9, 0.0, 0.1, 0.0),
        end_s=1000.0,
        leave_after=Dist("exponential", 300.0),
    )
    admitted = {e.actor for e in events if e.kind == SCAN and e.expect == VALID}
    left = [e for e in events if e.kind == LEAVE and e.data()["reason"] == "event_end"]
    assert {e.actor for e in left} == admitted and len(left) == len(admitted)
    assert min(e.t_us for e in left) >= 1_000_000_000
    turned_away = {
        e.actor for e in events if e.kind == LEAVE and e.data()["reason"] == "turned_away"
    }
    assert turned_away == {e.actor for e in events if e.kind == SCAN and e.expect == INVALID}
