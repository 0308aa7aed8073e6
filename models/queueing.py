"""M/M/c queueing theory (Erlang C): what the gate and capacity models must agree with."""

from __future__ import annotations

import math


def erlang_c(c: int, lam: float, mu: float) -> float:
    """Probability that an arrival waits in an M/M/c queue (arrival rate lam, service rate mu per server)."""
    a = lam / mu
    if a >= c:
        return 1.0
    # sum_{k<c} a^k/k! computed in a numerically stable way
    term, total = 1.0, 1.0
    for k in range(1, c):
        term *= a / k
        total += term
    last = term * a / c  # a^c / c!
    top = last * c / (c - a)
    return top / (total + top)


def mean_wait(c: int, lam: float, mu: float) -> float:
    """Mean time in queue (before service) of an M/M/c queue."""
    return erlang_c(c, lam, mu) / (c * mu - lam)


def wait_tail(c: int, lam: float, mu: float, t: float) -> float:
    """P(W > t) for the queueing time W of an M/M/c queue: C * exp(-(c mu - lam) t)."""
    return erlang_c(c, lam, mu) * math.exp(-(c * mu - lam) * t)


def wait_quantile(c: int, lam: float, mu: float, q: float) -> float:
    """The q-quantile of the queueing time of an M/M/c queue (0 when q <= 1 - C)."""
    pc = erlang_c(c, lam, mu)
    if q <= 1 - pc:
        return 0.0
    return math.log(pc / (1 - q)) / (c * mu - lam)
