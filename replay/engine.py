"""The replay engine: a trace, a target and options in; a result log and run statistics out.

The local stand-in runs in this process (a thread), so with ``--target local`` even one worker
is a separate process: the stand-in's work must not hold up the sender (one GIL each).

``run_replay`` checks the keys (a live Stripe key stops everything before the first request),
starts the local stand-in if asked, opens the trace and the result log, and runs the scheduler:
in this process for one worker and a remote target; else as shards (replay.shards), on local
processes (replay.processes) or on a Dask cluster with ``--scheduler`` (replay.cluster). The shards
start at one agreed instant (their clocks measured first) and stream their rows here, which alone
writes the result log and the progress line, or each writes its own file under ``--out DIR/``.
SIGTERM and SIGINT stop every shard; their rows are kept and the run ends with ReplayStopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import resource
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import pyarrow as pa

from judge.resultlog import ResultHeader, ResultWriter, RowCounts, summarize
from judge.rows import RowBuffer
from replay.builders import STRIPE_API, BuildContext, Credentials, public_url
from replay.progress import Progress
from replay.safety import (
    check_keys,
    default_rate_caps,
    format_plan,
    is_loopback,
    make_plan,
    merge_caps,
)
from replay.scheduler import ScheduleOptions, Stats, shard_of
from replay.shards import (  # noqa: F401 - ReplayError is part of this module's API
    START_LEAD_S,
    Outcome,
    ReplayError,
    ShardPlan,
    drive,
    install_uvloop,
    lost_line,
    quiet_gc,
    run_events,
    shard_events,
    trace_file,
)
from replay.target_profiles import load_profile
from traces.event import TARGET_WEBHOOK
from traces.io import open_reader

now = time.monotonic


class LocalTarget(Protocol):
    """What start_local's context manager yields (staging's stand-in)."""

    url: str
    anon_key: str
    webhook_secret: str
    stripe_key: str


StartLocal = Callable[..., contextlib.AbstractContextManager[LocalTarget]]


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


def is_out_dir(out: str) -> bool:
    """Whether --out names a directory (each shard writes its own result file there)."""
    return out.endswith(("/", os.sep)) or Path(out).is_dir()


@dataclass(slots=True)
class ReplayResult:
    """What a finished replay produced."""

    header: ResultHeader
    out: Path  # the result log, or the directory of shard files
    rows: int
    sent: int
    errors: int
    dropped: int
    secrets: list[str]  # the secret values in force (to check outputs); never print them
    clocks: list[dict[str, Any]] = field(default_factory=list)  # per shard (replay.clocksync)
    lost: list[dict[str, Any]] = field(default_factory=list)  # shards whose worker died
    # the rows, read on demand from what was written (None: shard files under --out DIR/), so the
    # judge needs no read of the Parquet file back
    table: Callable[[], pa.Table] | None = None


class ReplayStopped(ReplayError):
    """SIGTERM or SIGINT stopped the replay; every shard was stopped and the rows kept."""

    def __init__(self, signum: int, result: ReplayResult) -> None:
        self.signum = signum
        self.result = result
        super().__init__(
            f"stopped by {signal.Signals(signum).name}: {result.rows} rows kept in {result.out}"
        )


def keys_from_env(env: Mapping[str, str]) -> Credentials:
    """The keys from SUPABASE_ANON_KEY, STRIPE_TEST_SK, STRIPE_WEBHOOK_SECRET and (for recorded
    service-role requests only) SUPABASE_SERVICE_ROLE_KEY."""
    return Credentials(
        anon_key=env.get("SUPABASE_ANON_KEY", ""),
        stripe_key=env.get("STRIPE_TEST_SK", ""),
        webhook_secret=env.get("STRIPE_WEBHOOK_SECRET", ""),
        service_key=env.get("SUPABASE_SERVICE_ROLE_KEY", ""),
    )


Trailer = Callable[[], dict[str, Any]]  # what the result trailer keeps that is known at the end


def _no_trailer() -> dict[str, Any]:
    return {}


def _sender_cost(cpu_s: float, wall_s: float, processes: int) -> dict[str, Any]:
    """The result trailer's `sender` (judge.fidelity reads the sender's CPU share from it)."""
    return {"cpu_s": round(cpu_s, 3), "wall_s": round(wall_s, 3), "processes": processes}


def new_run_id() -> str:
    """A fresh run id: sortable by time, unique enough to clean up after."""
    return time.strftime("gr-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)


def _origins(ctx: BuildContext, targets: Mapping[str, int]) -> dict[str, int]:
    origins: dict[str, int] = {}
    for t in targets:
        kind = t.partition(":")[0]
        if kind in ("rpc", "rest", "fn"):
            origins.setdefault(ctx.supabase[0], 0)
        elif kind == "stripe":
            origins.setdefault(ctx.stripe[0], 0)
    return origins


def _run_here(cfg: ReplayConfig, ctx: BuildContext, opts: ScheduleOptions, origins: dict[str, int],
              hdr: dict[str, Any], prog: Progress, trailer: Trailer = _no_trailer) -> tuple[ResultWriter, Stats]:  # fmt: skip
    install_uvloop()
    cpu0 = time.process_time()
    box: dict[str, Any] = {}

    def flush(_: Stats | None = None) -> None:
        # every FLUSH_S (the run's ticker) or FLUSH_ROWS rows: one batch to the log, its counts
        batch = rows.take()
        if batch is not None:
            box["w"].write_batch(batch)
            prog.add(summarize(batch))
        box["w"].flush()
        prog.tick()

    rows = RowBuffer(full=flush)

    async def get_start() -> float:
        start = now() + START_LEAD_S
        start_unix_us = time.time_ns() // 1000 + round(START_LEAD_S * 1e6)
        box["w"] = ResultWriter(cfg.out, ResultHeader(start_unix_us=start_unix_us, **hdr))
        box["start"] = start
        return start

    async def main() -> Stats:
        return await run_events(ctx, opts, cfg, origins, shard_events(cfg.trace, 0, 1), 0, 1,
                                rows.append, get_start, flush)  # fmt: skip

    try:
        with quiet_gc():
            stats = asyncio.run(main())
    finally:
        if "w" in box:
            wall = now() - box["start"]
            cost = _sender_cost(time.process_time() - cpu0, wall, 1)
            try:
                flush()
            finally:
                box["w"].close(end_us=round(wall * 1e6), sender=cost, **trailer())
    return box["w"], stats


@contextlib.contextmanager
def _stop_signals() -> Iterator[Callable[[], int | None]]:
    """While sharded shards run, SIGTERM/SIGINT ask for a stop; yields what stopped us (or None)."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in old:
        signal.signal(sig, lambda signum, _frame: got.append(signum))
    try:
        yield lambda: got[0] if got else None
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def events_per_shard(trace: str, shards: int) -> dict[int, int]:
    """How many events each shard sends (realtime events count in every shard)."""
    counts = dict.fromkeys(range(shards), 0)
    with open_reader(trace) as r:
        for ev in r:
            if ev.target is None:
                continue
            if ev.target.startswith("realtime:"):
                for k in counts:
                    counts[k] += 1
            else:
                counts[shard_of(ev.actor, shards)] += 1
    return counts


def _run_sharded(cfg: ReplayConfig, ctx: BuildContext, keys: Credentials, opts: ScheduleOptions,
                 origins: dict[str, int], hdr: dict[str, Any], prog: Progress, local_trace: str,
                 stripe_mode: str, required_env: tuple[str, ...],
                 trailer: Trailer = _no_trailer) -> tuple[Any, Outcome, list[dict[str, Any]], int | None]:  # fmt: skip
    """Run the shards (processes, or Dask tasks) and write what they send: (writer, outcome, lost, signal)."""
    n = cfg.workers
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out_dir = cfg.out if is_out_dir(cfg.out) else None
    blank = dataclasses.replace(ctx, keys=Credentials())  # the plan never holds a key
    shard_cfg = cfg if cfg.scheduler else dataclasses.replace(cfg, trace=local_trace)
    plans = [ShardPlan(k, n, shard_cfg, blank, opts, origins, out_dir, hdr, stripe_mode, required_env)
             for k in range(n)]  # fmt: skip
    client = None
    if cfg.scheduler:
        from replay.cluster import DaskShards  # noqa: PLC0415 - Dask is optional
        from traces.cluster import dask_client  # noqa: PLC0415

        client = dask_client(cfg.scheduler)
        try:
            ss: Any = DaskShards(client, plans, ctx.run_id, cfg.trace)
        except BaseException:
            client.close()
            raise
    else:
        from replay.processes import ProcessShards  # noqa: PLC0415

        ss = ProcessShards(plans, keys)
    box: dict[str, Any] = {}

    def on_start(start_us: int, clocks: list[dict[str, Any]]) -> None:
        box["t0"] = now()
        if out_dir is None:
            box["w"] = ResultWriter(
                cfg.out, ResultHeader(start_unix_us=start_us, clocks=clocks, **hdr)
            )

    def on_rows(shard: int, data: bytes | None, counts: RowCounts) -> None:
        if data is not None:  # else the shard wrote the batch to its own file
            box["w"].write_message(data, counts.rows)
        prog.add(counts, shard)

    def tick() -> None:
        if "w" in box:
            box["w"].flush()
        prog.tick()

    outcome: Outcome | None = None
    lost: list[dict[str, Any]] = []
    try:
        with _stop_signals() as stopped_by:
            stopping = lambda: stopped_by() is not None  # noqa: E731
            outcome = drive(ss, n, on_start, on_rows, tick, stopping)
            signum = stopped_by()
        if any(s.lost for s in outcome.shards.values()):
            lost = outcome.lost(events_per_shard(local_trace, n))
    finally:
        ss.close()
        if client is not None:
            client.close()
        if "w" in box:
            wall = now() - box["t0"]
            cost = None
            if cfg.scheduler is None:  # the shards were our children, now waited for
                c = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = c.ru_utime + c.ru_stime - children0.ru_utime - children0.ru_stime
                cost = _sender_cost(cpu, wall, n)
            box["w"].close(end_us=round(wall * 1e6), lost=lost, sender=cost, **trailer())
    return box.get("w"), outcome, lost, signum


def run_replay(cfg: ReplayConfig, env: Mapping[str, str] | None = None, start_local: StartLocal | None = None,
               progress: IO[str] | None = sys.stderr, dry_run_out: IO[str] | None = None,
               thresholds: Mapping[str, list[str]] | None = None) -> ReplayResult | None:  # fmt: skip
    """Replay a trace at a target, writing the result log; None for a dry run (the plan is printed).

    `thresholds` (k6 mapping) replace the trace's in the result header. Raises SafetyError (live
    keys, caps) and ReplayError/ValueError/TraceError for bad input, all before anything is sent;
    ReplayStopped when SIGTERM/SIGINT stopped a sharded run (its rows are kept).
    """
    env = os.environ if env is None else env
    keys = keys_from_env(env)
    check_keys(keys, cfg.stripe, env)
    if cfg.workers < 1:
        raise ValueError(f"--workers: expected an integer >= 1, got {cfg.workers}")
    if cfg.stripe not in ("standin", "real") and not cfg.stripe.startswith(("http://", "https://")):
        raise ValueError(
            f"--stripe: expected standin, real or an http(s):// URL, got {cfg.stripe!r}"
        )
    if cfg.target == "env":
        if not env.get("SUPABASE_URL"):
            raise ValueError("--target env: SUPABASE_URL is not set")
        cfg = dataclasses.replace(cfg, target=env["SUPABASE_URL"])
    if cfg.target != "local" and not cfg.target.startswith(("http://", "https://")):
        raise ValueError(
            f"--target: expected local, env ($SUPABASE_URL) or an http(s):// URL, got {cfg.target!r}"
        )
    local = cfg.target == "local"
    if cfg.scheduler is not None:
        from traces.cluster import scheduler_address  # noqa: PLC0415

        scheduler_address(cfg.scheduler)  # a malformed address is a usage error before any work
        if local:
            raise ValueError(
                "--scheduler: the local stand-in runs in this process, which the cluster's workers "
                "cannot reach; give --target URL (a `gaterush staging serve` they can reach, or a project)"
            )
    profile = load_profile(cfg.profile)
    with contextlib.ExitStack() as stack:
        local_trace = stack.enter_context(trace_file(cfg.trace, None))
        return _replay(cfg, env, keys, local, local_trace, profile, start_local, progress,
                       dry_run_out, thresholds, stack)  # fmt: skip
    return None  # pragma: no cover


def _replay(cfg: ReplayConfig, env: Mapping[str, str], keys: Credentials, local: bool, local_trace: str, profile: Any,
            start_local: StartLocal | None, progress: IO[str] | None, dry_run_out: IO[str] | None,
            thresholds: Mapping[str, list[str]] | None, stack: contextlib.ExitStack) -> ReplayResult | None:  # fmt: skip
    with open_reader(local_trace) as r:
        theader = r.header
    targets = dict(theader.targets)
    stripe_mode = cfg.stripe
    loopback = local or is_loopback(cfg.target)
    caps = merge_caps(default_rate_caps(targets, loopback, stripe_mode), cfg.rate_caps, stripe_mode)
    opts = ScheduleOptions(
        speed=cfg.speed,
        max_in_flight=cfg.max_in_flight,
        rate_caps={t: c / cfg.workers for t, c in caps.items()},  # each shard its share
        drain_s=cfg.timeout + 1.0,  # the transport's own timeout fires first
        pacer=cfg.pacer,
    )
    if dry_run_out is not None:
        with open_reader(local_trace) as r:
            plan = make_plan(r, cfg.speed)
        dry_run_out.write(
            format_plan(
                plan, "local stand-in" if local else public_url(cfg.target), stripe_mode, caps
            )
            + "\n"
        )
        return None
    required_env: tuple[str, ...] = ()
    if not local:
        required_env = ("SUPABASE_ANON_KEY",) + (
            ("STRIPE_WEBHOOK_SECRET",) if TARGET_WEBHOOK in targets else ()
        )
        # on a cluster each worker checks its own environment (the keys never travel in a task)
        if not keys.anon_key and cfg.scheduler is None:
            raise ValueError(
                "--target URL: set SUPABASE_ANON_KEY (the project's anon or publishable key)"
            )
        if TARGET_WEBHOOK in targets and not keys.webhook_secret and cfg.scheduler is None:
            raise ValueError(
                f"the trace sends Stripe webhooks ({TARGET_WEBHOOK}): set STRIPE_WEBHOOK_SECRET, "
                "the endpoint's whsec_ secret, so they are signed at send time"
            )
    if not local and stripe_mode == "standin" and any(t.startswith("stripe:") for t in targets):
        base = env.get("STRIPE_API_BASE")
        if not base:
            raise ValueError(
                "the trace calls the Stripe API: with --target URL give --stripe URL (a stand-in's Stripe API), "
                "set STRIPE_API_BASE, or opt in to Stripe test mode with --stripe real"
            )
        stripe_mode = base
    if local and start_local is None:
        raise ReplayError(
            "--target local needs the stand-in, which this build does not provide; give --target URL"
        )
    if local:
        standin = stack.enter_context(start_local(inventory=theader.inventory))  # type: ignore[misc]
        supabase_url = standin.url
        keys = Credentials(
            anon_key=standin.anon_key,
            # real Stripe test mode keeps the user's key; the stand-in's Stripe subset takes its own
            stripe_key=keys.stripe_key if stripe_mode == "real" else standin.stripe_key,
            webhook_secret=standin.webhook_secret,
            service_key=standin.service_key,  # for recorded service-role requests only
        )
        stripe_url = (
            standin.url
            if stripe_mode == "standin"
            else (STRIPE_API if stripe_mode == "real" else stripe_mode)
        )
    else:
        supabase_url = cfg.target
        stripe_url = STRIPE_API if stripe_mode == "real" else stripe_mode
    run_id = cfg.run_id or new_run_id()
    ctx = BuildContext(
        supabase_url=supabase_url,
        run_id=run_id,
        keys=keys,
        stripe_url=stripe_url,
        profile=profile,
    )
    origins = _origins(ctx, targets)
    scenario = theader.scenario or {}
    expected = sum(targets.values())
    last_t_us = _last_t_us(local_trace) or 0
    duration_s = last_t_us / 1e6 / cfg.speed
    prog = Progress(expected, duration_s, progress if cfg.progress else None)
    hdr = dict(
        run_id=run_id,
        target_url=public_url(supabase_url),
        trace_path=str(cfg.trace),
        speed=cfg.speed,
        scenario=scenario.get("name"),
        thresholds={
            k: list(v)
            for k, v in (
                thresholds if thresholds is not None else scenario.get("thresholds") or {}
            ).items()
        },
        expected_requests=expected,
        workers=cfg.workers,
        max_in_flight=cfg.max_in_flight,
        stripe="real"
        if stripe_mode == "real"
        else ("standin" if stripe_mode == "standin" else public_url(stripe_mode)),
        trace_duration_us=last_t_us,
    )
    trailer = functools.partial(_standin_end, standin) if local else _no_trailer
    if cfg.workers == 1 and not local and cfg.scheduler is None and not is_out_dir(cfg.out):
        writer, stats = _run_here(
            dataclasses.replace(cfg, trace=local_trace), ctx, opts, origins, hdr, prog, trailer
        )
        prog.tick(final=True)
        return ReplayResult(writer.header, Path(cfg.out), writer.rows, stats.sent, stats.errors,
                            stats.dropped, keys.values(), table=writer.table)  # fmt: skip
    writer, outcome, lost, signum = _run_sharded(cfg, ctx, keys, opts, origins, hdr, prog, local_trace,
                                                 stripe_mode, required_env, trailer)  # fmt: skip
    prog.tick(final=True)
    header = writer.header if writer is not None else ResultHeader(start_unix_us=outcome.start_unix_us,
                                                                   clocks=outcome.clocks, **hdr)  # fmt: skip
    rows = writer.rows if writer is not None else sum(s.rows for s in outcome.shards.values())
    result = ReplayResult(header, Path(cfg.out), rows, outcome.sent, outcome.errors, outcome.dropped,
                          keys.values(), outcome.clocks, lost, writer.table if writer is not None else None)  # fmt: skip
    if lost and progress is not None:
        progress.write(f"replay: {lost_line(lost)}\n")
    if signum is not None:
        raise ReplayStopped(signum, result)
    return result


def _standin_end(standin: Any) -> dict[str, Any]:
    """The local stand-in's end state, kept in the result trailer for `verify --target local`."""
    try:
        return {"end_state": standin.end_state()}
    except (OSError, ValueError) as e:  # the run's rows matter more than this: say so, keep them
        sys.stderr.write(f"replay: the stand-in's end state could not be read ({e})\n")
        return {}


def _last_t_us(trace: str) -> int | None:
    """The trace's last t_us when the file says so cheaply (Parquet column statistics), else None."""
    if not trace.endswith(".parquet"):
        return None
    try:
        import pyarrow.parquet as pq

        md = pq.ParquetFile(trace).metadata
        col = md.schema.names.index("t_us")
        maxima = [md.row_group(i).column(col).statistics for i in range(md.num_row_groups)]
        return (
            max(int(st.max) for st in maxima if st is not None and st.has_min_max)
            if maxima
            else None
        )
    except (ValueError, OSError, TypeError):
        return None
