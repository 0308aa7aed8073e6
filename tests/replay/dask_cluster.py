"""A Dask scheduler and worker processes on loopback, started and stopped by a test or a bench.

Workers run without a nanny, so killing a worker's process is a worker dying (a nanny would
restart it). Each worker gets the environment given (the keys replay's shards read there).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DASK = str(Path(sys.executable).with_name("dask"))


class DaskCluster:
    """`dask scheduler` and `workers` × `dask worker --nthreads 1 --no-nanny` on 127.0.0.1."""

    def __init__(self, tmp: Path, workers: int = 2, env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.n = workers
        self.env = {**os.environ, **(env or {})}
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.address = ""

    @property
    def url(self) -> str:
        """The scheduler as replay's --scheduler takes it."""
        return "dask://" + self.address.removeprefix("tcp://")

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        out = open(self.tmp / log, "wb")  # noqa: SIM115 - the process holds it
        return subprocess.Popen([DASK, *args], stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                cwd=self.tmp)  # fmt: skip

    def __enter__(self) -> DaskCluster:
        sf = self.tmp / "scheduler.json"
        self.scheduler = self._spawn(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                      "--scheduler-file", str(sf)], "scheduler.log")  # fmt: skip
        deadline = time.monotonic() + 120
        while not sf.exists():
            if time.monotonic() > deadline or self.scheduler.poll() is not None:
                self.__exit__()
                raise RuntimeError((self.tmp / "scheduler.log").read_text())
            time.sleep(0.1)
        time.sleep(0.1)
        self.address = json.loads(sf.read_text())["address"]
        for i in range(self.n):
            self.workers.append(self._spawn(["worker", self.address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                             "--host", "127.0.0.1", "--local-directory", str(self.tmp / f"w{i}")],
                                            f"worker{i}.log"))  # fmt: skip
        from distributed import Client

        with Client(self.address, timeout="60s") as c:
            c.wait_for_workers(self.n, timeout=120)
        return self

    def worker_pids(self) -> list[int]:
        """The worker processes' ids, in start order."""
        return [w.pid for w in self.workers]

    def kill_worker(self, i: int) -> None:
        """SIGKILL worker i (it dies mid-task, as a host that loses power)."""
        self.workers[i].send_signal(signal.SIGKILL)
        self.workers[i].wait(30)

    def __exit__(self, *exc: Any) -> None:
        for p in [*self.workers, self.scheduler]:
            if p is not None and p.poll() is None:
                p.terminate()
        for p in [*self.workers, self.scheduler]:
            if p is not None:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
