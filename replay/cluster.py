"""Replay shards on a Dask distributed cluster (``--scheduler dask://HOST:PORT``).

Each shard is one long-running task, pinned to its own worker thread (round robin over the
workers, never more shards on a worker than it has threads), running replay.shards.run_shard. Its
messages go back through a Dask Queue (rows as Arrow IPC batches), its start through a Variable
(the coordinator measures each worker's clock with ``Client.run`` first), a stop through an Event.

A worker reads the keys from its own environment (the task holds none) and the trace from its path
(a shared filesystem), an fsspec URL, or bytes the client scattered when the trace is small.

A task that Dask re-runs after its worker died finds the start already given and sends nothing: a
shard's requests are never sent twice; the coordinator reports the shard lost instead. A shard stops
when the replay is stopped (the Event) or its client is gone (Dask then cancels its task).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from replay.shards import ReplayError, ShardPlan, Stopper, run_shard

SCATTER_MAX_BYTES = 64 << 20  # a local trace up to this size travels to the workers as bytes
LOST_CHECK_S = 1.0


class DaskLink:
    """A shard's link when it runs as a Dask task: Queue out, Variable in, Event to stop."""

    def __init__(self, shard: int, names: Mapping[str, str]) -> None:
        from distributed import Event, Queue, Variable, get_worker  # noqa: PLC0415

        self.shard = shard
        self.worker = get_worker()
        self.key = self.worker.get_current_task()
        self.rows = Queue(names["rows"])
        self.start_var = Variable(names["start"])
        self.stop_event = Event(names["stop"])
        self._out: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._shipper = threading.Thread(target=self._ship, name="gaterush-shard-ship", daemon=True)
        self._shipper.start()
        self._done = threading.Event()

    def _ship(self) -> None:  # off the sending loop: a put is a round trip to the scheduler
        while (msg := self._out.get()) is not None:
            with contextlib.suppress(Exception):  # the client is gone: nobody to tell
                self.rows.put(list(msg))

    def already_started(self) -> bool:
        """Whether the start was given before this task ran: a re-run after its worker died."""
        try:
            self.start_var.get(timeout=0.05)
        except TimeoutError:
            return False
        return True

    def send(self, msg: tuple) -> None:
        """Queue a message for the coordinator (shipped by a thread)."""
        if msg[0] == "ready":
            msg = (msg[0], msg[1], {**msg[2], "worker": self.worker.address})
        self._out.put(msg)

    def wait_start(self, stopper: Stopper) -> tuple[float, int, dict[str, Any]] | None:
        """Wait for the start Variable (None when stopped first)."""
        while not stopper.stopped:
            try:
                starts = self.start_var.get(timeout=0.25)
            except TimeoutError:
                continue
            local, agreed_us, clock = starts[str(self.shard)]
            return float(local), int(agreed_us), dict(clock)
        return None

    def watch(self, stopper: Stopper) -> None:
        """Stop on the run's stop Event, or when Dask cancelled this task (its client is gone)."""

        def run() -> None:
            while not self._done.is_set():
                try:
                    if self.stop_event.wait(timeout=0.25):
                        stopper.stop()
                        return
                except Exception:  # noqa: BLE001 - the scheduler is unreachable: stop sending
                    stopper.stop()
                    return
                ts = self.worker.state.tasks.get(self.key)
                if ts is None or ts.state in ("cancelled", "released", "forgotten"):
                    stopper.stop()
                    return

        threading.Thread(target=run, name="gaterush-shard-watch", daemon=True).start()

    def close(self) -> None:
        """Ship what is queued, then stop the threads."""
        self._done.set()
        self._out.put(None)
        self._shipper.join(30)


def shard_task(
    plan: ShardPlan, names: Mapping[str, str], data: bytes | None = None
) -> dict[str, Any]:
    """The Dask task of one shard: run it unless this is a re-run (see the module docstring)."""
    link = DaskLink(plan.shard, names)
    try:
        if link.already_started():
            return {"shard": plan.shard, "rerun": True}
        run_shard(plan, link, None, data)
        return {"shard": plan.shard, "rerun": False}
    finally:
        link.close()


class DaskShards:
    """The client's end: one task per shard on the cluster (a ShardSet for replay.shards.drive)."""

    def __init__(self, client: Any, plans: list[ShardPlan], run_id: str, trace: str) -> None:
        from distributed import Event, Queue, Variable  # noqa: PLC0415

        self.client = client
        tag = f"gaterush-{run_id}-{uuid.uuid4().hex[:8]}"
        self.names = {"rows": f"{tag}-rows", "start": f"{tag}-start", "stop": f"{tag}-stop"}
        self.rows = Queue(self.names["rows"], client=client)
        self.start_var = Variable(self.names["start"], client=client)
        self.stop_event = Event(self.names["stop"], client=client)
        self._lost: dict[int, str] = {}
        self._addr: dict[int, str] = {}
        self._checked = 0.0
        placement = self._place(len(plans))
        data = None
        if "://" not in trace and os.path.getsize(trace) <= SCATTER_MAX_BYTES:
            with open(trace, "rb") as f:
                data = client.scatter(f.read(), broadcast=True, hash=False)
        self.futures = {
            p.shard: client.submit(
                shard_task,
                p,
                self.names,
                data,
                key=f"{tag}-shard-{p.shard}",
                workers=[placement[p.shard]],
                allow_other_workers=False,
                pure=False,
                retries=0,
            )  # fmt: skip
            for p in plans
        }

    def _place(self, n: int) -> dict[int, str]:
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        slots = [a for a in sorted(workers) for _ in range(int(workers[a].get("nthreads", 1)))]
        if len(slots) < n:
            raise ReplayError(
                f"--workers {n}: the cluster has {len(workers)} workers with {len(slots)} threads in all; "
                "each shard needs a thread of its own"
            )
        # round robin over the workers first, so shards spread before they share a worker
        order = sorted(range(len(slots)), key=lambda i: (slots[:i].count(slots[i]), slots[i]))
        return {k: slots[order[k]] for k in range(n)}

    def poll(self, timeout: float) -> list[Any]:
        """Messages from the Queue within `timeout` (the first waits, the rest are taken at once)."""
        try:
            first = self.rows.get(timeout=timeout)
        except TimeoutError:
            return []
        msgs = [first, *self.rows.get(batch=True)]
        for m in msgs:
            if m[0] == "ready":
                self._addr[m[1]] = m[2]["worker"]
        return msgs

    def probe(self, shard: int) -> float:
        """The shard's worker's wall clock (one Client.run round trip)."""
        addr = self._addr[shard]
        return float(self.client.run(time.time, workers=[addr])[addr])

    def start(self, starts: Mapping[int, tuple[float, int, dict[str, Any]]]) -> None:
        """Publish every shard's start at once."""
        self.start_var.set({str(k): list(v) for k, v in starts.items()})

    def lost(self) -> dict[int, str]:
        """Shards whose worker left the cluster or whose task failed (checked once a second)."""
        if time.monotonic() - self._checked < LOST_CHECK_S:
            return self._lost
        self._checked = time.monotonic()
        alive = set(self.client.scheduler_info(n_workers=-1)["workers"])
        for k, f in self.futures.items():
            if k in self._lost:
                continue
            addr = self._addr.get(k)
            if addr is not None and addr not in alive:
                self._lost[k] = f"its worker {addr} left the cluster"
            elif f.status == "error":
                self._lost[k] = f"its task failed: {f.exception()!r}"
            elif f.status == "finished" and f.result().get("rerun"):
                self._lost[k] = f"its worker {addr} died; Dask re-ran the task, which sent nothing"
        return self._lost

    def stop(self) -> None:
        """Set the stop Event every shard watches."""
        with contextlib.suppress(Exception):
            self.stop_event.set()

    def close(self) -> None:
        """Cancel what still runs and drop the run's queue, variable and event."""
        with contextlib.suppress(Exception):
            self.stop_event.set()
            self.client.cancel(list(self.futures.values()), force=True)
            self.rows.close()
            self.start_var.delete()
