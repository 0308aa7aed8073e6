"""The runner: wires a scenario's models to one SimPy environment and streams their events to a writer.

Each model draws from its own random stream, spawned from one SeedSequence(seed) with a key derived
from the model's name (not its position), so adding a model does not change another's stream. The
same scenario and seed give the same events, hence (writers being deterministic) the same bytes.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import simpy

from models.arrivals import arrivals
from models.dashboard import dashboard
from models.gate import Gate
from models.sales import sales
from models.sink import BATCH, StreamSink
from models.webhook_burst import webhook_burst
from sim.scenario import Scenario, arrival_profile, inventory
from traces.event import Event
from traces.header import TraceHeader

Progress = Callable[[float], None]  # called with the fraction of simulated time done, 0..1


def model_rng(seed: int, name: str) -> np.random.Generator:
    """The random stream of one model: a child of SeedSequence(seed) keyed by the model's name."""
    root = np.random.SeedSequence(seed)
    child = np.random.SeedSequence(
        root.entropy, spawn_key=(*root.spawn_key, zlib.crc32(name.encode()))
    )
    return np.random.default_rng(child)


def origin_unix_us(sc: Scenario) -> int:
    """The scenario's origin (RFC 3339) as microseconds since the Unix epoch."""
    t = dt.datetime.fromisoformat(sc.scenario.origin)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def header(sc: Scenario, seed: int) -> TraceHeader:
    """The header a simulated trace starts with (writers fill in counts and the expected end state)."""
    return TraceHeader(
        scenario=sc.to_dict(),
        seed=seed,
        origin_unix_us=origin_unix_us(sc),
        inventory=inventory(sc),
        source="simulate",
    )


def horizon(sc: Scenario) -> float:
    """About when the simulated day ends (for progress only)."""
    ends = [1.0]
    e = sc.event
    if sc.arrivals is not None:
        prof = arrival_profile(sc)
        a = sc.arrivals
        ends.append(prof.end if prof else a.start_s + a.waves * a.wave_gap_s)
        if sc.gate is not None and sc.gate.departures:
            ends.append(e.start_s + e.length_s + 3 * sc.gate.leave_after.expected)
    if sc.sales is not None:
        s = sc.sales
        ends.append(s.start_s + s.window_s + 3 * s.think.expected + 2 * s.delivery.delay.expected)
    if sc.webhook_burst is not None:
        ends.append(sc.webhook_burst.start_s + sc.webhook_burst.window_s)
    if sc.dashboard is not None:
        d = sc.dashboard
        ends.append(d.start_s + d.window_s + d.stay.expected)
    return max(ends)


def gate_open_s(sc: Scenario) -> float:
    """When the gate opens (s): a stadium day's gates open `gates_open_min` before the start."""
    a = sc.arrivals
    if a is None or a.profile != "stadium":
        return 0.0
    return max(0.0, sc.event.start_s - a.gates_open_min * 60)


def build(env: simpy.Environment, sc: Scenario, seed: int, emit) -> None:
    """Start the scenario's model processes in env: each model gets its own table of the scenario."""
    e = sc.event
    origin_s = origin_unix_us(sc) // 1_000_000
    if sc.arrivals is not None and sc.gate is not None:
        g = sc.gate
        gate = Gate(env, g, model_rng(seed, "gate"), emit, e, gate_open_s(sc))
        ap = sc.arrivals.process(e.start_s, g.name)
        env.process(arrivals(env, ap, model_rng(seed, "arrivals"), emit, gate.join))
    if sc.sales is not None:
        env.process(sales(env, sc.sales, model_rng(seed, "sales"), emit, e, origin_s))
    if sc.webhook_burst is not None:
        rng = model_rng(seed, "webhook_burst")
        env.process(webhook_burst(env, sc.webhook_burst, rng, emit, e.id, e.currency, origin_s))
    if sc.dashboard is not None:
        env.process(dashboard(env, sc.dashboard, model_rng(seed, "dashboard"), emit, e.id))


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Collect cyclic garbage less often while simulating: the buffered events are many young
    objects that are not garbage, and scanning them again and again costs about a third of the time."""
    old = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)


def run(
    sc: Scenario,
    seed: int,
    consumer: Callable[[list[Event]], None],
    progress: Progress | None = None,
    batch: int = BATCH,
) -> int:
    """Simulate the scenario, handing events in batches (sorted by t_us, seq) to consumer; returns the count."""
    env = simpy.Environment()
    sink = StreamSink(env, consumer, batch)
    build(env, sc, seed, sink.emit)
    end = horizon(sc)
    with _fewer_collections():
        if progress is not None:
            for i in range(1, 100):
                env.run(until=end * i / 100)
                progress(i / 100)
        env.run()  # to the last event (run(until) leaves its stop marker behind: harmless)
        sink.flush()
    if progress is not None:
        progress(1.0)
    return sink.count


def events(sc: Scenario, seed: int, steps: int = 200) -> Iterator[Event]:
    """The scenario's events in (t_us, seq) order, streamed from memory (no trace file).

    The same events `run` hands out; the simulation advances in steps, so memory holds one step's
    events, not the day's.
    """
    env = simpy.Environment()
    out: deque[Event] = deque()
    sink = StreamSink(env, out.extend, 16384)
    build(env, sc, seed, sink.emit)
    end = horizon(sc)
    for i in range(1, steps):
        env.run(until=end * i / steps)
        while out:
            yield out.popleft()
    env.run()  # what is left after the horizon
    sink.flush()
    while out:
        yield out.popleft()


def simulate(
    sc: Scenario, seed: int, out: str | os.PathLike, progress: Progress | None = None
) -> int:
    """Simulate the scenario into a trace file (format from the suffix); returns the event count.

    The file appears only when complete: events go to a temporary file next to it, renamed at the end.
    """
    from traces.io import open_writer  # noqa: PLC0415 - the writer is only needed here
    from traces.outputs import atomic  # noqa: PLC0415

    with atomic(out) as tmp, open_writer(tmp, header(sc, seed)) as w:
        n = run(sc, seed, w.write_many, progress)
    return n
