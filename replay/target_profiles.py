"""Target profiles: map each trace target to a path and argument names on a real project.

A profile is TOML; every table under ``[targets]`` is optional and overrides the built-in default::

    [targets."rpc:scan_ticket_atomic"]
    path = "/rest/v1/rpc/scan_ticket_atomic"   # default: /rest/v1/rpc/<name>
    method = "POST"                            # rpc default POST, rest GET, fn POST
    arg_prefix = "p_"                          # payload key k -> argument "p_k" (rpc default "p_")
    args = { gate = "p_gate_name" }            # explicit renames win over the prefix
    drop = ["load"]                            # payload keys never sent (default ["load"])
    outcome = "outcome"                        # response JSON key holding the outcome

    [targets."rest:events"]
    path = "/rest/v1/events"                   # default: /rest/v1/<name>

    [targets."fn:stripe-webhook"]
    path = "/functions/v1/stripe-webhook"      # default: /functions/v1/<name>
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, UnsetType

from traces import config
from traces.event import target_kind


@dataclass(frozen=True, slots=True, eq=False)  # identity hash: arg_name is memoised per spec
class TargetSpec:
    """How one target is called: path, HTTP method, and how payload keys become arguments."""

    path: str
    method: str
    arg_prefix: str = ""
    args: Mapping[str, str] = field(default_factory=dict)
    drop: frozenset[str] = frozenset({"load"})
    outcome: str = "outcome"

    def arg_name(self, key: str) -> str:
        """The argument name a payload key is sent as."""
        return self.arg_names[key]

    @property
    def arg_names(self) -> Mapping[str, str]:
        """payload key -> argument name, for any key (a dict filled as keys come: the hot path's
        look-up is a plain dict's)."""
        return _arg_names(self)


class _ArgNames(dict):
    __slots__ = ("spec",)

    def __init__(self, spec: TargetSpec) -> None:
        super().__init__()
        self.spec = spec

    def __missing__(self, key: str) -> str:
        spec = self.spec
        name = spec.args.get(key)
        if name is None:
            name = (
                spec.arg_prefix + key
                if spec.arg_prefix and not key.startswith(spec.arg_prefix)
                else key
            )
        if len(self) < 4096:  # a trace with ever-new keys does not grow it without end
            self[key] = name
        return name


@lru_cache(maxsize=256)
def _arg_names(spec: TargetSpec) -> _ArgNames:
    return _ArgNames(spec)


@lru_cache(maxsize=256)
def default_spec(target: str) -> TargetSpec:
    """The built-in spec of a target (Supabase's conventions)."""
    kind = target_kind(target)
    name = target.partition(":")[2]
    if kind == "rpc":
        return TargetSpec(path=f"/rest/v1/rpc/{name}", method="POST", arg_prefix="p_")
    if kind == "rest":
        return TargetSpec(path=f"/rest/v1/{name}", method="GET")
    if kind == "fn":
        return TargetSpec(path=f"/functions/v1/{name}", method="POST")
    if kind == "realtime":
        return TargetSpec(path="/realtime/v1/websocket", method="GET")
    # stripe:<resource>.<action>: the builder knows the API paths
    return TargetSpec(path="/v1", method="POST")


@dataclass(frozen=True, slots=True)
class Profile:
    """Target name -> TargetSpec overrides; targets not listed use default_spec."""

    targets: Mapping[str, TargetSpec] = field(default_factory=dict)

    def spec(self, target: str) -> TargetSpec:
        """The spec for a target (its override or the default)."""
        s = self.targets.get(target)
        return s if s is not None else default_spec(target)


class ProfileError(ValueError):
    """A profile is invalid: the message names the file and key."""


NonEmpty = Annotated[str, Meta(min_length=1)]


class TargetTable(config.Section):
    """A `[targets."<target>"]` table: what it overrides of the target's default spec."""

    path: Annotated[str, Meta(pattern="^/", extra={"expected": "a string starting with '/'"})] | (
        UnsetType
    ) = UNSET
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] | UnsetType = UNSET
    arg_prefix: str | UnsetType = UNSET
    args: dict[str, NonEmpty] = {}  # payload key = argument name
    drop: list[str] | UnsetType = UNSET
    outcome: NonEmpty | UnsetType = UNSET


class ProfileFile(config.Section):
    """A target profile file."""

    targets: dict[str, TargetTable] = {}


def profile_from_dict(d: dict[str, Any], where: str = "profile") -> Profile:
    """Validate a parsed profile; errors name the key (``targets."rpc:x".args: ...``)."""
    unknown = set(d) - {"targets"}
    if unknown:
        raise ProfileError(
            f'{where}: unknown key {sorted(unknown)[0]!r} (expected [targets."<target>"] tables)'
        )
    bases = {}
    for name in d.get("targets", {}) if isinstance(d.get("targets"), dict) else ():
        try:
            bases[name] = default_spec(name)
        except ValueError as e:
            raise ProfileError(f'{where}: targets."{name}": {e}') from None
    try:
        parsed = config.decode(ProfileFile, d)
    except config.ConfigError as e:
        raise ProfileError(f"{where}: {e}") from None
    out: dict[str, TargetSpec] = {}
    for name, t in parsed.targets.items():
        base = bases[name]
        out[name] = TargetSpec(
            base.path if t.path is UNSET else t.path,
            base.method if t.method is UNSET else t.method,
            base.arg_prefix if t.arg_prefix is UNSET else t.arg_prefix,
            dict(t.args),
            base.drop if t.drop is UNSET else frozenset(t.drop),
            base.outcome if t.outcome is UNSET else t.outcome,
        )
    return Profile(out)


def load_profile(path: str | Path | None) -> Profile:
    """Read and validate a profile TOML file (None: the built-in defaults)."""
    if path is None:
        return Profile()
    p = Path(path)
    try:
        d = tomllib.loads(p.read_text())
    except OSError as e:
        raise ProfileError(f"{p}: cannot read profile: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ProfileError(f"{p}: not a text file ({e.reason} at byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{p}: not valid TOML: {e}") from None
    return profile_from_dict(d, str(p))
