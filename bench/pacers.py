"""The pacing options measured alone (no network): how late each wakes the loop, and its CPU.

The options of issue 15: the timerfd watched by the event loop (replay.pacer.TimerfdPacer, the
default), a pacing thread sleeping with clock_nanosleep(TIMER_ABSTIME) that hands each wake-up to
the loop with call_soon_threadsafe (:class:`ThreadPacer`, here only to be compared), and the
fallback that sleeps on the loop's timers and then spins (replay.pacer.LoopPacer). Each is driven
over the same exponential gaps, in a fresh process, with uvloop. Used by bench/bench_replay.py.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import queue
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from replay.pacer import CLOCK_MONOTONIC, Tick, _Timespec, make_pacer

now = time.monotonic
TIMER_ABSTIME = 1


class ThreadPacer:
    """A thread sleeping on absolute deadlines (clock_nanosleep) that wakes the loop for each."""

    name = "thread"

    def __init__(self, lead_s: float = 0.00005) -> None:
        self.lead = lead_s
        self.wakeups = 0
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._sleep = libc.clock_nanosleep  # ctypes drops the GIL around the call
        self._sleep.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]

    def _sleep_until(self, t: float, ts: _Timespec) -> None:
        ts.tv_sec, ts.tv_nsec = divmod(max(1, int(t * 1e9)), 1_000_000_000)
        self._sleep(CLOCK_MONOTONIC, TIMER_ABSTIME, ctypes.byref(ts), None)

    async def run(self, tick: Tick) -> None:
        """Call tick at each deadline it returns until it returns None."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        deadlines: queue.SimpleQueue[float | None] = queue.SimpleQueue()

        def pace() -> None:
            ts = _Timespec()
            while (d := deadlines.get()) is not None:
                self._sleep_until(d - self.lead, ts)
                loop.call_soon_threadsafe(fire, d)

        def fire(d: float) -> None:
            self.wakeups += 1
            while now() < d:
                pass
            nxt = tick()
            deadlines.put(nxt)
            if nxt is None:
                fut.set_result(None)

        th = threading.Thread(target=pace, daemon=True)
        th.start()
        deadlines.put(now())
        await fut
        th.join()


CHILD = """
import asyncio, json, resource, sys, time
import numpy as np, uvloop
from bench.pacers import drive
print(json.dumps(drive(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]))))
"""


def drive(kind: str, rate: float, seconds: float) -> dict:
    """Wake at exponential gaps at `rate`/s for `seconds`: lateness (us) percentiles and CPU s."""
    import uvloop

    rng = np.random.default_rng(5)
    gaps = rng.exponential(1 / rate, int(rate * seconds))
    late: list[float] = []
    ds: list[float] = []
    i = [0]

    def tick() -> float | None:
        t = now()
        if ds:
            late.append(t - ds[-1])
        if i[0] >= len(gaps):
            return None
        ds.append((ds[-1] if ds else t + 0.05) + gaps[i[0]])
        i[0] += 1
        return ds[-1]

    p = ThreadPacer() if kind == "thread" else make_pacer(kind)

    async def main() -> None:
        await p.run(tick)

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    uvloop.run(main())
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    a = np.array(late) * 1e6
    return {
        "p50": float(np.percentile(a, 50)),
        "p99": float(np.percentile(a, 99)),
        "p999": float(np.percentile(a, 99.9)),
        "cpu": r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime,
    }


def compare(rate: float, seconds: float) -> list[str]:
    """One line per pacer: wake-up lateness at `rate` wake-ups/s and the CPU it took."""
    root = Path(__file__).resolve().parent.parent
    lines = []
    for kind in ("timerfd", "thread", "loop"):
        out = subprocess.run([sys.executable, "-c", CHILD, kind, str(rate), str(seconds)],
                             capture_output=True, text=True, timeout=seconds * 5 + 60, cwd=root)  # fmt: skip
        if out.returncode != 0:
            lines.append(f"  {kind:<8} failed: {out.stderr.strip()[-300:]}")
            continue
        m = json.loads(out.stdout.strip().splitlines()[-1])
        lines.append(f"  {kind:<8} lateness p50 {m['p50']:7.1f} us  p99 {m['p99']:8.1f} us  p99.9 {m['p999']:8.1f} us"
                     f"  CPU {m['cpu'] / seconds:5.1%} of a core")  # fmt: skip
    return lines
