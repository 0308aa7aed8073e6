"""A replay's plan: everything decided before the first request, in one function.

``resolve(config, environment)`` takes the options (ReplayConfig) and what the process gives
(Environment: its variables, a readable path to the trace, a fresh run id, whether a local
stand-in can be started) and decides the rest: the target (a URL, or the local stand-in), the
keys and their safety checks (replay.safety), where Stripe calls go, the target profile, the run
id, the rate caps and each shard's share of them, the shards and where their rows go, and what the
result header will say. It reads the trace's header (duration, peaks, targets, inventory: the one
open of the trace for them) and the profile, and nothing else: no socket, no file written, no
process started. The same config and environment give the same plan, and a live Stripe key or an
impossible option is refused here, before anything is sent (SafetyError, ValueError, ReplayError).

replay.engine.run carries a plan out; replay.engine.judge judges what it wrote.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from replay.builders import STRIPE_API, BuildContext, Credentials, public_url
from replay.safety import check_keys, default_rate_caps, is_loopback, keys_from_env, merge_caps
from replay.scheduler import ScheduleOptions
from replay.shards import ReplayError, trace_file
from replay.target_profiles import Profile, load_profile
from traces.event import TARGET_WEBHOOK
from traces.header import TraceHeader
from traces.io import open_reader


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """Everything a replay needs besides the keys (which come from the environment only)."""

    trace: str
    out: str
    target: str = "local"  # local | env ($SUPABASE_URL) | http(s)://... (a Supabase project URL)
    speed: float = 1.0
    max_in_flight: int = 10_000
    workers: int = 1
    stripe: str = "standin"  # standin | real | http(s)://... (a Stripe API stand-in)
    profile: str | None = None
    rate_caps: Mapping[str, float] = field(default_factory=dict)
    timeout: float = 60.0
    transport: str = "raw"
    run_id: str | None = None
    warm: int = 8  # keep-alive connections opened per origin before the start
    connections: int | None = None  # cap on connections per origin (None: as many as in flight)
    progress: bool = True
    scheduler: str | None = None  # dask://HOST:PORT: the shards run on that Dask cluster
    pacer: str = (
        "auto"  # timerfd (sleeps to each deadline), loop (spins a core), auto: timerfd if any
    )


@dataclass(frozen=True, slots=True)
class Environment:
    """What a plan depends on besides its config. repr() never shows the variables' values."""

    variables: Mapping[str, str] = field(repr=False)  # the process's (keys, SUPABASE_URL, ...)
    trace: str  # a readable local path to the trace (a copy of an fsspec URL's)
    run_id: str  # a fresh run id, used when the config names none (new_run_id)
    standin: bool = True  # this build can start the local stand-in (--target local)


def new_run_id() -> str:
    """A fresh run id: sortable by time, unique enough to clean up after."""
    return time.strftime("gr-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)


def is_out_dir(out: str) -> bool:
    """Whether --out names a directory (each shard writes its own result file there)."""
    return out.endswith(("/", os.sep)) or Path(out).is_dir()


@dataclass(frozen=True, slots=True)
class Plan:
    """What a replay will do, decided before anything is sent. repr() shows no key and no URL's
    credentials (the keys are Credentials, whose repr names only which are set)."""

    cfg: ReplayConfig  # --target resolved (env: $SUPABASE_URL); trace as the user named it
    trace: str  # the local path the events are read from
    header: TraceHeader  # the trace's (targets, inventory, duration, peaks, expected end state)
    keys: Credentials  # from the environment; a local run sends the stand-in's own instead
    local: bool  # start the local stand-in, and send to it
    supabase_url: str | None  # None: the local stand-in's
    stripe_url: str | None  # None: the local stand-in's
    stripe_mode: str  # standin | real | a Stripe API stand-in's URL
    profile: Profile
    run_id: str
    caps: Mapping[str, float]  # requests/s per target, for the whole run
    opts: ScheduleOptions  # each shard's pacing (its share of the caps)
    required_env: tuple[str, ...]  # variables each shard's host must set (a remote target)
    sharded: bool  # shards (processes, or Dask tasks) rather than this process alone
    thresholds: Mapping[str, list[str]]  # k6 mapping for the result header

    def __repr__(self) -> str:
        target = "local stand-in" if self.local else public_url(self.supabase_url or "")
        return (
            f"Plan(trace={self.cfg.trace!r}, target={target!r}, stripe={self.stripe_shown!r}, "
            f"run_id={self.run_id!r}, workers={self.cfg.workers}, sharded={self.sharded}, "
            f"caps={dict(self.caps)!r}, keys={self.keys!r}, out={self.cfg.out!r})"
        )

    @property
    def targets(self) -> dict[str, int]:
        """Events per target (what the run sends)."""
        return dict(self.header.targets)

    @property
    def expected_requests(self) -> int:
        """Requests (and subscriptions) the run will attempt."""
        return sum(self.header.targets.values())

    @property
    def duration_s(self) -> float:
        """How long the schedule lasts at the replay's speed (0 when the trace does not say)."""
        return (self.header.duration_us or 0) / 1e6 / self.cfg.speed

    @property
    def stripe_shown(self) -> str:
        """Where Stripe calls go, safe to print: standin, real or a public URL."""
        if self.stripe_mode in ("standin", "real"):
            return self.stripe_mode
        return public_url(self.stripe_mode)

    def context(self, standin: Any = None) -> BuildContext:
        """The builders' context: this plan's URLs and keys, or the started stand-in's."""
        if standin is None:
            assert self.supabase_url is not None and self.stripe_url is not None
            return BuildContext(self.supabase_url, self.run_id, self.keys, self.stripe_url,
                                self.profile)  # fmt: skip
        keys = Credentials(
            anon_key=standin.anon_key,
            # real Stripe test mode keeps the user's key; the stand-in's Stripe subset takes its own
            stripe_key=self.keys.stripe_key if self.stripe_mode == "real" else standin.stripe_key,
            webhook_secret=standin.webhook_secret,
            service_key=standin.service_key,  # for recorded service-role requests only
        )
        stripe_url = self.stripe_url or standin.url
        return BuildContext(standin.url, self.run_id, keys, stripe_url, self.profile)

    def result_header(self, ctx: BuildContext) -> dict[str, Any]:
        """The result header's fields that the plan decides (judge.resultlog.ResultHeader)."""
        scenario = self.header.scenario or {}
        return dict(
            run_id=self.run_id,
            target_url=public_url(ctx.supabase_url),
            trace_path=str(self.cfg.trace),
            speed=self.cfg.speed,
            scenario=scenario.get("name"),
            thresholds={k: list(v) for k, v in self.thresholds.items()},
            expected_requests=self.expected_requests,
            workers=self.cfg.workers,
            max_in_flight=self.cfg.max_in_flight,
            stripe=self.stripe_shown,
            trace_duration_us=self.header.duration_us or 0,
        )


def origins(ctx: BuildContext, targets: Mapping[str, int]) -> dict[str, int]:
    """The origins the run connects to (warmed before the start), for the targets it sends."""
    out: dict[str, int] = {}
    for t in targets:
        kind = t.partition(":")[0]
        if kind in ("rpc", "rest", "fn"):
            out.setdefault(ctx.supabase[0], 0)
        elif kind == "stripe":
            out.setdefault(ctx.stripe[0], 0)
    return out


def read_header(trace: str) -> TraceHeader:
    """The trace's header: the one open of the trace before the run (TraceError if unreadable)."""
    with open_reader(trace) as r:
        return r.header


def _target(cfg: ReplayConfig, env: Mapping[str, str]) -> str:
    """--target checked with the other options: a URL, or local."""
    if cfg.workers < 1:
        raise ValueError(f"--workers: expected an integer >= 1, got {cfg.workers}")
    if cfg.stripe not in ("standin", "real") and not cfg.stripe.startswith(("http://", "https://")):
        raise ValueError(
            f"--stripe: expected standin, real or an http(s):// URL, got {cfg.stripe!r}"
        )
    target = cfg.target
    if target == "env":
        if not env.get("SUPABASE_URL"):
            raise ValueError("--target env: SUPABASE_URL is not set")
        target = env["SUPABASE_URL"]
    if target != "local" and not target.startswith(("http://", "https://")):
        raise ValueError(
            f"--target: expected local, env ($SUPABASE_URL) or an http(s):// URL, got {target!r}"
        )
    if cfg.scheduler is not None:
        from traces.cluster import scheduler_address  # noqa: PLC0415

        scheduler_address(cfg.scheduler)  # a malformed address is a usage error before any work
        if target == "local":
            raise ValueError(
                "--scheduler: the local stand-in runs in this process, which the cluster's workers "
                "cannot reach; give --target URL (a `gaterush staging serve` they can reach, or a project)"
            )
    return target


def _remote_keys(
    cfg: ReplayConfig, keys: Credentials, targets: Mapping[str, int]
) -> tuple[str, ...]:
    """The variables a remote target needs, checked here unless each Dask worker checks its own."""
    webhooks = TARGET_WEBHOOK in targets
    required = ("SUPABASE_ANON_KEY",) + (("STRIPE_WEBHOOK_SECRET",) if webhooks else ())
    if cfg.scheduler is None:  # on a cluster the keys never travel in a task
        if not keys.anon_key:
            raise ValueError(
                "--target URL: set SUPABASE_ANON_KEY (the project's anon or publishable key)"
            )
        if webhooks and not keys.webhook_secret:
            raise ValueError(
                f"the trace sends Stripe webhooks ({TARGET_WEBHOOK}): set STRIPE_WEBHOOK_SECRET, "
                "the endpoint's whsec_ secret, so they are signed at send time"
            )
    return required


def _stripe_mode(cfg: ReplayConfig, targets: Mapping[str, int], env: Mapping[str, str]) -> str:
    """Where a remote target's Stripe calls go: --stripe, or $STRIPE_API_BASE for standin."""
    if cfg.stripe != "standin" or not any(t.startswith("stripe:") for t in targets):
        return cfg.stripe
    base = env.get("STRIPE_API_BASE")
    if not base:
        raise ValueError(
            "the trace calls the Stripe API: with --target URL give --stripe URL (a stand-in's Stripe API), "
            "set STRIPE_API_BASE, or opt in to Stripe test mode with --stripe real"
        )
    return base


MAX_REPLAY_S = 30 * 86_400  # a replay planned to last longer is a mistyped --speed


def _check_length(duration_us: int | None, speed: float) -> None:
    """ValueError when the trace at this speed would take longer than MAX_REPLAY_S (--speed 1e-9
    instead of 1e9, say: the replay would otherwise wait, sending nothing, for ever)."""
    if not duration_us or not speed > 0:
        return  # a trace that does not say its length; a bad speed is ScheduleOptions' to refuse
    took = duration_us / 1e6 / speed
    if took > MAX_REPLAY_S:
        raise ValueError(
            f"--speed {speed:g}: the trace's {duration_us / 1e6:g} s would take {took:.3g} s "
            f"({took / 86_400:.3g} days) to replay, more than {MAX_REPLAY_S // 86_400} days"
        )


def resolve(
    cfg: ReplayConfig,
    environment: Environment,
    thresholds: Mapping[str, list[str]] | None = None,
    *,
    dry_run: bool = False,
) -> Plan:
    """The plan of a replay (see the module docstring); `thresholds` (k6 mapping) replace the
    trace's in the result header. A dry run sends nothing, so it needs neither keys for a remote
    target nor the stand-in. Raises SafetyError, ValueError, ReplayError, TraceError or
    ProfileError, naming what is wrong, before anything is sent."""
    env = environment.variables
    keys = keys_from_env(env)
    check_keys(keys, cfg.stripe, env)
    target = _target(cfg, env)
    local = target == "local"
    profile = load_profile(cfg.profile)
    header = read_header(environment.trace)
    _check_length(header.duration_us, cfg.speed)
    targets = dict(header.targets)
    caps = merge_caps(default_rate_caps(targets, local or is_loopback(target), cfg.stripe),
                      cfg.rate_caps, cfg.stripe)  # fmt: skip
    opts = ScheduleOptions(
        speed=cfg.speed,
        max_in_flight=cfg.max_in_flight,
        rate_caps={t: c / cfg.workers for t, c in caps.items()},  # each shard its share
        drain_s=cfg.timeout + 1.0,  # the transport's own timeout fires first
        pacer=cfg.pacer,
    )
    required_env: tuple[str, ...] = ()
    stripe_mode = cfg.stripe
    if not dry_run:
        if not local:
            required_env = _remote_keys(cfg, keys, targets)
            stripe_mode = _stripe_mode(cfg, targets, env)
        if local and not environment.standin:
            raise ReplayError(
                "--target local needs the stand-in, which this build does not provide; give --target URL"
            )
    stripe_url = STRIPE_API if stripe_mode == "real" else stripe_mode
    if local and stripe_mode == "standin":
        stripe_url = None  # the stand-in's own Stripe API subset
    cfg = dataclasses.replace(cfg, target=target)
    sharded = cfg.workers > 1 or local or cfg.scheduler is not None or is_out_dir(cfg.out)
    if thresholds is None:
        thresholds = (header.scenario or {}).get("thresholds") or {}
    return Plan(
        cfg=cfg,
        trace=environment.trace,
        header=header,
        keys=keys,
        local=local,
        supabase_url=None if local else target,
        stripe_url=stripe_url,
        stripe_mode=stripe_mode,
        profile=profile,
        run_id=cfg.run_id or environment.run_id,
        caps=caps,
        opts=opts,
        required_env=required_env,
        sharded=sharded,
        thresholds=thresholds,
    )


@contextlib.contextmanager
def environment(
    cfg: ReplayConfig, variables: Mapping[str, str] | None = None, standin: bool = True
) -> Iterator[Environment]:
    """This process's environment for a replay of `cfg.trace` (an fsspec URL's is copied here for
    the `with` block); `variables` default to os.environ."""
    with trace_file(cfg.trace, None) as local_trace:
        yield Environment(os.environ if variables is None else variables, local_trace,
                          new_run_id(), standin)  # fmt: skip
