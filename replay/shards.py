"""Replay shards: one shard runner for every kind of worker, and the coordinator that drives them.

A shard is the events of the actors that ``shard_of`` gives it, so an actor's requests, its
``after`` dependencies, its dashboard loads and a viewer's subscriptions stay on one sender (an
``after`` on another actor's Stripe call follows that call: ShardOwners). Each
shard still reads the whole trace: the writes of every shard go to a WriteIndex, so a viewer's
messages are matched with whichever shard's write caused them (see replay.realtime). Rate caps are
divided across the shards by the engine. ``run_shard`` is the same code on a local process (``--workers N``) and on
a Dask worker (``--scheduler``, replay.cluster); only the link that carries its messages differs.

The exchange, in messages (tuples; lists once they crossed Dask):

* shard: ``("ready", shard, info)`` once warmed up; ``("rows", shard, ipc, counts, sent, errors,
  dropped)`` every FLUSH_S (or FLUSH_ROWS rows): ``ipc`` the new rows as one Arrow record batch,
  the bytes of its IPC stream message (judge.resultlog.batch_message), which the coordinator
  appends to the result log as they are, or None when the shard wrote them to its own file under
  ``--out DIR``; ``counts`` the batch's judge.resultlog.RowCounts (as a tuple), all the progress
  line needs; ``("done", shard, sent, errors, dropped, stopped)``; ``("error", shard, text)``.
* coordinator: the clock probes (replay.clocksync), then the start instant in the shard's own wall
  clock, then possibly stop.

Keys never travel in a Dask task: a Dask shard reads them from its worker's environment. A local
process gets them from its parent over its private pipe (the stand-in's keys exist only there).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import os
import socket
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from judge.resultlog import (
    FLUSH_S,
    ResultHeader,
    ResultWriter,
    RowCounts,
    batch_message,
    shard_file,
    summarize,
)
from judge.rows import RowBuffer, RowSink
from replay.builders import BuildContext, Credentials
from replay.clocksync import ClockOffset, measure_offset
from replay.realtime import Realtime, WriteIndex
from replay.safety import check_keys, keys_from_env, redact
from replay.scheduler import ScheduleOptions, Scheduler, Stats, shard_of
from replay.slack import Job, Slack, run_whole
from replay.transport import make_transport
from traces.event import Event
from traces.io import in_order, open_reader

if TYPE_CHECKING:
    import pyarrow as pa

    from replay.engine import ReplayConfig

now = time.monotonic
START_LEAD_S = (
    0.3  # at least this long between agreeing on the start instant and the first deadline
)
READY_TIMEOUT_S = 120.0
STOP_GRACE_S = 10.0  # after a stop, how long shards get to ship their rows
OWNED_CALLS = 200_000  # Stripe calls remembered for the events that come `after` them


class ReplayError(Exception):
    """The replay could not run (a worker failed, a target is missing): the message says why."""


@dataclass(frozen=True, slots=True)
class ShardPlan:
    """What one shard needs besides its keys: never a key (ctx holds blank ones)."""

    shard: int
    shards: int
    cfg: ReplayConfig
    ctx: BuildContext
    opts: ScheduleOptions
    origins: Mapping[str, int]
    out_dir: str | None = None  # write its own result file there instead of streaming rows
    header: Mapping[str, Any] = field(default_factory=dict)  # for its own result file
    stripe_mode: str = "standin"  # standin | real | URL: how the worker checks its Stripe key
    required_env: tuple[str, ...] = ()  # keys the worker's environment must hold (a remote target)


def install_uvloop() -> None:
    """Make new event loops uvloop's (faster timers and sockets) where it is installed."""
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop


GIL_SWITCH_S = 0.0002  # while sending: how long another thread may hold the GIL the sender wants


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """While sending: fewer, later collections (a full collection is a pause of milliseconds),
    and the GIL handed over within GIL_SWITCH_S. The interpreter lets a thread that holds it run
    5 ms before it must give it up: on a Dask worker, its own threads (heartbeats, the comms
    carrying our rows) would delay a deadline that long."""
    old = gc.get_threshold()
    old_switch = sys.getswitchinterval()
    # the young garbage goes before the freeze; a full collection would cost ~20 ms of CPU at the
    # start of every run to find next to nothing (what imports leave is alive), and what it
    # misses is collected after the run (unfreeze)
    gc.collect(1)
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    sys.setswitchinterval(GIL_SWITCH_S)
    try:
        yield
    finally:
        sys.setswitchinterval(old_switch)
        gc.set_threshold(*old)
        gc.unfreeze()


class ShardOwners:
    """Which shard sends each event, read in trace order: its actor's (``shard_of``), except that
    an event whose ``after`` is a Stripe call goes where that call went, since it needs the call's
    answer (a PaymentIntent id). The models keep ``after`` within an actor; a recorded trace may not.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.calls: OrderedDict[int, int] = (
            OrderedDict()
        )  # seq of a recent Stripe call -> its shard

    def of(self, ev: Event) -> int:
        """The shard of `ev` (an event with a target; call in trace order)."""
        if self.workers == 1:
            return 0
        k = shard_of(ev.actor, self.workers)
        if ev.after is not None:
            k = self.calls.get(ev.after, k)
        if ev.target is not None and ev.target.startswith("stripe:"):
            self.calls[ev.seq] = k
            if len(self.calls) > OWNED_CALLS:
                self.calls.popitem(last=False)
        return k


def shard_events(
    trace: str, shard: int, workers: int, writes: WriteIndex | None = None
) -> Iterator[Event]:
    """The events shard `shard` of `workers` sends: its actors' (viewers included; ShardOwners).

    With `writes`, and realtime events in the trace, every shard's writes are noted there as read.
    """
    owners = ShardOwners(workers)
    with open_reader(trace) as r:
        targets = r.header.targets
        if writes is not None and targets and not any(t.startswith("realtime:") for t in targets):
            writes = None  # no viewer anywhere: nothing to match
        # paced: no event costs the loop more than tens of microseconds to read
        for ev in in_order(r.paced(), trace):  # an unsorted trace stops with its first bad seq
            if ev.target is None:
                continue
            mine = owners.of(ev) == shard
            if writes is not None:
                writes.add(ev, mine)
            if mine:
                yield ev


class Stopper:
    """A stop request that any thread (or a signal handler) may make; the run task is cancelled."""

    def __init__(self) -> None:
        self.stopped = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Future[Any] | None = None

    def attach(self, loop: asyncio.AbstractEventLoop, task: asyncio.Future[Any]) -> None:
        """The task that a stop cancels."""
        self._loop, self._task = loop, task
        if self.stopped:
            task.cancel()

    def stop(self) -> None:
        """Ask for a stop (idempotent, thread-safe)."""
        self.stopped = True
        if self._loop is not None and self._task is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed: nothing to stop
                self._loop.call_soon_threadsafe(self._task.cancel)


async def run_events(ctx: BuildContext, opts: ScheduleOptions, cfg: ReplayConfig, origins: Mapping[str, int],
                     events: Iterator[Event], shard: int, workers: int, sink: RowSink,
                     get_start: Callable[[], Any], tick: Callable[[Stats], Job] | None,
                     stopper: Stopper | None = None, writes: WriteIndex | None = None,
                     slack: Slack | None = None) -> Stats:  # fmt: skip
    """Warm up, agree on the start instant, send the events; the Scheduler's counts.

    `sink` takes each row's columns (a RowBuffer's append); `get_start` returns the start on this
    process's monotonic clock, or None if stopped before it. `tick(stats)` makes the job that
    ships the rows so far, run every FLUSH_S in `slack` (the scheduler's: a step at a time between
    deadlines). `writes`: every shard's writes, as `events` reads them (for the viewers' messages).
    """
    slack = slack if slack is not None else Slack()
    transport = make_transport(cfg.transport, cfg.timeout, cfg.connections)
    await transport.start({o: (cfg.warm if n == 0 else n) for o, n in origins.items()})
    realtime = None
    tk = None
    try:
        start = await get_start()
        if start is None:
            return Stats()

        def us(t: float) -> int:
            return round((t - start) * 1e6)

        realtime = Realtime(ctx, lambda row: sink(*row), us, lambda s: redact(s, ctx.keys.values()),
                            writes)  # fmt: skip
        sched = Scheduler(ctx, transport, sink, start, opts, realtime, slack)

        async def ticker() -> None:
            while True:
                await asyncio.sleep(FLUSH_S)
                if tick is not None:
                    slack.want("rows", lambda: tick(sched.stats))

        loop = asyncio.get_running_loop()
        tk = loop.create_task(ticker())
        run = loop.create_task(sched.run(events))
        if stopper is not None:
            stopper.attach(loop, run)
        try:
            return await run
        except asyncio.CancelledError:
            if stopper is None or not stopper.stopped:
                raise
            return sched.stats
    finally:
        if tk is not None:
            tk.cancel()
        if realtime is not None:
            await realtime.close()
        await transport.close()


class ShardLink(Protocol):
    """A shard's end of its link to the coordinator."""

    def send(self, msg: tuple) -> None:
        """Send a message to the coordinator."""

    def wait_start(self, stopper: Stopper) -> tuple[float, int, dict[str, Any]] | None:
        """Block until the start: (start in this host's unix seconds, agreed start in the client's
        unix µs, this shard's clock entry); None when stopped first."""

    def watch(self, stopper: Stopper) -> None:
        """Call stopper.stop() when the coordinator asks, or end the process when it is gone."""


def keys_here(
    env: Mapping[str, str], stripe_mode: str, required: tuple[str, ...] = ()
) -> Credentials:
    """This worker's keys from its environment, checked as the client checks its own."""
    keys = keys_from_env(env)
    check_keys(keys, stripe_mode, env)
    missing = [name for name in required if not env.get(name)]
    if missing:
        raise ReplayError(
            f"host {socket.gethostname()}: set {', '.join(missing)} in this worker's environment"
        )
    return keys


@contextlib.contextmanager
def trace_file(trace: str, data: bytes | None) -> Iterator[str]:
    """A local path to the trace: the path itself, the scattered bytes, or an fsspec URL's copy."""
    if data is None and "://" not in trace:
        yield trace
        return
    suffix = ".parquet" if trace.endswith(".parquet") else ".grt"
    with tempfile.TemporaryDirectory(prefix="gaterush-shard-") as d:
        local = os.path.join(d, "trace" + suffix)
        if data is not None:
            Path(local).write_bytes(data)
        else:
            import fsspec  # noqa: PLC0415 - only an object-store trace needs it (Dask brings it)

            with fsspec.open(trace, "rb") as src, open(local, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        yield local


def run_shard(
    plan: ShardPlan, link: ShardLink, keys: Credentials | None, data: bytes | None = None
) -> None:
    """Send one shard's events, streaming rows (or writing its own file) through `link`.

    `keys` None: read them from this host's environment (a Dask worker). Errors are reported as an
    ``error`` message (redacted), never raised.
    """
    k = plan.shard
    secrets: list[str] = []
    try:
        if keys is None:
            keys = keys_here(os.environ, plan.stripe_mode, plan.required_env)
        secrets = keys.values()
        ctx = dataclasses.replace(plan.ctx, keys=keys)
        if data is None and "://" not in plan.cfg.trace and not Path(plan.cfg.trace).exists():
            raise ReplayError(
                f"host {socket.gethostname()}: cannot read the trace {plan.cfg.trace}: put it on a "
                "filesystem every worker shares, or give an fsspec URL (s3://..., gs://...)"
            )
        with trace_file(plan.cfg.trace, data) as trace:
            stats, stopped = _send(plan, ctx, link, trace)
        link.send(("done", k, stats.sent, stats.errors, stats.dropped, stopped))
    except Exception as e:  # noqa: BLE001 - reported to the coordinator, which fails the run
        with contextlib.suppress(Exception):
            link.send(("error", k, redact(f"{type(e).__name__}: {e}", secrets)))


def _send(plan: ShardPlan, ctx: BuildContext, link: ShardLink, trace: str) -> tuple[Stats, bool]:
    k = plan.shard
    stopper = Stopper()
    link.watch(stopper)
    box: dict[str, Any] = {"stats": Stats()}

    slack = Slack()

    def send_batch(batch: pa.RecordBatch) -> Job:
        # to this shard's own file or as IPC bytes to the coordinator, with the counts its
        # progress line needs (never the rows themselves)
        yield
        stats = box["stats"]
        counts = tuple(summarize(batch))
        w = box.get("w")
        if w is not None:
            w.write_batch(batch)
            w.flush()
        data = None if w is not None else batch_message(batch)
        link.send(("rows", k, data, counts, stats.sent, stats.errors, stats.dropped))

    def ship(stats: Stats) -> Job:
        # a step at a time in the sender's slack (replay.slack), all when not pacing
        box["stats"] = stats
        yield from rows.ship_steps(send_batch, everything=not slack.paced)

    rows = RowBuffer(full=lambda: slack.want("rows", lambda: ship(box["stats"])))

    async def get_start() -> float | None:
        link.send(("ready", k, {"host": socket.gethostname(), "pid": os.getpid()}))
        got = await asyncio.get_running_loop().run_in_executor(None, link.wait_start, stopper)
        if got is None:
            return None
        local_unix, agreed_us, clock = got
        if plan.out_dir is not None:
            os.makedirs(plan.out_dir, exist_ok=True)
            header = ResultHeader(
                **{**plan.header, "start_unix_us": agreed_us, "shard": k, "clocks": [clock]}
            )
            box["w"] = ResultWriter(shard_file(plan.out_dir, k, plan.shards), header)
            box["agreed_us"] = agreed_us
        box["start"] = start = now() + (local_unix - time.time())
        return start

    async def main() -> Stats:
        writes = WriteIndex(plan.opts.speed) if plan.shards > 1 else None
        events = shard_events(trace, k, plan.shards, writes)
        return await run_events(ctx, plan.opts, plan.cfg, plan.origins, events, k, plan.shards,
                                rows.append, get_start, ship, stopper, writes, slack)  # fmt: skip

    try:
        with quiet_gc(), asyncio.Runner(loop_factory=_loop_factory()) as runner:
            stats = runner.run(main())
        run_whole(ship(stats))
    finally:
        if "w" in box:
            box["w"].close(end_us=round((now() - box["start"]) * 1e6))
    return stats, stopper.stopped


# --- the coordinator's side ----------------------------------------------------------------------


class ShardSet(Protocol):
    """The coordinator's end of every shard's link (local processes or Dask tasks)."""

    def poll(self, timeout: float) -> list[Any]:
        """Messages that arrived within `timeout` seconds (maybe none)."""

    def probe(self, shard: int) -> float:
        """The shard host's wall clock now (one round trip)."""

    def start(self, starts: Mapping[int, tuple[float, int, dict[str, Any]]]) -> None:
        """Give each shard its start (its own unix seconds, the agreed unix µs, its clock entry)."""

    def lost(self) -> dict[int, str]:
        """Shards whose worker is gone, with why (asked about once a poll)."""

    def stop(self) -> None:
        """Ask every shard to stop now and ship its rows."""


@dataclass(slots=True)
class ShardState:
    """What the coordinator knows of one shard."""

    info: dict[str, Any] | None = None
    rows: int = 0
    sent: int = 0
    errors: int = 0
    dropped: int = 0
    done: bool = False
    stopped: bool = False
    lost: str | None = None


@dataclass(slots=True)
class Outcome:
    """How a sharded run went: counts, clocks, and the shards lost on the way."""

    start_unix_us: int
    clocks: list[dict[str, Any]]
    shards: dict[int, ShardState]
    stopped: bool
    started: bool = True  # False: stopped before the start was given (nothing was sent)

    @property
    def sent(self) -> int:
        """Requests sent by every shard (a lost shard's: as last reported)."""
        return sum(s.sent for s in self.shards.values())

    @property
    def errors(self) -> int:
        """Failed requests of every shard."""
        return sum(s.errors for s in self.shards.values())

    @property
    def dropped(self) -> int:
        """Events held back by every shard."""
        return sum(s.dropped for s in self.shards.values())

    def lost(self, expected: Mapping[int, int] | None = None) -> list[dict[str, Any]]:
        """The shards whose worker died: shard, worker, events sent (of how many), rows kept, why."""
        out = []
        for k, s in sorted(self.shards.items()):
            if s.lost is not None:
                info = s.info or {}
                out.append({"shard": k, "worker": info.get("worker") or info.get("host"),
                            "sent": s.sent, "events": (expected or {}).get(k), "rows": s.rows,
                            "reason": s.lost})  # fmt: skip
        return out


def drive(ss: ShardSet, shards: int, on_start: Callable[[int, list[dict[str, Any]]], None],
          on_rows: Callable[[int, bytes | None, RowCounts], None], tick: Callable[[], None],
          stopping: Callable[[], bool], lead_s: float = START_LEAD_S) -> Outcome:  # fmt: skip
    """Wait for every shard, measure clocks, agree the start, collect rows until all are done or lost.

    `on_start(start_unix_us, clocks)` before the start is sent; `on_rows(shard, ipc, counts)` for
    each batch a shard flushed: its IPC message bytes (None when the shard wrote them to its own
    file) and its RowCounts. A stop before the start is given (`stopping()` while the shards warm
    up or their clocks are measured) sends no start: the Outcome says ``started=False``.
    """
    state = {k: ShardState() for k in range(shards)}
    deadline = now() + READY_TIMEOUT_S
    while any(s.info is None for s in state.values()):
        msgs = ss.poll(0.2)
        for msg in msgs:
            if msg[0] == "ready":
                state[msg[1]].info = dict(msg[2])
        if stopping():  # a stop while the shards start (a shard it ended is no failure)
            return _stop_before_start(ss, state, [])
        for msg in msgs:
            if msg[0] == "error":
                raise ReplayError(f"replay shard {msg[1]} failed: {msg[2]}")
        for k, why in ss.lost().items():
            raise ReplayError(f"replay shard {k} was lost before the start: {why}")
        if now() > deadline:
            late = [k for k, s in state.items() if s.info is None]
            raise ReplayError(f"replay shards {late} did not get ready in {READY_TIMEOUT_S:.0f} s")
    offsets: dict[int, ClockOffset] = {}
    clocks: list[dict[str, Any]] = []
    for k in sorted(state):
        if stopping():
            return _stop_before_start(ss, state, clocks)
        offsets[k] = measure_offset(lambda k=k: ss.probe(k))
        clocks.append(offsets[k].to_dict(shard=k, host=(state[k].info or {}).get("host")))
    if stopping():  # the last moment a stop is one before the start
        return _stop_before_start(ss, state, clocks)
    # far enough ahead that the start reaches every shard, and each is back in its loop, before it:
    # several of the slowest round trips seen (a loaded host wakes a process late)
    lead = max(lead_s, 0.2 + 4 * max(o.worst_delay_s for o in offsets.values()))
    start_unix = time.time() + lead
    start_us = round(start_unix * 1e6)
    on_start(start_us, clocks)
    ss.start({k: (start_unix + offsets[k].offset_s, start_us, clocks[k]) for k in state})
    stop_deadline: float | None = None
    live = set(state)
    while live:
        if stopping() and stop_deadline is None:  # at once: the start may be only a lead away
            ss.stop()
            stop_deadline = now() + STOP_GRACE_S
        for msg in ss.poll(0.2):
            k = msg[1]
            s = state[k]
            if msg[0] == "rows":
                counts = RowCounts(*msg[3])
                on_rows(k, msg[2], counts)
                s.rows += counts.rows
                s.sent, s.errors, s.dropped = msg[4], msg[5], msg[6]
            elif msg[0] == "done":
                s.sent, s.errors, s.dropped, s.stopped = msg[2], msg[3], msg[4], bool(msg[5])
                s.done = True
                live.discard(k)
            elif msg[0] == "error" and k in live:
                ss.stop()
                raise ReplayError(f"replay shard {k} failed: {msg[2]}")
        for k, why in ss.lost().items():
            if k in live:
                state[k].lost = why
                live.discard(k)
        if stop_deadline is not None and now() > stop_deadline:
            for k in live:
                state[k].lost = f"did not stop within {STOP_GRACE_S:.0f} s"
            live.clear()
        tick()
    return Outcome(start_us, clocks, state, stop_deadline is not None)


def _stop_before_start(ss: ShardSet, state: dict[int, ShardState],
                       clocks: list[dict[str, Any]]) -> Outcome:  # fmt: skip
    """Stopped before the start was given: nothing was sent. Every shard is asked to stop; those
    that got ready are waited for (up to STOP_GRACE_S) to end without sending; the others are ended
    by the shard set's close (a process killed, a Dask task cancelled). Errors and lost shards are
    no failure now: the stop may be what ended them."""
    ss.stop()
    deadline = now() + STOP_GRACE_S
    waiting = {k for k, s in state.items() if s.info is not None}
    while waiting and now() < deadline:
        for msg in ss.poll(0.2):
            k = msg[1]
            if msg[0] == "ready":  # got ready as the stop came: it sees the stop and ends
                state[k].info = dict(msg[2])
                waiting.add(k)
            elif msg[0] == "done":
                s = state[k]
                s.sent, s.errors, s.dropped, s.done, s.stopped = msg[2], msg[3], msg[4], True, True
                waiting.discard(k)
            elif msg[0] == "error":
                waiting.discard(k)
        waiting -= set(ss.lost())
    return Outcome(time.time_ns() // 1000, clocks, state, stopped=True, started=False)


def lost_line(lost: list[dict[str, Any]]) -> str:
    """One line per lost shard: which, on which worker, how much of it was sent, rows kept."""
    return "; ".join(
        f"shard {x['shard']} lost ({x['reason']}; worker {x['worker']}): "
        f"{x['sent']}{'' if x['events'] is None else ' of ' + str(x['events'])} of its events sent, "
        f"{x['rows']} rows kept"
        for x in lost
    )
