"""Safety: live keys, redaction, rate caps and the dry-run plan."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replay.builders import Credentials
from replay.safety import (
    STRIPE_TEST_MODE_LIMIT,
    SafetyError,
    check_keys,
    default_rate_caps,
    is_loopback,
    make_plan,
    merge_caps,
    redact,
)
from traces.event import Event


@pytest.mark.parametrize("keys,env", [
    (Credentials(stripe_key="sk_live_abc"), {}),
    (Credentials(stripe_key="rk_live_abc"), {}),
    (Credentials(), {"STRIPE_SECRET_KEY": "sk_live_zzz"}),
])  # fmt: skip
def test_live_keys_are_refused(keys: Credentials, env: dict) -> None:
    with pytest.raises(SafetyError, match="live Stripe key") as e:
        check_keys(keys, "standin", env)
    assert "abc" not in str(e.value) and "zzz" not in str(e.value)


def test_real_stripe_needs_a_test_key() -> None:
    check_keys(Credentials(stripe_key="sk_test_1"), "real")
    check_keys(Credentials(stripe_key="rk_test_1"), "real")
    with pytest.raises(SafetyError, match="needs STRIPE_TEST_SK"):
        check_keys(Credentials(), "real")
    with pytest.raises(SafetyError, match="not a test-mode key"):
        check_keys(Credentials(stripe_key="pk_test_1"), "real")


def test_redact() -> None:
    assert (
        redact("url ws://h/?apikey=SECRET1&x=1 SECRET2", ["SECRET1", "SECRET2", ""])
        == "url ws://h/?apikey=***&x=1 ***"
    )


def test_caps_only_for_remote_targets_and_real_stripe() -> None:
    targets = ["rpc:scan_ticket_atomic", "stripe:payment_intents.create", "realtime:tickets"]
    assert default_rate_caps(targets, local=True, stripe_mode="standin") == {}
    assert default_rate_caps(targets, local=True, stripe_mode="real") == {
        "stripe:payment_intents.create": STRIPE_TEST_MODE_LIMIT
    }
    remote = default_rate_caps(targets, local=False, stripe_mode="standin")
    assert (
        set(remote) == {"rpc:scan_ticket_atomic", "realtime:tickets"}
        and remote["realtime:tickets"] <= 100
    )
    with pytest.raises(SafetyError, match="at most 25"):
        merge_caps({}, {"stripe:payment_intents.create": 100}, "real")
    assert merge_caps({"a:b": 5}, {"a:b": 7}, "standin") == {"a:b": 7}


@given(st.lists(st.tuples(st.integers(0, 5_000_000), st.sampled_from(["rpc:a", "stripe:b", None])), max_size=60),
       st.sampled_from([0.5, 1.0, 4.0]))  # fmt: skip
def test_plan_counts_and_peaks(items: list, speed: float) -> None:
    evs = [
        Event(t, i, "k", "x", target, b"")
        for i, (t, target) in enumerate(sorted(items, key=lambda x: x[0]))
    ]
    plan = make_plan(evs, speed)
    sent = [e for e in evs if e.target]
    assert plan.total == len(sent) and plan.events == len(evs)
    assert plan.stripe_calls == sum(e.target == "stripe:b" for e in sent)
    # peak: the most requests in one whole second of replay time, brute force
    secs: dict[int, int] = {}
    for e in sent:
        s = int(e.t_us / speed // 1_000_000)
        secs[s] = secs.get(s, 0) + 1
    assert plan.peak_total == max(secs.values(), default=0)
    assert plan.duration_s == pytest.approx(max((e.t_us for e in sent), default=0) / speed / 1e6)


def test_loopback_detection() -> None:
    assert all(
        is_loopback(u)
        for u in ("http://127.0.0.1:5", "http://127.8.9.1", "http://localhost:1", "http://[::1]:8")
    )
    assert not any(is_loopback(u) for u in ("https://p.supabase.co", "http://10.0.0.1", "local"))
