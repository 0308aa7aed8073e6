"""Scenario data -> frozen typed config through the one config layer (traces.config, msgspec).

The scenario's sections are the models' parameter structs; a distribution is read by
models.distributions.read_dist. Errors name the dotted key (`gate.lanes: expected an integer >= 1,
got 0`) and are ScenarioErrors, so the CLI exits 104 on them.
"""

from __future__ import annotations

from typing import Any

from models.distributions import Dist, dist_plain, read_dist
from traces import config


class ScenarioError(config.ConfigError):
    """A scenario is invalid; the message starts with the dotted key (`gate.lanes: ...`)."""


def build(cls: type, data: Any) -> Any:
    """An instance of the config struct `cls` from TOML data, validated."""
    return config.decode(cls, data, readers={Dist: read_dist}, error=ScenarioError)


def to_plain(obj: Any) -> Any:
    """A config as plain TOML/JSON-ready data (dicts, lists, numbers, strings)."""
    return config.to_plain(obj, {Dist: dist_plain})
