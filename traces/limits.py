"""Sane maxima for sizes and times, shared by the scenario validator and the trace header check.

Each is far above a real event day (a 100,000-seat stadium, a few hours) and far below what
exhausts a machine. `GATERUSH_ALLOW_HUGE=1` lifts the size limits for a deliberate huge run;
times and prices keep theirs, since past them the microsecond clock itself overflows.
"""

from __future__ import annotations

import os

ALLOW_HUGE_ENV = "GATERUSH_ALLOW_HUGE"
MAX_PEOPLE = 5_000_000  # attendees, buyers, webhook events of one scenario
MAX_TICKETS = 10_000_000  # an event's capacity and presold tickets (the stand-in seeds each one)
MAX_VIEWERS = 100_000  # dashboard viewers, each holding a websocket
MAX_LANES = 10_000  # gate lanes, each a queue
MAX_WORKERS = 100_000  # backend workers of the capacity model
MAX_COUNT = 10_000  # waves, retries and other small counts
MAX_SECONDS = 366 * 86_400  # any time or duration: a year
MAX_PRICE_CENTS = 10**12  # one ticket's price
MAX_EVENT_ID = 2**53  # exact as a JSON number and a float


def allow_huge() -> bool:
    """True when the user lifted the size limits (GATERUSH_ALLOW_HUGE=1)."""
    return os.environ.get(ALLOW_HUGE_ENV, "").strip().lower() in ("1", "true", "yes")


def over_limit(value: float, limit: float, *, size: bool = True) -> str | None:
    """Why `value` is refused (naming the limit and how to raise it), or None when it is fine."""
    if value <= limit or (size and allow_huge()):
        return None
    how = f" (set {ALLOW_HUGE_ENV}=1 to allow more)" if size else " (a year, in seconds)"
    return f"{_num(value)} is above the limit of {_num(limit)}{how}"


def _num(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() and abs(v) < 1e18 else f"{v:g}"
