"""Typed config: TOML/JSON data -> frozen msgspec Structs, with errors that name the dotted key.

Every config of gaterush (scenarios, the stand-in's knobs, target profiles) is a tree of `Section`
structs. `decode` lets msgspec check types, bounds (`Meta(ge=..)`), choices (`Literal`) and unknown
keys, then turns its error into ours: `gate.lanes: expected an integer >= 1, got 0`. Sizes carry a
limit (`Meta(extra={"limit": MAX_LANES})`, liftable with GATERUSH_ALLOW_HUGE=1) and times (keys
ending in `_s` or `_min`) at most a year; both are checked after decoding, since the size limit is
read from the environment at the moment a config is read.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec

from traces.durations import Duration
from traces.limits import MAX_SECONDS, over_limit

__all__ = ["ConfigError", "KeyedError", "Section", "Value", "decode", "describe", "to_plain"]


class ConfigError(ValueError):
    """A config is invalid; the message starts with the dotted key (`gate.lanes: ...`)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


class KeyedError(ValueError):
    """Raised by a custom type's reader: `sub` is the key below the value (`.dist`), or ''."""

    def __init__(self, sub: str, message: str) -> None:
        super().__init__(message)
        self.sub = sub
        self.message = message


class Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A table of a config file: frozen, unknown keys refused."""


class Value:
    """An immutable value that a config reads from its own syntax (a Dist from its table, a latency
    from `exp:5ms`), not as a table of its fields: a plain class, since msgspec would read a
    dataclass as a table. Subclasses name their fields in `__slots__` and defaults in `DEFAULTS`."""

    __slots__ = ()
    DEFAULTS: tuple = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names = self.__slots__
        values = list(args) + list(self.DEFAULTS[len(args) :])
        for name, v in kwargs.items():
            values[names.index(name)] = v
        for name, v in zip(names, values, strict=True):
            object.__setattr__(self, name, v)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot set {name}")

    def _key(self) -> tuple:
        return tuple(getattr(self, n) for n in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        args = ", ".join(f"{n}={v!r}" for n, v in zip(self.__slots__, self._key(), strict=True))
        return f"{type(self).__name__}({args})"

    def __reduce__(self):  # pickled to sweep and what-if workers
        return (type(self), self._key())


Readers = dict[type, Callable[[Any], Any]]  # custom field types -> reader of the raw value


def describe(v: Any) -> str:
    """A value as an error message shows it."""
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, list):
        return "an array"
    return repr(v)


def decode(
    tp: type,
    data: Any,
    *,
    readers: Readers | None = None,
    error: type[ConfigError] = ConfigError,
    quote: bool = True,
) -> Any:
    """An instance of `tp` from plain data; `error(key, message)` naming the first thing wrong.

    `readers` read custom field types (a Dist from its table); `quote` writes a table's own keys
    as `targets."rpc:x"` (else `targets.rpc:x`).
    """
    hook = _hook(readers or {})
    try:
        value = msgspec.convert(data, tp, dec_hook=hook)
    except msgspec.ValidationError as e:
        key, message = _locate(tp, data, "", e, hook, quote)
        raise error(key, message) from None
    problem = _limits(value, "", quote)
    if problem:
        raise error(*problem)
    return value


def _hook(readers: Readers) -> Callable[[type, Any], Any]:
    def hook(tp: type, obj: Any) -> Any:
        for cls, read in readers.items():
            if isinstance(tp, type) and issubclass(tp, cls):
                return read(obj)
        if isinstance(tp, type) and issubclass(tp, Duration):
            try:
                return tp.parse(obj)
            except ValueError as e:
                raise KeyedError("", str(e)) from None
        raise NotImplementedError(f"no reader for {tp!r}")

    return hook


_PATH = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[\.\.\.\]")


def _join(key: str, name: str, quote: bool, table_key: bool = False) -> str:
    if table_key and quote:
        name = f'"{name}"'
    return f"{key}.{name}" if key else name


def _strip(tp: Any) -> tuple[Any, msgspec.Meta | None]:
    """(the type without Annotated and Optional, its Meta)."""
    meta = None
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            args = typing.get_args(tp)
            tp, metas = args[0], [m for m in args[1:] if isinstance(m, msgspec.Meta)]
            meta = metas[0] if metas else meta
        elif origin in (typing.Union, types.UnionType):
            inner = [a for a in typing.get_args(tp) if a not in (type(None), msgspec.UnsetType)]
            if len(inner) != 1:
                return tp, meta
            tp = inner[0]
        else:
            return tp, meta


@functools.lru_cache(maxsize=512)
def _fields(tp: type) -> dict[str, Any]:
    """The field types of a struct, annotations resolved (once per class)."""
    return typing.get_type_hints(tp, include_extras=True)


def _error(tp: Any, v: Any, hook) -> msgspec.ValidationError | None:
    try:
        msgspec.convert(v, tp, dec_hook=hook)
    except msgspec.ValidationError as e:
        return e
    return None


def _locate(tp: Any, data: Any, key: str, e: msgspec.ValidationError, hook, quote: bool):
    """(dotted key, message) of msgspec's error, walking its path through the type and the data."""
    text, _, path = str(e).rpartition(" - at `")
    path = path.rstrip("`").removeprefix("$")
    if not text:
        text, path = str(e), ""
    cur_tp, cur = tp, data
    for m in _PATH.finditer(path):
        stripped, _ = _strip(cur_tp)
        if m[1] is not None:  # a field of a struct
            name = m[1]
            cur_tp = _fields(stripped)[name]
            cur = cur.get(name) if isinstance(cur, dict) else None
            key = _join(key, name, quote)
        elif m[2] is not None:  # an element of an array
            i = int(m[2])
            args = typing.get_args(stripped)
            cur_tp = args[0] if len(args) == 2 and args[1] is Ellipsis else args[i]
            cur = cur[i] if isinstance(cur, list) and i < len(cur) else None
            key = f"{key}[{i}]"
        else:  # a value of a table: find which one (msgspec does not say)
            vt = typing.get_args(stripped)[1]
            for k, v in (cur or {}).items():
                inner = _error(vt, v, hook)
                if inner is not None:
                    return _locate(vt, v, _join(key, str(k), quote, True), inner, hook, quote)
            return key, text
    cause = e.__cause__
    if isinstance(cause, KeyedError):
        return key + cause.sub, cause.message
    bare, meta = _strip(cur_tp)
    unknown = re.match(r"Object contains unknown field `(.*)`", text)
    if unknown:
        names = list(_fields(bare)) if isinstance(bare, type) else []
        near = difflib.get_close_matches(unknown[1], names, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else f" (known keys: {', '.join(names)})"
        return _join(key, unknown[1], quote), f"unknown key{hint}"
    missing = re.match(r"Object missing required field `(.*)`", text)
    if missing:
        return _join(key, missing[1], quote), "missing (required)"
    got = describe(cur)
    if isinstance(cur, list) and typing.get_origin(bare) is tuple:
        got = f"{len(cur)}"  # an array of the wrong length
    return key, f"expected {_expected(bare, meta)}, got {got}"


def _bounds(meta: msgspec.Meta | None) -> str:
    if meta is None:
        return ""
    parts = [
        f"{op} {getattr(meta, k):g}"
        for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
        if getattr(meta, k) is not None
    ]
    return " " + " and ".join(parts) if parts else ""


def _expected(tp: Any, meta: msgspec.Meta | None) -> str:
    """What a value of this type must be, in words (`Meta(extra={"expected": ...})` says it)."""
    if meta is not None and meta.extra and "expected" in meta.extra:
        return meta.extra["expected"]
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer" + _bounds(meta)
    if tp is float:
        return "a number" + _bounds(meta)
    if tp is str:
        return "a non-empty string" if meta is not None and meta.min_length else "a string"
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return "an array"
        return f"an array of {len(args)} values"
    if origin in (list, frozenset, set):
        return "an array"
    if origin is dict or (isinstance(tp, type) and issubclass(tp, msgspec.Struct)):
        return "a table"
    return getattr(tp, "__name__", str(tp))


def _limits(obj: Any, key: str, quote: bool) -> tuple[str, str] | None:
    """(key, why) of the first number that is not finite, over its limit, or a time over a year."""
    if not isinstance(obj, msgspec.Struct):
        return None
    hints = _fields(type(obj))
    for name in obj.__struct_fields__:
        sub = _join(key, name, quote)
        problem = _check(getattr(obj, name), hints[name], sub, name, quote)
        if problem:
            return problem
    return None


def _check(v: Any, tp: Any, key: str, name: str, quote: bool) -> tuple[str, str] | None:
    bare, meta = _strip(tp)
    if isinstance(v, msgspec.Struct):
        return _limits(v, key, quote)
    if isinstance(v, dict):
        vt = typing.get_args(bare)[1] if typing.get_args(bare) else Any
        for k, x in v.items():
            problem = _check(x, vt, _join(key, str(k), quote, True), name, quote)
            if problem:
                return problem
        return None
    if isinstance(v, tuple):
        args = typing.get_args(bare)
        for i, x in enumerate(v):
            et = args[0] if len(args) == 2 and args[1] is Ellipsis else args[i]
            if meta is not None and typing.get_origin(et) is not Annotated:
                et = Annotated[et, meta]
            problem = _check(x, et, f"{key}[{i}]", name, quote)
            if problem:
                return problem
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return key, f"expected a finite number, got {v!r}"
    extra = (meta.extra or {}) if meta is not None else {}
    if extra.get("limit") is not None:
        problem = over_limit(v, extra["limit"])
    elif name.endswith("_s") or extra.get("seconds"):
        problem = over_limit(v, MAX_SECONDS, size=False)
    elif name.endswith("_min"):
        problem = over_limit(v, MAX_SECONDS / 60, size=False)
    else:
        problem = None
    return (key, problem) if problem else None


def to_plain(obj: Any, encoders: dict[type, Callable[[Any], Any]] | None = None) -> Any:
    """A config as plain TOML/JSON-ready data; None values are left out."""
    encoders = encoders or {}
    for cls, enc in encoders.items():
        if isinstance(obj, cls):
            return enc(obj)
    if isinstance(obj, msgspec.Struct):
        out = {}
        for name in obj.__struct_fields__:
            v = getattr(obj, name)
            if v is not None:
                out[name] = to_plain(v, encoders)
        return out
    if isinstance(obj, tuple | list | frozenset):
        return [to_plain(x, encoders) for x in obj]
    if isinstance(obj, dict):
        return {k: to_plain(x, encoders) for k, x in obj.items()}
    return obj


# bounds shared by many fields
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]
Weights = tuple[NonNegative, ...]  # relative weights of 1, 2, 3, ... (or of kinds)
