"""Durations: one grammar for every duration gaterush reads (`250ms`, `1.5s`, `2m`, `1h30m`, `500us`).

A duration is one or more terms `<number><unit>` (a number is `12`, `1.5`, `.5`, optionally with an
exponent); units are `us` (or `µs`), `ms`, `s` (or `sec`), `m` (or `min`), `h` and `d`, in any case.
A bare number (alone: `1h30` is not a duration) has no unit of its own: each place that reads durations says which unit it means
(`bare="s"` for trace transforms and buckets, `bare="ms"` for the stand-in's knobs) or refuses it
(`bare=None`, as threshold windows do).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

US_PER = {
    "us": 1,
    "µs": 1,
    "ms": 1_000,
    "s": 1_000_000,
    "sec": 1_000_000,
    "m": 60_000_000,
    "min": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
}
UNITS_TEXT = "us, ms, s, m, h or d"
_TERM = re.compile(
    r"((?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*(µs|us|ms|sec|min|s|m|h|d)?", re.IGNORECASE
)
# canonical units, largest first: format() writes a duration in the largest that holds it whole
_CANONICAL = (("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000), ("s", 1_000_000),
              ("ms", 1_000), ("us", 1))  # fmt: skip


def parse_fraction(text: str, *, bare: str | None = "s") -> Fraction:
    """The exact number of microseconds in `text`; ValueError ('bad duration ...') when it is not one.

    `bare` is the unit of a number written without one (None: a unit is required).
    """
    s = text.strip().lower()
    if not s:
        raise ValueError(f"bad duration {text!r}: expected a number with a unit {UNITS_TEXT}")
    pos, total = 0, Fraction(0)
    while pos < len(s):
        m = _TERM.match(s, pos)
        alone = m is not None and pos == 0 and m.end() == len(s)  # only a lone number may be bare
        unit = m and (m[2] or (bare if alone else None))
        if not m or m.end() == pos or unit is None:
            raise ValueError(
                f"bad duration {text!r}: expected a number with a unit {UNITS_TEXT}"
                " (e.g. 250ms, 1.5s, 5m, 1h30m)"
            )
        total += Fraction(m[1]) * US_PER[unit]
        pos = m.end()
        while pos < len(s) and s[pos] == " ":
            pos += 1
    return total


def parse_us(text: str, *, bare: str | None = "s") -> int:
    """A duration in whole microseconds (rounded)."""
    return round(parse_fraction(text, bare=bare))


def parse_seconds(value: Any, *, bare: str | None = "s") -> float:
    """A duration in seconds from its text, or from a bare number (in the `bare` unit)."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}: expected a number with a unit {UNITS_TEXT}")
    if isinstance(value, int | float):
        if bare is None:
            raise ValueError(f"bad duration {value!r}: expected a number with a unit {UNITS_TEXT}")
        return float(value) * US_PER[bare] / 1e6
    if not isinstance(value, str):
        raise ValueError(f"bad duration {value!r}: expected a string like '250ms' or '1.5s'")
    return float(parse_fraction(value, bare=bare) / 1_000_000)


def format_us(us: int | Fraction) -> str:
    """The canonical text of a duration: the largest unit holding it whole (`90s`, `5m`, `1.5ms`)."""
    us = Fraction(us)
    for unit, size in _CANONICAL:
        if us % size == 0 and us != 0:
            return f"{us // size}{unit}"
    if us == 0:
        return "0s"
    return f"{float(us / 1_000_000)!r}s"  # below a microsecond: every digit


class Duration(float):
    """A duration in seconds, read with the one grammar; a config field type (see traces.config).

    A bare number means seconds; a subclass with another `BARE` reads bare numbers in that unit.
    """

    BARE: str | None = "s"

    @classmethod
    def parse(cls, value: Any) -> Duration:
        """A Duration from text or a bare number (in the class's BARE unit)."""
        return cls(parse_seconds(value, bare=cls.BARE))

    @property
    def us(self) -> int:
        """The duration in whole microseconds."""
        return round(self * 1_000_000)

    def format(self) -> str:
        """The canonical text, to the microsecond (parses back to the same `us`)."""
        return format_us(self.us)


class DurationMs(Duration):
    """A Duration whose bare numbers are milliseconds (the stand-in's knobs: `latency = 20`)."""

    BARE = "ms"

    def format(self) -> str:
        """The text in milliseconds, as the knobs have always written it (`250ms`)."""
        return f"{self * 1e3:g}ms"
