"""The typed config layer: msgspec decodes, our errors name the dotted key, limits read the env."""

from __future__ import annotations

import pickle
from typing import Annotated, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from msgspec import Meta, field

from traces.config import ConfigError, KeyedError, Section, Value, decode, to_plain
from traces.durations import Duration
from traces.limits import ALLOW_HUGE_ENV


class Pair(Value):
    __slots__ = ("a", "b")
    DEFAULTS = (0, 0)


def read_pair(v):
    if not isinstance(v, str) or "," not in v:
        raise KeyedError("", f"expected 'A,B', got {v!r}")
    a, b = v.split(",")
    return Pair(int(a), int(b))


class Lane(Section):
    size: Annotated[int, Meta(ge=1, extra={"limit": 10})] = 1
    mode: Literal["fast", "slow"] = "fast"
    wait_s: Annotated[float, Meta(ge=0)] = 0.0
    gap: Duration = Duration(1.0)
    pair: Pair = Pair(1, 2)


class Site(Section):
    name: str
    lanes: dict[str, Lane] = field(default_factory=dict)
    main: Lane = field(default_factory=Lane)


def err(data, quote=True) -> str:
    with pytest.raises(ConfigError) as e:
        decode(Site, data, readers={Pair: read_pair}, quote=quote)
    return str(e.value)


def test_errors_name_the_dotted_key() -> None:
    assert err({"name": "x", "main": {"size": 0}}) == "main.size: expected an integer >= 1, got 0"
    assert (
        err({"name": "x", "main": {"sise": 2}}) == "main.sise: unknown key (did you mean 'size'?)"
    )
    assert err({}) == "name: missing (required)"
    assert err({"name": "x", "main": {"mode": "x"}}).startswith("main.mode: expected one of fast")
    assert err({"name": "x", "lanes": {"a:b": {"size": 0}}}).startswith('lanes."a:b".size:')
    assert err({"name": "x", "lanes": {"a:b": {"size": 0}}}, quote=False).startswith(
        "lanes.a:b.size:"
    )
    assert err({"name": "x", "main": {"pair": "1"}}) == "main.pair: expected 'A,B', got '1'"
    assert err({"name": "x", "main": {"gap": "soon"}}).startswith("main.gap: bad duration 'soon'")


def test_custom_values_and_durations_are_read() -> None:
    s = decode(
        Site, {"name": "x", "main": {"pair": "3,4", "gap": "250ms"}}, readers={Pair: read_pair}
    )
    assert s.main.pair == Pair(3, 4) and s.main.gap == pytest.approx(0.25)
    assert pickle.loads(pickle.dumps(s.main.pair)) == s.main.pair
    with pytest.raises(AttributeError):
        s.main.pair.a = 5  # type: ignore[misc]
    assert to_plain(s, {Pair: lambda p: f"{p.a},{p.b}"})["main"]["pair"] == "3,4"


def test_limits_and_times_are_checked_after_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_HUGE_ENV, raising=False)
    assert err({"name": "x", "main": {"size": 11}}).startswith("main.size: 11 is above the limit")
    monkeypatch.setenv(ALLOW_HUGE_ENV, "1")
    assert decode(Site, {"name": "x", "main": {"size": 11}}).main.size == 11
    assert "a year" in err({"name": "x", "main": {"wait_s": 1e12}})  # times keep their limit
    assert err({"name": "x", "main": {"wait_s": float("inf")}}).startswith(
        "main.wait_s: expected a finite"
    )


@given(
    st.one_of(st.text(max_size=5), st.lists(st.integers(), max_size=2), st.booleans(), st.none())
)
def test_any_wrong_value_of_a_number_names_its_key(bad) -> None:
    assert err({"name": "x", "lanes": {"l1": {}, "l2": {"size": bad}}}).startswith(
        'lanes."l2".size: '
    )
