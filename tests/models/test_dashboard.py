"""Dashboard viewers: a load is three views sharing a load id; one subscription held; reloads."""

from collections import defaultdict

import numpy as np
import simpy

from models.dashboard import DashboardParams, dashboard
from models.distributions import Dist
from models.sink import ListSink
from traces.event import (
    SUBSCRIBE,
    TARGET_REST_EVENTS,
    TARGET_REST_TICKETS,
    TARGET_REVENUE,
    UNSUBSCRIBE,
    VIEW,
)


def test_viewers_load_subscribe_reload_and_leave():
    env = simpy.Environment()
    sink = ListSink(env)
    p = DashboardParams(
        viewers=20, window_s=10.0, stay=Dist("fixed", 300.0), reload=Dist("exponential", 60.0)
    )
    env.process(dashboard(env, p, np.random.default_rng(2), sink.emit))
    env.run()
    sink.flush()
    loads = defaultdict(list)
    subs = defaultdict(list)
    for e in sink.events:
        if e.kind == VIEW:
            d = e.data()
            loads[d["load"]].append(e)
        elif e.kind in (SUBSCRIBE, UNSUBSCRIBE):
            subs[e.actor].append(e)
    for views in loads.values():
        assert sorted(v.target for v in views) == sorted(
            [TARGET_REST_EVENTS, TARGET_REST_TICKETS, TARGET_REVENUE]
        )
        assert len({(v.actor, v.t_us) for v in views}) == 1  # one viewer, one instant
    assert len(subs) == 20
    for _actor, (sub, unsub) in subs.items():
        assert (sub.kind, unsub.kind) == (SUBSCRIBE, UNSUBSCRIBE)
        assert unsub.t_us - sub.t_us == 300_000_000
        assert sub.data() == {"table": "tickets", "filter": "event_id=eq.1"}
    # about 300 / 60 = 5 reloads per viewer on top of the first load
    assert 20 * 3 < len(loads) < 20 * 9
