"""The backend capacity model: M/M/c agrees with Erlang C; timeouts; `after` dependencies."""

import numpy as np
import pytest

from models.capacity import Backend, CapacityParams, predict
from models.distributions import Dist
from models.queueing import erlang_c, mean_wait
from traces.event import Event


def requests(times_s, target="rpc:scan_ticket_atomic", after=None):
    return [
        Event(
            int(round(t * 1e6)), i, "scan", f"a:{i}", target, b"", after[i] if after else None, None
        )
        for i, t in enumerate(times_s)
    ]


def test_mmc_mean_wait_matches_erlang_c():
    c, mu, lam, n = 8, 50.0, 320.0, 200_000  # 20 ms service, rho 0.8
    rng = np.random.default_rng(5)
    times = np.cumsum(rng.exponential(1 / lam, n))
    params = CapacityParams(
        targets=(("rpc:scan_ticket_atomic", Backend(c, Dist("exponential", 1 / mu))),)
    )
    preds = list(predict(requests(times), params, np.random.default_rng(6)))
    assert len(preds) == n and all(p.ok for p in preds)
    waits = np.array([p.start_us - p.scheduled_us for p in preds[5000:]]) / 1e6
    assert waits.mean() == pytest.approx(mean_wait(c, lam, mu), rel=0.1)
    assert (waits > 1e-6).mean() == pytest.approx(erlang_c(c, lam, mu), abs=0.03)
    service = np.array([p.done_us - p.start_us for p in preds]) / 1e6
    assert service.mean() == pytest.approx(1 / mu, rel=0.02)


def test_fifo_and_timeouts():
    params = CapacityParams(default=Backend(1, Dist("fixed", 1.0), timeout_s=1.5))
    preds = list(predict(requests([0.0, 0.0, 0.0]), params, np.random.default_rng(0)))
    assert [(p.start_us, p.done_us, p.ok) for p in preds] == [
        (0, 1_000_000, True),
        (1_000_000, 1_500_000, False),  # would finish at 2.0 s: the client gave up at 1.5 s
        (1_500_000, 1_500_000, False),  # waited 1.5 s for a worker: left the queue
    ]


def test_after_is_sent_when_the_earlier_request_completes():
    params = CapacityParams(default=Backend(4, Dist("fixed", 2.0)))
    evs = requests([0.0, 0.5, 1.0], target="stripe:payment_intents.create", after=[None, 0, None])
    preds = {p.seq: p for p in predict(evs, params, np.random.default_rng(0))}
    assert preds[1].scheduled_us == 2_000_000  # max(0.5 s, completion of seq 0 at 2.0 s)
    order = [p.seq for p in predict(evs, params, np.random.default_rng(0))]
    assert order == [0, 2, 1]  # predictions come in the order requests are sent


def test_unserved_targets_are_skipped():
    params = CapacityParams(targets=(("rpc:a", Backend()),), default=None)
    evs = requests([0.0]) + [
        Event(1, 1, "view", "v", "rpc:a", b""),
        Event(2, 2, "arrive", "x", None, b""),
    ]
    assert [p.seq for p in predict(evs, params, np.random.default_rng(0))] == [1]
