"""Erlang C formulas against values worked by hand."""

import math

import pytest

from models.queueing import erlang_c, mean_wait, wait_quantile, wait_tail


def test_single_server_waits_with_probability_rho():
    assert erlang_c(1, 0.7, 1.0) == pytest.approx(0.7)
    assert mean_wait(1, 0.7, 1.0) == pytest.approx(0.7 / (1.0 - 0.7))  # M/M/1: rho / (mu - lam)


def test_two_servers_at_offered_load_one():
    # a = 1, c = 2: C = (a^2/2! * 2/(2-1)) / (1 + a + a^2/2! * 2/(2-1)) = 1 / 3
    assert erlang_c(2, 1.0, 1.0) == pytest.approx(1 / 3)


def test_saturated_queue_always_waits():
    assert erlang_c(3, 3.0, 1.0) == 1.0


def test_quantile_inverts_tail():
    c, lam, mu = 4, 1.0, 1 / 3.0
    for q in (0.5, 0.9, 0.99):
        t = wait_quantile(c, lam, mu, q)
        if t > 0:
            assert wait_tail(c, lam, mu, t) == pytest.approx(1 - q)
    assert wait_quantile(c, lam, mu, 0.0) == 0.0
    assert math.isclose(wait_tail(c, lam, mu, 0.0), erlang_c(c, lam, mu))
