"""Properties of every simulated trace, for arbitrary small scenarios (hypothesis): sorted by
(t_us, seq), seq unique, every `after` points at an earlier checkout, the model's expected scan
outcomes obey an atomic scan's rules (no ticket admitted twice), each Stripe event is processed once."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim import runner, scenario
from traces.event import (
    ALREADY_SCANNED,
    CHECKOUT,
    CONFIRM,
    DUPLICATE,
    EXITED,
    INVALID,
    PROCESSED,
    SCAN,
    SUCCEEDED,
    VALID,
    WEBHOOK,
    WRONG_EVENT,
    ticket_code,
)

probs = st.floats(0.0, 0.5)
weights = st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4).filter(lambda w: sum(w) > 0.01)


def dist(mean_max: float):
    return st.one_of(
        st.floats(0.01, mean_max).map(lambda m: {"dist": "exponential", "mean": m}),
        st.floats(0.0, mean_max).map(lambda m: {"dist": "fixed", "mean": m}),
        st.tuples(st.floats(0.0, mean_max), st.floats(0.0, mean_max)).map(
            lambda lh: {"dist": "uniform", "low": min(lh), "high": max(lh)}
        ),
    )


@st.composite
def scenarios(draw) -> dict:
    """Small scenario tables with every model switched on or off."""
    w = draw(weights)
    data = {
        "event": {
            "presold": draw(st.integers(0, 200)),
            "allow_reentry": draw(st.booleans()),
            "start_s": 60.0,
            "length_s": draw(st.floats(60, 600)),
            "other_presold": 5,
        },
    }
    if draw(st.booleans()):
        data["arrivals"] = {
            "profile": draw(st.sampled_from(["constant", "burst"])),
            "attendees": draw(st.integers(0, 250)),
            "duration_s": draw(st.floats(10, 300)),
            "group_sizes": draw(st.sampled_from([[1.0], [0.5, 0.3, 0.2]])),
            "waves": draw(st.integers(1, 3)),
        }
        data["gate"] = {
            "lanes": draw(st.integers(1, 6)),
            "queue": draw(st.sampled_from(["shortest", "shared"])),
            "service": draw(dist(5.0)),
            "tickets": {"valid": w[0], "screenshot": w[1], "invalid": w[2], "wrong_event": w[3]},
            "screenshot_gap_s": draw(st.floats(0, 30)),
            "rescan_prob": draw(probs),
            "reentry_prob": draw(probs),
            "passout_after": {"dist": "exponential", "mean": 20.0},
            "away": {"dist": "exponential", "mean": 20.0},
            "departures": draw(st.booleans()),
            "leave_after": draw(dist(100.0)),
        }
    if draw(st.booleans()):
        data["sales"] = {
            "buyers": draw(st.integers(0, 30)),
            "window_s": 60.0,
            "abandon_prob": draw(probs),
            "decline_prob": draw(probs),
            "refund_prob": draw(probs),
            "refund_after": {"dist": "exponential", "mean": 30.0},
            "delivery": {
                "duplicate_prob": draw(probs),
                "fail_prob": draw(probs),
                "retry_base_s": 5.0,
                "max_retries": draw(st.integers(0, 3)),
            },
        }
    if draw(st.booleans()):
        data["webhook_burst"] = {
            "events": draw(st.integers(0, 30)),
            "start_s": 100.0,
            "window_s": 10.0,
        }
    if draw(st.booleans()) or len(data) == 1:
        data["dashboard"] = {
            "viewers": draw(st.integers(0, 4)),
            "stay": {"dist": "fixed", "mean": 120.0},
            "reload": {"dist": "exponential", "mean": 30.0},
        }
    return data


def simulate(data: dict, seed: int) -> tuple[scenario.Scenario, list]:
    sc = scenario.parse(data)
    events: list = []
    runner.run(sc, seed, events.extend, batch=97)  # a small batch: many flushes
    return sc, events


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(0, 2**32))
def test_every_trace_is_well_formed(data, seed):
    sc, events = simulate(data, seed)
    keys = [(e.t_us, e.seq) for e in events]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert [e.seq for e in events] == list(range(len(events)))
    by_seq = {e.seq: e for e in events}
    for e in events:
        if e.after is not None:
            assert e.after < e.seq
            assert by_seq[e.after].kind == CHECKOUT and by_seq[e.after].actor == e.actor
            assert e.kind == CONFIRM


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(0, 2**32))
def test_expected_scan_outcomes_obey_an_atomic_scan(data, seed):
    sc, events = simulate(data, seed)
    ev = sc.event
    status: dict[str, str] = {}  # ticket code -> "inside" | "out"
    own = {ticket_code(ev.id, n) for n in range(ev.presold)}
    other = {ticket_code(ev.other_event_id, n) for n in range(ev.other_presold)}
    for e in events:
        if e.kind != SCAN:
            continue
        d = e.data()
        code, direction = d["ticket_code"], d["direction"]
        assert d["event_id"] == ev.id
        s = status.get(code)
        if code not in own:
            assert e.expect == (WRONG_EVENT if code in other else INVALID)
        elif direction == "out":
            assert s == "inside" and e.expect == EXITED and ev.allow_reentry
            status[code] = "out"
        elif s is None or (s == "out" and ev.allow_reentry):
            assert e.expect == VALID
            status[code] = "inside"
        else:
            assert e.expect == ALREADY_SCANNED  # never a second admission


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(0, 2**32))
def test_each_stripe_event_is_processed_exactly_once(data, seed):
    sc, events = simulate(data, seed)
    seen: set[str] = set()
    succeeded_pis = set()
    confirmed = 0
    for e in events:
        if e.kind == CONFIRM and e.expect == SUCCEEDED:
            confirmed += 1
        if e.kind != WEBHOOK:
            continue
        body = e.data()
        assert body["object"] == "event" and body["livemode"] is False
        assert e.expect == (DUPLICATE if body["id"] in seen else PROCESSED)
        seen.add(body["id"])
        if body["type"] == "payment_intent.succeeded" and e.expect == PROCESSED:
            pi = body["data"]["object"]
            assert set(pi["metadata"]) == {"event_id", "quantity", "buyer", "order_ref"}
            succeeded_pis.add(pi["id"])
    burst = sc.webhook_burst.events if sc.webhook_burst else 0
    # every successful confirm is followed by its payment_intent.succeeded (Stripe is at least once)
    assert len(succeeded_pis) == confirmed + burst
