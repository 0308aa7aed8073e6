"""`python -m tests.replay.hold_start STAGE MARK ARGS...`: `gaterush ARGS...` with its sharded run
held before the start, at STAGE, until SIGTERM or SIGINT stops it: a deterministic moment to stop
at, not a sleep that races the shards.

STAGE: ``ready`` (the coordinator waiting for its shards to get ready: they may be warming up),
``clocks`` (about to measure the first shard's clock) or ``start`` (the start given, 600 s ahead).
MARK: a JSON file written once held there, with the shard processes' pids (none on Dask).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import replay.engine
import replay.shards

HOLD_MAX_S = 120.0
LONG_LEAD_S = 600.0


class Held:
    """A ShardSet that holds at one stage until the run is asked to stop."""

    def __init__(self, ss: Any, stage: str, mark: Path, stopping: Callable[[], bool]) -> None:
        self.ss, self.stage, self.mark, self.stopping = ss, stage, mark, stopping
        self.held = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ss, name)

    def _hold(self, stage: str) -> None:
        if self.stage != stage or self.held:
            return
        self.held = True
        pids = [p.pid for p in getattr(self.ss, "procs", {}).values()]
        self.mark.write_text(json.dumps({"stage": stage, "pids": pids}))
        deadline = time.monotonic() + HOLD_MAX_S
        while not self.stopping():  # the signal's handler runs between these sleeps
            if time.monotonic() > deadline:
                raise RuntimeError(f"held at {stage} for {HOLD_MAX_S:.0f} s: no signal came")
            time.sleep(0.01)

    def poll(self, timeout: float) -> list[Any]:
        self._hold("ready")
        return self.ss.poll(timeout)

    def probe(self, shard: int) -> float:
        self._hold("clocks")
        return self.ss.probe(shard)

    def start(self, starts: Any) -> None:
        self.ss.start(starts)
        self._hold("start")


def held_drive(stage: str, mark: Path, ss: Any, shards: int, on_start: Any, on_rows: Any, tick: Any,
               stopping: Callable[[], bool], lead_s: float = replay.shards.START_LEAD_S) -> Any:  # fmt: skip
    """replay.shards.drive over a Held shard set (with a long lead when held at the start)."""
    lead = LONG_LEAD_S if stage == "start" else lead_s
    held = Held(ss, stage, mark, stopping)
    return replay.shards.drive(held, shards, on_start, on_rows, tick, stopping, lead)


if __name__ == "__main__":
    stage, mark, *args = sys.argv[1:]
    if stage not in ("ready", "clocks", "start"):
        raise SystemExit(f"hold_start: no stage {stage!r} (ready, clocks or start)")
    replay.engine.drive = functools.partial(held_drive, stage, Path(mark))
    from gaterush import main

    main(args, prog_name="gaterush")
