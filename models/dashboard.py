"""Dashboard viewers: an initial load (events, tickets, revenue), a Realtime subscription, reloads."""

from __future__ import annotations

from collections.abc import Generator
from typing import Annotated

import numpy as np
import simpy
from msgspec import Meta

from models.distributions import Dist
from models.sink import Emit
from traces.config import NonNegative, Section
from traces.event import (
    OK,
    SUBSCRIBE,
    TARGET_REALTIME_TICKETS,
    TARGET_REST_EVENTS,
    TARGET_REST_TICKETS,
    TARGET_REVENUE,
    UNSUBSCRIBE,
    VIEW,
)
from traces.limits import MAX_VIEWERS


class DashboardParams(Section):
    """The [dashboard] table: `viewers` opening the dashboard uniformly over
    [start_s, start_s + window_s), staying `stay`."""

    viewers: Annotated[int, Meta(ge=0, extra={"limit": MAX_VIEWERS})] = 20
    start_s: NonNegative = 0.0
    window_s: NonNegative = 10.0
    stay: Dist = Dist("fixed", 300.0)
    reload: Dist = Dist("exponential", 60.0)  # time between reloads while subscribed


def load_queries(event_id: int) -> list[tuple[str, dict]]:
    """The requests of one dashboard load: (target, PostgREST query or RPC arguments)."""
    eq = f"eq.{event_id}"
    return [
        (TARGET_REST_EVENTS, {"select": "id,name,capacity,starts_at", "id": eq}),
        (
            TARGET_REST_TICKETS,
            {
                "select": "id,code,status,first_scanned_at",
                "event_id": eq,
                "order": "updated_at.desc",
                "limit": "50",
            },
        ),
        (TARGET_REVENUE, {"p_event_id": event_id}),
    ]


def dashboard(
    env: simpy.Environment,
    params: DashboardParams,
    rng: np.random.Generator,
    emit: Emit,
    event_id: int = 1,
) -> Generator[simpy.Event, None, None]:
    """Start the viewers of event `event_id`; each view of one load shares its load id."""
    t_rng, s_rng, r_rng = rng.spawn(3)
    times = params.start_s + np.sort(t_rng.uniform(0.0, params.window_s, params.viewers))
    stays = params.stay.sample(s_rng, params.viewers).tolist()
    reloads = params.reload.stream(r_rng)
    queries = load_queries(event_id)
    loads = [0]
    for v, t in enumerate(times.tolist()):
        if t > env.now:
            yield env.timeout(t - env.now)
        env.process(_viewer(env, event_id, emit, v, stays[v], reloads, queries, loads))


def _viewer(env, event_id: int, emit: Emit, v: int, stay: float, reloads, queries, loads):
    actor = f"viewer:{v}"
    end = env.now + stay

    def load() -> None:
        load_id = loads[0]
        loads[0] += 1
        for target, query in queries:
            emit(VIEW, actor, target, {"load": load_id, "query": query}, None, OK)

    load()
    sub = {"table": "tickets", "filter": f"event_id=eq.{event_id}"}
    emit(SUBSCRIBE, actor, TARGET_REALTIME_TICKETS, sub, None, OK)
    while True:
        gap = next(reloads)
        if env.now + gap >= end:
            break
        yield env.timeout(gap)
        load()
    yield env.timeout(max(0.0, end - env.now))
    emit(UNSUBSCRIBE, actor, TARGET_REALTIME_TICKETS, sub)  # replay closes the subscription
