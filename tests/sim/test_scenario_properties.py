"""Scenario properties: every built-in decodes and round-trips; any invalid value names its key."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim import scenario
from sim.scenario import ScenarioError

BUILTINS = scenario.builtin_names()


def leaves(d: dict[str, Any], key: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every settable value of a scenario's plain data (a Dist is one)."""
    out = []
    for k, v in d.items():
        sub = f"{key}.{k}" if key else k
        if sub in ("thresholds", "capacity.targets"):
            continue  # keys that are names, not fields
        if isinstance(v, dict) and "dist" not in v:
            out.extend(leaves(v, sub))
        else:
            out.append((sub, v))
    return out


def set_at(d: dict[str, Any], key: str, value: Any) -> None:
    *path, last = key.split(".")
    for k in path:
        d = d[k]
    d[last] = value


LEAVES = [(name, k, v) for name in BUILTINS for k, v in leaves(scenario.load(name).to_dict())]


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_decodes_and_round_trips(name: str) -> None:
    sc = scenario.load(name)
    assert scenario.parse(sc.to_dict()) == sc
    assert sc.to_dict() == scenario.parse(sc.to_dict()).to_dict()


@given(st.sampled_from(LEAVES), st.sampled_from([{"x": 1}, [[1]], "oops", None]))
def test_a_value_of_the_wrong_type_names_its_dotted_key(leaf, bad) -> None:
    name, key, value = leaf
    if isinstance(value, str) and bad == "oops":
        bad = 12  # any string is a string: give a number instead
    data = scenario.load(name).to_dict()
    set_at(data, key, bad)
    with pytest.raises(ScenarioError) as e:
        scenario.parse(data)
    assert e.value.key == key or e.value.key.startswith((key + ".", key + "[")), str(e.value)


@given(
    st.sampled_from(
        [k for k in LEAVES if isinstance(k[2], int | float) and not isinstance(k[2], bool)]
    )
)
def test_a_negative_number_is_refused_naming_its_key(leaf) -> None:
    """Every number of a scenario is a count, a size, a time or a weight: none may be negative."""
    name, key, _ = leaf
    data = scenario.load(name).to_dict()
    set_at(data, key, -1)
    with pytest.raises(ScenarioError) as e:
        scenario.parse(data)
    assert e.value.key == key and "expected" in str(e.value), str(e.value)


def test_a_table_key_is_named_in_quotes() -> None:
    with pytest.raises(ScenarioError) as e:
        scenario.load("event-day", ['capacity.targets."rpc:x".workers=0'])
    assert str(e.value) == 'capacity.targets."rpc:x".workers: expected an integer >= 1, got 0'
