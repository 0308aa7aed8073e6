"""Durations: one grammar everywhere; canonical texts round-trip; a bare number's unit is the caller's."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from traces.durations import US_PER, Duration, DurationMs, format_us, parse_seconds, parse_us

CANONICAL_UNITS = ("us", "ms", "s", "m", "h", "d")


@given(st.integers(1, 10**15))
def test_format_then_parse_gives_the_duration_back(us: int) -> None:
    text = format_us(us)
    assert parse_us(text) == us
    assert format_us(parse_us(text)) == text  # the canonical text is a fixed point


@given(st.integers(1, 10**6), st.sampled_from(CANONICAL_UNITS))
def test_canonical_texts_round_trip(n: int, unit: str) -> None:
    x = format_us(n * US_PER[unit])  # the canonical spelling of n units
    assert format_us(parse_us(x)) == x


@given(st.integers(0, 10**6), st.integers(0, 59), st.sampled_from(["", " "]))
def test_terms_add_up_in_any_case(h: int, m: int, sep: str) -> None:
    text = f"{h}h{sep}{m}m"
    assert parse_us(text) == parse_us(f"{h}h") + parse_us(f"{m}m")
    assert parse_us(text.upper()) == parse_us(text)


@given(st.integers(1, 10**9))
def test_a_duration_value_round_trips_through_its_text(us: int) -> None:
    d = Duration(us / 1e6)
    assert Duration.parse(d.format()).us == d.us


@given(st.floats(0, 1e6, allow_nan=False))
def test_a_bare_number_is_in_the_callers_unit(x: float) -> None:
    assert DurationMs.parse(x) == pytest.approx(x / 1e3)
    assert Duration.parse(x) == pytest.approx(x)
    assert parse_seconds(str(x) if "e" not in str(x) else "1", bare="ms") >= 0


@pytest.mark.parametrize("text", ["", "abc", "5 parsecs", "-3s", "m", "1..2s"])
def test_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_us(text)


def test_a_unit_may_be_required() -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_seconds("10", bare=None)
    assert parse_seconds("10s", bare=None) == 10.0
