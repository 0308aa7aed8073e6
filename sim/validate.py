"""Build frozen config dataclasses from TOML data, naming the dotted key of anything wrong.

Field types come from the annotations; bounds and choices from field metadata (`spec(...)`).
Supported types: int, float, str, bool, Dist, nested dataclasses, `X | None`, tuples of floats,
tuples of float pairs, `tuple[float, float] | None`, and dicts of str to a dataclass or to tuples of str.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import math
import types
import typing
from typing import Any

from models.distributions import KINDS, Dist
from traces.limits import MAX_SECONDS, over_limit


class ScenarioError(ValueError):
    """A scenario is invalid; the message starts with the dotted key (`gate.lanes: ...`)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


def spec(
    default: Any = dataclasses.MISSING,
    *,
    ge=None,
    gt=None,
    le=None,
    lt=None,
    limit=None,
    choices=None,
    factory: Any = dataclasses.MISSING,
    doc: str = "",
) -> Any:
    """A dataclass field with validation bounds (ge/gt/le/lt), allowed choices and a one-line doc.

    `limit` is a sane maximum for a size (traces.limits), liftable with GATERUSH_ALLOW_HUGE=1.
    """
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "limit": limit, "choices": choices, "doc": doc}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _describe(v: Any) -> str:
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, list):
        return "an array"
    return repr(v)


def _bounds_text(meta: dict) -> str:
    parts = []
    for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if meta.get(k) is not None:
            parts.append(f"{op} {meta[k]:g}")
    return " " + " and ".join(parts) if parts else ""


def _check_bounds(key: str, v: float, meta: dict, what: str) -> None:
    ge, gt, le, lt = meta.get("ge"), meta.get("gt"), meta.get("le"), meta.get("lt")
    if (
        (ge is not None and v < ge)
        or (gt is not None and v <= gt)
        or (le is not None and v > le)
        or (lt is not None and v >= lt)
    ):
        raise ScenarioError(key, f"expected {what}{_bounds_text(meta)}, got {v!r}")


def _number(key: str, v: Any, meta: dict, integer: bool) -> int | float:
    what = "an integer" if integer else "a number"
    if (
        isinstance(v, bool)
        or not isinstance(v, int | float)
        or (integer and not isinstance(v, int))
    ):
        raise ScenarioError(key, f"expected {what}{_bounds_text(meta)}, got {_describe(v)}")
    if not integer and not math.isfinite(v):
        raise ScenarioError(key, f"expected a finite number, got {v!r}")
    _check_bounds(key, v, meta, what)
    _check_limit(key, v, meta)
    return v if integer else float(v)


def _check_limit(key: str, v: float, meta: dict) -> None:
    """A size above its limit, or a time (a key in _s or _min, a distribution's value) above a year."""
    last = key.rpartition(".")[2].split("[")[0]
    if meta.get("limit") is not None:
        problem = over_limit(v, meta["limit"])
    elif last.endswith("_s") or meta.get("seconds"):
        problem = over_limit(v, MAX_SECONDS, size=False)
    elif last.endswith("_min"):
        problem = over_limit(v, MAX_SECONDS / 60, size=False)
    else:
        problem = None
    if problem:
        raise ScenarioError(key, problem)


def build_dist(key: str, v: Any) -> Dist:
    """A Dist from a table {dist = "lognormal", mean = 3.5, sd = 1.5} or a number (fixed)."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        return Dist("fixed", float(_number(key, v, {"ge": 0, "seconds": True}, False)))
    if not isinstance(v, dict):
        raise ScenarioError(
            key,
            f'expected a distribution table like {{dist = "exponential", mean = 3.0}}'
            f" or a number of seconds, got {_describe(v)}",
        )
    kind = v.get("dist")
    if kind not in KINDS:
        raise ScenarioError(
            f"{key}.dist", f"expected one of {', '.join(KINDS)}, got {_describe(kind)}"
        )
    allowed = {
        "exponential": ("mean",),
        "fixed": ("mean",),
        "lognormal": ("mean", "sd"),
        "uniform": ("low", "high"),
    }[kind]
    for k in v:
        if k != "dist" and k not in allowed:
            raise ScenarioError(
                f"{key}.{k}",
                f"unknown key for a {kind} distribution (it takes {', '.join(allowed)})",
            )
    for k in allowed:
        if k not in v:
            raise ScenarioError(
                f"{key}.{k}", f"missing (a {kind} distribution needs {', '.join(allowed)})"
            )
    nums = {
        k: _number(
            f"{key}.{k}",
            v[k],
            {"gt" if (k == "mean" and kind == "lognormal") else "ge": 0, "seconds": True},
            False,
        )
        for k in allowed
    }
    if kind == "uniform" and nums["high"] < nums["low"]:
        raise ScenarioError(
            f"{key}.high", f"expected a number >= low ({nums['low']:g}), got {nums['high']!r}"
        )
    return Dist(kind, **nums)


def build(cls: type, data: Any, key: str = "") -> Any:
    """An instance of dataclass `cls` from a TOML table, validated field by field."""
    if not isinstance(data, dict):
        raise ScenarioError(key, f"expected a table, got {_describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for k in data:
        if k not in fields:
            near = difflib.get_close_matches(k, list(fields), n=1)
            hint = (
                f" (did you mean {near[0]!r}?)" if near else f" (known keys: {', '.join(fields)})"
            )
            raise ScenarioError(f"{key}.{k}" if key else k, f"unknown key{hint}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            sub = f"{key}.{name}" if key else name
            kwargs[name] = _value(sub, data[name], hints[name], dict(f.metadata))
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field missing
        missing = [
            n
            for n, f in fields.items()
            if n not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ScenarioError(
                f"{key}.{missing[0]}" if key else missing[0], "missing (required)"
            ) from e
        raise


def _value(key: str, v: Any, tp: Any, meta: dict) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        return _value(key, v, inner[0], meta)
    if tp is bool:
        if not isinstance(v, bool):
            raise ScenarioError(key, f"expected true or false, got {_describe(v)}")
        return v
    if tp is int:
        return _number(key, v, meta, True)
    if tp is float:
        return _number(key, v, meta, False)
    if tp is str:
        if isinstance(v, dt.datetime | dt.date):
            v = v.isoformat()
        if not isinstance(v, str):
            raise ScenarioError(key, f"expected a string, got {_describe(v)}")
        if meta.get("choices") and v not in meta["choices"]:
            raise ScenarioError(key, f"expected one of {', '.join(meta['choices'])}, got {v!r}")
        return v
    if tp is Dist:
        return build_dist(key, v)
    if dataclasses.is_dataclass(tp):
        return build(tp, v, key)
    if origin is tuple:
        if not isinstance(v, list):
            raise ScenarioError(key, f"expected an array, got {_describe(v)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_value(f"{key}[{i}]", x, args[0], meta) for i, x in enumerate(v))
        if len(v) != len(args):
            raise ScenarioError(key, f"expected an array of {len(args)} values, got {len(v)}")
        return tuple(
            _value(f"{key}[{i}]", x, a, meta) for i, (x, a) in enumerate(zip(v, args, strict=True))
        )
    if origin is dict:
        if not isinstance(v, dict):
            raise ScenarioError(key, f"expected a table, got {_describe(v)}")
        return {str(k): _value(f'{key}."{k}"', x, args[1], meta) for k, x in v.items()}
    raise TypeError(f"unsupported config type {tp!r} at {key}")  # a bug in a config class


def to_plain(obj: Any) -> Any:
    """A config as plain TOML/JSON-ready data (dicts, lists, numbers, strings)."""
    if isinstance(obj, Dist):
        keys = {"uniform": ("low", "high"), "lognormal": ("mean", "sd")}.get(obj.dist, ("mean",))
        return {"dist": obj.dist, **{k: getattr(obj, k) for k in keys}}
    if dataclasses.is_dataclass(obj):
        return {
            f.name: to_plain(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if getattr(obj, f.name) is not None
        }
    if isinstance(obj, tuple | list):
        return [to_plain(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_plain(x) for k, x in obj.items()}
    return obj
