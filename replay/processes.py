"""Replay shards on local processes (``--workers N`` without ``--scheduler``).

Each shard is a spawned process running replay.shards.run_shard over a pipe. Processes rather than
a Dask LocalCluster: Dask is optional, a LocalCluster's scheduler and nanny processes take seconds to
start and a core's share of CPU on a 2-core machine, and one process per shard is all it would run.

A sender must not outlive the replay that started it: each process asks the kernel to kill it when
its parent dies (``PR_SET_PDEATHSIG``, Linux) and a watchdog thread ends it within WATCH_S when its
parent is gone (every POSIX system). SIGTERM and SIGINT stop it cleanly: it ships its rows and
reports; the parent sends SIGTERM to every shard when it is itself stopped. A shard spawned holds
SIGINT back until it can stop cleanly (sigint_held), so a Ctrl-C while the shards start is a stop.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait
from typing import Any

from replay.builders import Credentials
from replay.shards import ShardPlan, Stopper, run_shard

WATCH_S = 0.2
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Make this process end when `parent_pid` does: the kernel's signal on Linux, and a watchdog."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(3)  # nobody is left to take the rows: stop sending at once
            time.sleep(WATCH_S)

    if os.getppid() != parent_pid:  # the parent died before the kernel was asked
        os._exit(3)
    threading.Thread(target=watch, name="gaterush-parent-watch", daemon=True).start()


@contextlib.contextmanager
def sigint_held() -> Iterator[None]:
    """SIGINT blocked in this thread while shards are spawned, which inherit the mask: a Ctrl-C (sent
    to the whole process group) while a shard starts stays pending until PipeLink.watch makes it a
    stop, instead of a KeyboardInterrupt in its imports. Here, it is delivered when unblocked."""
    # a spawn starts multiprocessing's resource tracker first, which blocks SIGINT and then unblocks
    # it: started now, it leaves the mask alone while the shards are spawned
    resource_tracker.ensure_running()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class PipeLink:
    """A shard's link to its parent: a pipe; stops on SIGTERM/SIGINT."""

    def __init__(self, conn: Connection, shard: int) -> None:
        self.conn = conn
        self.shard = shard
        self._lock = threading.Lock()

    def send(self, msg: tuple) -> None:
        """Send a message to the parent."""
        with self._lock:
            self.conn.send(msg)

    def wait_start(self, stopper: Stopper) -> tuple[float, int, dict[str, Any]] | None:
        """Answer clock probes until the start message (None when stopped first)."""
        while not stopper.stopped:
            if not self.conn.poll(WATCH_S):
                continue
            msg = self.conn.recv()
            if msg[0] == "ping":
                self.send(("pong", self.shard, time.time()))
            elif msg[0] == "start":
                return msg[1], msg[2], msg[3]
        return None

    def watch(self, stopper: Stopper) -> None:
        """SIGTERM and SIGINT stop the shard (its rows are shipped)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopper.stop())
        # held since the spawn (ProcessShards): a Ctrl-C during this process's start is a stop now
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _process_main(plan: ShardPlan, keys: Credentials, conn: Connection, parent_pid: int) -> None:
    die_with_parent(parent_pid)
    try:
        run_shard(plan, PipeLink(conn, plan.shard), keys)
    finally:
        conn.close()


class ProcessShards:
    """The parent's end: one spawned process per shard (a ShardSet for replay.shards.drive)."""

    def __init__(self, plans: list[ShardPlan], keys: Credentials) -> None:
        mp = multiprocessing.get_context("spawn")
        self.conns: dict[int, Connection] = {}
        self.procs: dict[int, Any] = {}
        self._lost: dict[int, str] = {}
        self._pongs: dict[int, float] = {}
        with sigint_held():
            for plan in plans:
                parent, child = mp.Pipe()
                p = mp.Process(target=_process_main, args=(plan, keys, child, os.getpid()), daemon=True,
                               name=f"gaterush-replay-{plan.shard}")  # fmt: skip
                p.start()
                child.close()
                self.conns[plan.shard] = parent
                self.procs[plan.shard] = p

    def poll(self, timeout: float) -> list[Any]:
        """Messages from the shards within `timeout`; a closed pipe marks its shard lost."""
        out = []
        by_conn = {c: k for k, c in self.conns.items() if k not in self._lost}
        for c in wait(list(by_conn), timeout=timeout):
            k = by_conn[c]
            try:
                while c.poll():
                    msg = c.recv()
                    if msg[0] == "pong":
                        self._pongs[k] = msg[2]
                    else:
                        out.append(msg)
            except (EOFError, OSError):
                p = self.procs[k]
                p.join(1)
                self._lost[k] = f"its process ended (exit code {p.exitcode})"
        return out

    def probe(self, shard: int) -> float:
        """The shard's wall clock, asked over its pipe."""
        self._pongs.pop(shard, None)
        self.conns[shard].send(("ping",))
        c = self.conns[shard]
        while shard not in self._pongs:
            if not c.poll(30):
                raise TimeoutError(f"replay shard {shard} did not answer a clock probe")
            msg = c.recv()
            if msg[0] == "pong":
                self._pongs[shard] = msg[2]
        return self._pongs.pop(shard)

    def start(self, starts: Mapping[int, tuple[float, int, dict[str, Any]]]) -> None:
        """Send each shard its start."""
        for k, (local, agreed_us, clock) in starts.items():
            self.conns[k].send(("start", local, agreed_us, clock))

    def lost(self) -> dict[int, str]:
        """Shards whose process ended without reporting."""
        return self._lost

    def stop(self) -> None:
        """SIGTERM to every shard still running: each ships its rows and reports."""
        for p in self.procs.values():
            if p.is_alive():
                with contextlib.suppress(OSError):
                    p.terminate()

    def close(self) -> None:
        """Reap every process (killing any that outstays 5 s)."""
        for p in self.procs.values():
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
        for c in self.conns.values():
            c.close()
