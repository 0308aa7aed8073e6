"""Which hosts of a recording are targets: the Supabase project and the Stripe API.

A HAR or a log holds requests to every host a page or an app talked to (analytics, CDNs, Stripe.js);
only the Supabase project's host and api.stripe.com are gaterush targets. The project host is
the one given (`--supabase-url`), else the most frequent `*.supabase.co` host, else the most
frequent host that serves a Supabase API root (a self-hosted project or the stand-in, which
serves the Stripe subset on the same host).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from urllib.parse import urlsplit

from traces.event import TraceError

STRIPE_HOST = "api.stripe.com"
SUPABASE_ROOTS = ("/rest/v1/", "/functions/v1/", "/realtime/v1/")


def host_of(url: str) -> str:
    """A URL's host, lower case, without a trailing dot ('' when it has none)."""
    try:
        return (urlsplit(url).hostname or "").rstrip(".").lower()
    except ValueError:
        return ""


def project_host(urls: Iterable[str], supabase_url: str | None = None) -> str | None:
    """The Supabase project's host among `urls` (see the module docstring); None if there is none."""
    if supabase_url:
        host = host_of(supabase_url)
        if not supabase_url.startswith(("http://", "https://")) or not host:
            raise TraceError(f"--supabase-url: expected an http(s):// URL, got {supabase_url!r}")
        return host
    hosted: Counter[str] = Counter()
    serving: Counter[str] = Counter()
    for url in urls:
        host = host_of(url)
        if host.endswith(".supabase.co"):
            hosted[host] += 1
        elif any(root in url for root in SUPABASE_ROOTS) and host != STRIPE_HOST:
            serving[host] += 1
    best = hosted or serving
    return best.most_common(1)[0][0] if best else None


def skip_reason(host: str, project: str | None) -> str | None:
    """None when a request to `host` may be a target, else why it is skipped."""
    host = host.rstrip(".").lower()
    if host == STRIPE_HOST or (project is not None and host == project):
        return None
    if project is None:
        return f"host {host or '(none)'} is not a target (no Supabase project host: give --supabase-url)"
    return f"host {host or '(none)'} is not a target (targets: {project}, {STRIPE_HOST})"
