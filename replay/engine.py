"""The replay engine: a plan (replay.plan) in; a result log and run statistics out; then judged.

One run path for every caller (`gaterush replay`, `gaterush demo`, the tests and benches):
``replay.plan.resolve`` decides everything before the first request (keys and their safety checks,
the target, caps, shards: a live Stripe key stops everything there), ``run`` carries the plan out,
``judge`` judges what it wrote (judge.report.judge_run); ``replay_and_judge`` is the three in turn.

The local stand-in runs in this process (a thread), so with ``--target local`` even one worker
is a separate process: the stand-in's work must not hold up the sender (one GIL each).

``run`` starts the local stand-in if asked and runs the scheduler: in this process for one worker
and a remote target; else as shards (replay.shards), on local processes (replay.processes) or on a
Dask cluster with ``--scheduler`` (replay.cluster). The shards start at one agreed instant (their
clocks measured first) and stream their rows here, which alone writes the result log and the
progress line, or each writes its own file under ``--out DIR/``. SIGTERM and SIGINT stop every
shard; their rows are kept and the run ends with ReplayStopped, also while the shards still start
(before the agreed start: the start is never given, and the result file or shard files are written
closed with no rows, as a stop after the start leaves them).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import pyarrow as pa

from judge import report
from judge.resultlog import ResultHeader, ResultWriter, RowCounts, shard_file, summarize
from judge.rows import RowBuffer
from judge.thresholds import Threshold
from replay.builders import BuildContext, Credentials, public_url
from replay.plan import (  # noqa: F401 - ReplayConfig, new_run_id: part of this module's API
    Plan,
    ReplayConfig,
    environment,
    is_out_dir,
    new_run_id,
    origins,
    resolve,
)
from replay.progress import Progress
from replay.safety import format_plan, keys_from_env, make_plan  # noqa: F401 - keys_from_env: API
from replay.scheduler import ScheduleOptions, Stats
from replay.shards import (  # noqa: F401 - ReplayError is part of this module's API
    START_LEAD_S,
    Outcome,
    ReplayError,
    ShardOwners,
    ShardPlan,
    drive,
    install_uvloop,
    lost_line,
    quiet_gc,
    run_events,
    shard_events,
)
from replay.slack import Job, Slack, run_whole
from traces.io import open_reader

now = time.monotonic


class LocalTarget(Protocol):
    """What start_local's context manager yields (staging's stand-in)."""

    url: str
    anon_key: str
    webhook_secret: str
    stripe_key: str


StartLocal = Callable[..., contextlib.AbstractContextManager[LocalTarget]]


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


Trailer = Callable[[], dict[str, Any]]  # what the result trailer keeps that is known at the end


def _no_trailer() -> dict[str, Any]:
    return {}


def _sender_cost(cpu_s: float, wall_s: float, processes: int) -> dict[str, Any]:
    """The result trailer's `sender` (judge.fidelity reads the sender's CPU share from it)."""
    return {"cpu_s": round(cpu_s, 3), "wall_s": round(wall_s, 3), "processes": processes}


def _run_here(cfg: ReplayConfig, ctx: BuildContext, opts: ScheduleOptions, origins: dict[str, int],
              hdr: dict[str, Any], prog: Progress, trailer: Trailer = _no_trailer) -> tuple[ResultWriter, Stats]:  # fmt: skip
    install_uvloop()
    cpu0 = time.process_time()
    box: dict[str, Any] = {}

    slack = Slack()

    def write(batch: pa.RecordBatch) -> Job:
        box["w"].write_batch(batch)
        yield
        prog.add(summarize(batch))

    def flush_steps(_: Stats | None = None) -> Job:
        # every FLUSH_S (the run's ticker) or FLUSH_ROWS rows: the rows to the log, and their
        # counts; a step at a time in the sender's slack (replay.slack), all when not pacing
        yield from rows.ship_steps(write, everything=not slack.paced)
        box["w"].flush()
        prog.tick()

    rows = RowBuffer(full=lambda: slack.want("rows", flush_steps))

    async def get_start() -> float:
        start = now() + START_LEAD_S
        start_unix_us = time.time_ns() // 1000 + round(START_LEAD_S * 1e6)
        box["w"] = ResultWriter(cfg.out, ResultHeader(start_unix_us=start_unix_us, **hdr))
        box["start"] = start
        return start

    async def main() -> Stats:
        return await run_events(ctx, opts, cfg, origins, shard_events(cfg.trace, 0, 1), 0, 1,
                                rows.append, get_start, flush_steps, slack=slack)  # fmt: skip

    try:
        with quiet_gc():
            stats = asyncio.run(main())
    finally:
        if "w" in box:
            wall = now() - box["start"]
            cost = _sender_cost(time.process_time() - cpu0, wall, 1)
            try:
                run_whole(flush_steps())
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
    """How many events each shard sends."""
    counts = dict.fromkeys(range(shards), 0)
    owners = ShardOwners(shards)
    with open_reader(trace) as r:
        for ev in r:
            if ev.target is not None:
                counts[owners.of(ev)] += 1
    return counts


def _start_shards(cfg: ReplayConfig, ctx: BuildContext, keys: Credentials,
                  plans: list[ShardPlan]) -> tuple[Any, Any]:  # fmt: skip
    """(Dask client or None, the shard set): each shard started on its process or Dask worker."""
    if not cfg.scheduler:
        from replay.processes import ProcessShards  # noqa: PLC0415

        return None, ProcessShards(plans, keys)
    from replay.cluster import DaskShards  # noqa: PLC0415 - Dask is optional
    from traces.cluster import dask_client  # noqa: PLC0415

    client = dask_client(cfg.scheduler)
    try:
        return client, DaskShards(client, plans, ctx.run_id, cfg.trace)
    except BaseException:
        client.close()
        raise


def _unstarted_shard_files(
    out_dir: str, shards: int, outcome: Outcome, hdr: dict[str, Any]
) -> None:
    """Under --out DIR/, a run stopped before its start: each shard's file, as a stop after the
    start leaves it (closed, complete), with no rows and the clock measured for it, if any."""
    os.makedirs(out_dir, exist_ok=True)
    for k in range(shards):
        clocks = [c for c in outcome.clocks if c.get("shard") == k]
        header = ResultHeader(**{**hdr, "start_unix_us": outcome.start_unix_us, "shard": k,
                                 "clocks": clocks})  # fmt: skip
        ResultWriter(shard_file(out_dir, k, shards), header).close(end_us=0)


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
    client = ss = None
    try:
        # from before the first shard starts: a stop while they start is a stop (exit 128+signal)
        with _stop_signals() as stopped_by:
            client, ss = _start_shards(cfg, ctx, keys, plans)
            stopping = lambda: stopped_by() is not None  # noqa: E731
            outcome = drive(ss, n, on_start, on_rows, tick, stopping)
            signum = stopped_by()
        if not outcome.started:  # stopped before the start: the files a stop leaves, with no rows
            on_start(outcome.start_unix_us, outcome.clocks)
            if out_dir is not None:
                _unstarted_shard_files(out_dir, n, outcome, hdr)
        if any(s.lost for s in outcome.shards.values()):
            lost = outcome.lost(events_per_shard(local_trace, n))
    finally:
        if ss is not None:
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


def run(plan: Plan, start_local: StartLocal | None = None,
        progress: IO[str] | None = sys.stderr) -> ReplayResult:  # fmt: skip
    """Carry a plan out: start the local stand-in if it says so, send, collect the result log.

    Raises ReplayError when a shard fails, ReplayStopped when SIGTERM/SIGINT stopped a sharded run
    (its rows are kept).
    """
    with contextlib.ExitStack() as stack:
        standin = None
        if plan.local:
            if start_local is None:
                raise ReplayError(
                    "--target local needs the stand-in, which this build does not provide; give --target URL"
                )
            standin = stack.enter_context(start_local(inventory=plan.header.inventory))
        return _run_plan(plan, plan.context(standin), standin, progress)


def _run_plan(plan: Plan, ctx: BuildContext, standin: LocalTarget | None,
              progress: IO[str] | None) -> ReplayResult:  # fmt: skip
    """Call the runner the plan asks for (this process, or shards) with what it takes."""
    cfg, opts, keys = plan.cfg, plan.opts, ctx.keys
    to = origins(ctx, plan.targets)
    hdr = plan.result_header(ctx)
    prog = Progress(plan.expected_requests, plan.duration_s, progress if cfg.progress else None)
    trailer = functools.partial(_standin_end, standin) if standin is not None else _no_trailer
    if not plan.sharded:
        writer, stats = _run_here(dataclasses.replace(cfg, trace=plan.trace), ctx, opts, to, hdr,
                                  prog, trailer)  # fmt: skip
        prog.tick(final=True)
        return ReplayResult(writer.header, Path(cfg.out), writer.rows, stats.sent, stats.errors,
                            stats.dropped, keys.values(), table=writer.table)  # fmt: skip
    writer, outcome, lost, signum = _run_sharded(cfg, ctx, keys, opts, to, hdr, prog, plan.trace,
                                                 plan.stripe_mode, plan.required_env, trailer)  # fmt: skip
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


def dry_run_text(plan: Plan) -> str:
    """What --dry-run prints: requests per target, peak rates at the plan's speed, caps."""
    with open_reader(plan.trace) as r:  # the peaks at this speed: one pass over the events
        counted = make_plan(r, plan.cfg.speed)
    target = "local stand-in" if plan.local else public_url(plan.cfg.target)
    return format_plan(counted, target, plan.stripe_mode, plan.caps)


def judge(result: ReplayResult, thresholds: Sequence[Threshold] | None = None,
          max_schedule_lag_ms: float | None = None) -> tuple[report.Results, report.Judgement]:  # fmt: skip
    """A finished run's result log, judged (its own thresholds unless `thresholds` are given)."""
    loaded = (report.load([str(result.out)]) if result.table is None  # shard files: read them
              else report.in_memory(result.out, result.header, result.table()))  # fmt: skip
    return loaded, report.judge_run(loaded, thresholds, max_schedule_lag_ms)


@dataclass(frozen=True, slots=True)
class Replayed:
    """A replay carried out and judged: its plan, what it wrote, and the judgement."""

    plan: Plan
    result: ReplayResult
    loaded: report.Results
    judged: report.Judgement


def replay_and_judge(cfg: ReplayConfig, env: Mapping[str, str] | None = None,
                     start_local: StartLocal | None = None, progress: IO[str] | None = sys.stderr,
                     thresholds: Sequence[Threshold] | None = None,
                     max_schedule_lag_ms: float | None = None) -> Replayed:  # fmt: skip
    """The one run path of `gaterush replay` and `gaterush demo`: resolve, run, judge.

    `thresholds` replace the trace's (in the judgement and the result header).
    """
    mapping = None if thresholds is None else threshold_mapping(thresholds)
    with environment(cfg, env, standin=start_local is not None) as e:
        plan = resolve(cfg, e, mapping)
        result = run(plan, start_local, progress)
    loaded, judged = judge(result, thresholds, max_schedule_lag_ms)
    return Replayed(plan, result, loaded, judged)


def threshold_mapping(thresholds: Sequence[Threshold]) -> dict[str, list[str]]:
    """Thresholds as the k6 mapping a result header keeps (metric -> expressions)."""
    out: dict[str, list[str]] = {}
    for t in thresholds:
        out.setdefault(t.selector.name, []).append(t.expression.source)
    return out


def run_replay(cfg: ReplayConfig, env: Mapping[str, str] | None = None, start_local: StartLocal | None = None,
               progress: IO[str] | None = sys.stderr, dry_run_out: IO[str] | None = None,
               thresholds: Mapping[str, list[str]] | None = None) -> ReplayResult | None:  # fmt: skip
    """Resolve and run a replay, writing the result log; None for a dry run (the plan is printed).

    `thresholds` (k6 mapping) replace the trace's in the result header. Raises SafetyError (live
    keys, caps) and ReplayError/ValueError/TraceError for bad input, all before anything is sent;
    ReplayStopped when SIGTERM/SIGINT stopped a sharded run (its rows are kept).
    """
    with environment(cfg, env, standin=start_local is not None) as e:
        plan = resolve(cfg, e, thresholds, dry_run=dry_run_out is not None)
        if dry_run_out is not None:
            dry_run_out.write(dry_run_text(plan) + "\n")
            return None
        return run(plan, start_local, progress)


def _standin_end(standin: Any) -> dict[str, Any]:
    """The local stand-in's end state, kept in the result trailer for `verify --target local`."""
    try:
        return {"end_state": standin.end_state()}
    except (OSError, ValueError) as e:  # the run's rows matter more than this: say so, keep them
        sys.stderr.write(f"replay: the stand-in's end state could not be read ({e})\n")
        return {}
