"""Safety: refuse live Stripe keys, keep secrets out of every output, cap rates, plan a dry run.

Everything here runs before the first request: a live key or an impossible option stops the run
with a message naming what is wrong (exit 104) and nothing has been sent.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from replay.builders import Keys
from traces.event import Event

LIVE_PREFIXES = ("sk_live_", "rk_live_")
STRIPE_TEST_MODE_LIMIT = 25.0  # requests/s, Stripe's sandbox limit (DOMAIN.md)

# Per-target caps (requests/s) for a remote target, under the providers' limits (DOMAIN.md):
# Supabase publishes no REST gateway limit, so the cap is a conservative guard; Realtime Free
# allows 100 joins/s; Stripe test mode 25/s. Loopback targets are not capped.
REMOTE_CAPS = {"rpc": 1000.0, "rest": 1000.0, "fn": 500.0, "realtime": 50.0}


class SafetyError(ValueError):
    """The run must not start: the message says why (never the secret itself)."""


def check_keys(keys: Keys, stripe_mode: str, env: Mapping[str, str] | None = None) -> None:
    """Refuse a live Stripe key in the keys or any STRIPE_*/SUPABASE_* variable, and real Stripe without a test key."""
    named = {"STRIPE_TEST_SK": keys.stripe_key, "STRIPE_WEBHOOK_SECRET": keys.webhook_secret,
             "SUPABASE_ANON_KEY": keys.anon_key}  # fmt: skip
    related = {
        k: v for k, v in (env or {}).items() if "STRIPE" in k.upper() or "SUPABASE" in k.upper()
    }
    for name, value in {**related, **named}.items():
        if isinstance(value, str) and value.startswith(LIVE_PREFIXES):
            raise SafetyError(
                f"{name} holds a live Stripe key ({value[:8]}...): gaterush only uses test-mode keys "
                "(sk_test_/rk_test_); nothing was sent"
            )
    if stripe_mode == "real":
        if not keys.stripe_key:
            raise SafetyError(
                "--stripe real needs STRIPE_TEST_SK (a sk_test_ or rk_test_ key); nothing was sent"
            )
        if not keys.stripe_key.startswith(("sk_test_", "rk_test_")):
            raise SafetyError(
                "--stripe real: STRIPE_TEST_SK is not a test-mode key (sk_test_/rk_test_); nothing was sent"
            )


def redact(text: str, secrets: Iterable[str]) -> str:
    """The text with every secret value replaced by ***."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


def is_loopback(url: str) -> bool:
    """True for a URL on this machine (127.0.0.0/8, ::1, localhost): no provider limit applies."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_rate_caps(targets: Iterable[str], local: bool, stripe_mode: str) -> dict[str, float]:
    """The cap per target for this run: none on loopback, provider-safe values on a remote target."""
    caps: dict[str, float] = {}
    for t in targets:
        kind = t.partition(":")[0]
        if kind == "stripe":
            if stripe_mode == "real":
                caps[t] = STRIPE_TEST_MODE_LIMIT
        elif not local and kind in REMOTE_CAPS:
            caps[t] = REMOTE_CAPS[kind]
    return caps


def merge_caps(
    defaults: Mapping[str, float], overrides: Mapping[str, float], stripe_mode: str
) -> dict[str, float]:
    """Caps with --rate-cap overrides; real Stripe never above its test-mode limit."""
    caps = {**defaults, **overrides}
    for t, r in caps.items():
        if t.startswith("stripe:") and stripe_mode == "real" and r > STRIPE_TEST_MODE_LIMIT:
            raise SafetyError(
                f"--rate-cap {t}={r:g}: real Stripe test mode allows at most {STRIPE_TEST_MODE_LIMIT:g}/s"
            )
    return caps


@dataclass(frozen=True, slots=True)
class Plan:
    """What a replay would send: --dry-run prints it, and the progress line uses its totals."""

    requests: dict[str, int] = field(default_factory=dict)  # per target (events with a target)
    peak_rate: dict[str, int] = field(
        default_factory=dict
    )  # per target: most requests in one second
    peak_total: int = 0  # most requests in one second, all targets
    duration_s: float = 0.0  # replay time of the last event (after --speed)
    stripe_calls: int = 0  # stripe:* API calls (payment intents)
    events: int = 0  # all events read, with or without a target

    @property
    def total(self) -> int:
        """Requests (and subscriptions) the run will attempt."""
        return sum(self.requests.values())


def make_plan(events: Iterable[Event], speed: float) -> Plan:
    """Scan the events once (streaming) and count what a replay at `speed` would send."""
    per: Counter[str] = Counter()
    peak: dict[str, int] = {}
    cur: Counter[str] = Counter()
    sec = None
    total_cur = 0
    peak_total = 0
    last = 0
    n = 0
    for ev in events:
        n += 1
        if ev.target is None:
            continue
        t = ev.t_us / speed
        last = max(last, t)
        s = int(t // 1_000_000)
        if s != sec:
            for k, v in cur.items():
                peak[k] = max(peak.get(k, 0), v)
            peak_total = max(peak_total, total_cur)
            cur.clear()
            total_cur = 0
            sec = s
        cur[ev.target] += 1
        total_cur += 1
        per[ev.target] += 1
    for k, v in cur.items():
        peak[k] = max(peak.get(k, 0), v)
    peak_total = max(peak_total, total_cur)
    stripe = sum(v for k, v in per.items() if k.startswith("stripe:"))
    return Plan(dict(per), peak, peak_total, last / 1e6, stripe, n)


def format_plan(plan: Plan, target: str, stripe_mode: str, caps: Mapping[str, float]) -> str:
    """The dry-run text: requests per target, peak rates, duration, Stripe calls, caps."""
    lines = [f"dry run: nothing sent. target {target}, Stripe API calls to {stripe_mode}", ""]
    w = max([len(t) for t in plan.requests] + [6])
    lines.append(f"  {'target':<{w}}  {'requests':>9}  {'peak/s':>7}  cap/s")
    for t in sorted(plan.requests):
        cap = caps.get(t)
        warn = (
            "  (peak above cap: the excess is dropped)"
            if cap is not None and plan.peak_rate.get(t, 0) > cap
            else ""
        )
        lines.append(
            f"  {t:<{w}}  {plan.requests[t]:>9}  {plan.peak_rate.get(t, 0):>7}  {'-' if cap is None else f'{cap:g}'}{warn}"
        )
    lines += [
        "",
        f"  requests      {plan.total}",
        f"  peak rate     {plan.peak_total}/s",
        f"  duration      {plan.duration_s:.1f} s",
        f"  Stripe calls  {plan.stripe_calls}",
    ]
    return "\n".join(lines)
