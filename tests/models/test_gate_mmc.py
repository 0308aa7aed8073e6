"""The gate configured as M/M/c (Poisson arrivals at a constant rate, exponential scans, one shared
queue) agrees with Erlang C: mean wait, P(wait > t) and P(wait = 0); join-the-shortest-queue waits
longer than one shared queue, as it must."""

import numpy as np
import pytest
import simpy

from models.arrivals import ArrivalParams, arrivals
from models.distributions import Dist
from models.gate import Gate, GateParams, TicketMix
from models.queueing import erlang_c, mean_wait, wait_tail
from models.rate_profiles import constant
from models.sink import ListSink
from models.venue import EventParams
from traces.event import ARRIVE, SCAN

C, MEAN_SCAN, RHO = 4, 3.0, 0.8
MU = 1 / MEAN_SCAN
LAM = RHO * C * MU
CUSTOMERS = 100_000
WARMUP = 2_000


def gate_waits(queue: str, seed: int = 7) -> np.ndarray:
    """Queueing time of each attendee (scan time - arrival time), in seconds, warm-up dropped."""
    env = simpy.Environment()
    sink = ListSink(env)
    a_rng, g_rng = np.random.default_rng(seed).spawn(2)
    gp = GateParams(
        lanes=C,
        queue=queue,
        service=Dist("exponential", MEAN_SCAN),
        tickets=TicketMix(valid=1.0, screenshot=0.0, invalid=0.0, wrong_event=0.0),
        departures=False,
    )
    gate = Gate(env, gp, g_rng, sink.emit, EventParams(presold=CUSTOMERS * 2, other_presold=1))
    prof = constant(LAM, 0.0, CUSTOMERS / LAM)
    env.process(arrivals(env, ArrivalParams(profile=prof), a_rng, sink.emit, gate.join))
    env.run()
    sink.flush()
    arrived, waits = {}, []
    for e in sink.events:
        if e.kind == ARRIVE:
            arrived[e.actor] = e.t_us
        elif e.kind == SCAN:
            waits.append(e.t_us - arrived.pop(e.actor))
    assert not arrived  # everyone was scanned
    return np.asarray(waits[WARMUP:]) / 1e6


@pytest.fixture(scope="module")
def shared_waits() -> np.ndarray:
    return gate_waits("shared")


def test_enough_customers(shared_waits):
    assert len(shared_waits) > 50_000


def batch_se(x: np.ndarray, batches: int = 20) -> float:
    """Standard error of the mean by batch means (waits of neighbours are correlated)."""
    means = np.array([b.mean() for b in np.array_split(x, batches)])
    return float(means.std(ddof=1) / np.sqrt(batches))


def test_mean_wait_matches_erlang_c(shared_waits):
    expected = mean_wait(C, LAM, MU)  # about 2.24 s
    se = batch_se(shared_waits)
    assert abs(shared_waits.mean() - expected) < 4 * se
    assert shared_waits.mean() == pytest.approx(expected, rel=0.15)  # and the interval is not huge


def test_probability_of_waiting_matches_erlang_c(shared_waits):
    # a wait shorter than a microsecond is no wait (times are whole microseconds)
    assert (shared_waits > 1e-6).mean() == pytest.approx(erlang_c(C, LAM, MU), abs=0.02)


@pytest.mark.parametrize("t", [1.0, 3.0, 6.0, 10.0, 15.0])
def test_wait_tail_matches_erlang_c(shared_waits, t):
    assert (shared_waits > t).mean() == pytest.approx(wait_tail(C, LAM, MU, t), abs=0.02)


def test_wait_quantiles_match_erlang_c(shared_waits):
    pc = erlang_c(C, LAM, MU)
    for q in (0.75, 0.9, 0.95):
        theory = np.log(pc / (1 - q)) / (C * MU - LAM)
        assert np.quantile(shared_waits, q) == pytest.approx(theory, rel=0.15)


def test_join_shortest_queue_waits_longer_than_one_shared_queue(shared_waits):
    jsq = gate_waits("shortest")
    assert jsq.mean() > shared_waits.mean()
    assert jsq.mean() < 2 * shared_waits.mean()  # but it is not absurd
