"""Safety: refuse live Stripe keys, keep secrets out of every output, cap rates, plan a dry run.

Everything here runs before the first request: a live key or an impossible option stops the run
with a message naming what is wrong (exit 104) and nothing has been sent.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from replay.builders import Credentials, public_url
from traces.event import Event

LIVE_PREFIXES = ("sk_live_", "rk_live_")
STRIPE_TEST_MODE_LIMIT = 25.0  # requests/s, Stripe's sandbox limit (DOMAIN.md)

# Per-target caps (requests/s) for a remote target, under the providers' limits (DOMAIN.md):
# Supabase publishes no REST gateway limit, so the cap is a conservative guard; Realtime Free
# allows 100 joins/s; Stripe test mode 25/s. Loopback targets are not capped.
REMOTE_CAPS = {"rpc": 1000.0, "rest": 1000.0, "fn": 500.0, "realtime": 50.0}


class SafetyError(ValueError):
    """The run must not start: the message says why (never the secret itself)."""


# The variables gaterush reads keys from (besides every STRIPE_*/SUPABASE_* one it is given).
KEY_VARIABLES = ("STRIPE_TEST_SK", "STRIPE_WEBHOOK_SECRET", "SUPABASE_ANON_KEY",
                 "SUPABASE_SERVICE_ROLE_KEY")  # fmt: skip
URL_VARIABLES = ("SUPABASE_URL", "STRIPE_API_BASE")
_LIVE = re.compile(r"[sr]k_live_", re.IGNORECASE)
_QUOTES = "\"'`\u2018\u2019\u201c\u201d"
# Dots IDNA maps to "." (ideographic, fullwidth, halfwidth): a host spelled with them is the same host.
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
STRIPE_DOMAIN = "stripe.com"


def keys_from_env(env: Mapping[str, str]) -> Credentials:
    """The keys from SUPABASE_ANON_KEY, STRIPE_TEST_SK, STRIPE_WEBHOOK_SECRET and (for recorded
    service-role requests only) SUPABASE_SERVICE_ROLE_KEY: the one place a replay reads them."""
    return Credentials(
        anon_key=env.get("SUPABASE_ANON_KEY", ""),
        stripe_key=env.get("STRIPE_TEST_SK", ""),
        webhook_secret=env.get("STRIPE_WEBHOOK_SECRET", ""),
        service_key=env.get("SUPABASE_SERVICE_ROLE_KEY", ""),
    )


def as_read(value: str) -> str:
    """A variable's value as a service would take it: surrounding blanks and quotes removed."""
    v = value.strip()
    while len(v) >= 2 and v[0] in _QUOTES and v[-1] in _QUOTES:
        v = v[1:-1].strip()
    return v.strip(_QUOTES + " \t\r\n")


def is_real_stripe(url: str) -> bool:
    """True for a URL that reaches Stripe's own API, however its host is spelled.

    Case, trailing dots, a port, userinfo, percent-encoding, fullwidth letters or dots, brackets
    and backslashes do not hide it: any authority naming stripe.com or a subdomain counts.
    """
    text = unicodedata.normalize("NFKC", unquote(as_read(url))).translate(_DOTS).lower()
    # both readings of a backslash (Python's urlsplit keeps it in the host, WHATWG makes it a "/")
    authorities = []
    for t in (text, text.replace("\\", "/")):
        try:
            authorities.append(urlsplit(t).netloc or t)
        except ValueError:  # a malformed [IPv6] part: judge the raw text
            authorities.append(t)
    for part in re.split(r"[@\[\]/\\:?#\s]+", " ".join(authorities)):
        host = part.strip(".")
        if host == STRIPE_DOMAIN or host.endswith("." + STRIPE_DOMAIN):
            return True
    return False


def _refuse_value(name: str, raw: str, is_key: bool) -> None:
    value = as_read(raw)
    if _LIVE.search(raw):
        raise SafetyError(
            f"{name} holds a live Stripe key ({_LIVE.search(raw).group(0)}...): gaterush only uses "
            "test-mode keys (sk_test_/rk_test_); nothing was sent"
        )
    if value.lower().startswith("bearer") and (value[6:7].isspace() or value[6:7] == ":"):
        raise SafetyError(
            f"{name} starts with 'Bearer ': give the bare key (gaterush adds the header); nothing was sent"
        )
    if is_key and value and value != raw:
        raise SafetyError(
            f"{name} has blanks or quotes around the key: give the bare key; nothing was sent"
        )


def check_keys(keys: Credentials, stripe_mode: str, env: Mapping[str, str] | None = None) -> None:
    """Refuse what must never be sent: a live key or a `Bearer ` prefix in any variable gaterush
    reads, a key wrapped in blanks or quotes, Stripe's own API given as a URL (opt in with
    `--stripe real`), and real Stripe without a test key. Values are checked as services read them.
    """
    env = env or {}
    named = {"STRIPE_TEST_SK": keys.stripe_key, "STRIPE_WEBHOOK_SECRET": keys.webhook_secret,
             "SUPABASE_ANON_KEY": keys.anon_key}  # fmt: skip
    related = {k: v for k, v in env.items() if "STRIPE" in k.upper() or "SUPABASE" in k.upper()}
    for name, value in [*related.items(), *named.items()]:
        if isinstance(value, str):
            is_url = name in URL_VARIABLES or "URL" in name.upper() or "BASE" in name.upper()
            _refuse_value(name, value, is_key=not is_url)
    for name, url in (("--stripe", stripe_mode), ("STRIPE_API_BASE", env.get("STRIPE_API_BASE"))):
        if url and url != "real" and is_real_stripe(url):
            raise SafetyError(
                f"{name} {_shown(url)} is Stripe's own API: opt in with --stripe real "
                "(test-mode key, capped at 25/s); nothing was sent"
            )
    if stripe_mode == "real":
        key = as_read(keys.stripe_key)
        if not key:
            raise SafetyError(
                "--stripe real needs STRIPE_TEST_SK (a sk_test_ or rk_test_ key); nothing was sent"
            )
        if not key.startswith(("sk_test_", "rk_test_")):
            raise SafetyError(
                "--stripe real: STRIPE_TEST_SK is not a test-mode key (sk_test_/rk_test_); nothing was sent"
            )


def _shown(url: str) -> str:
    try:
        return public_url(url.strip())
    except ValueError:
        return "(a malformed URL)"


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
