"""Trace format speed: write and read rates for .parquet and .grt, and read memory.

Run: python -m bench traces      (BENCH_TRACE_EVENTS=N to change the size, default 1,500,000)

Floors (issue 3): reading Parquet >= 2,000,000 events/s (columnar, `batches()`), reading .grt
>= 500,000 events/s (Events). Row iteration over Parquet and writing are reported too: the
simulator's end-to-end floor (100,000 events/s) includes the writer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from traces import event as ev
from traces.event import Event, pack_payload
from traces.header import TraceHeader
from traces.info import summarize
from traces.io import open_reader, open_writer

CHUNK = 10_000
FLOORS = {"parquet batches()": 2_000_000, "grt events": 500_000}


def synthetic(n: int, seed: int = 1) -> Iterator[list[Event]]:
    """An event-day-like mix in chunks: arrivals, scans, webhooks, views, checkouts."""
    rng = np.random.default_rng(seed)
    t = 0
    for lo in range(0, n, CHUNK):
        size = min(CHUNK, n - lo)
        gaps = rng.exponential(2000.0, size).astype(np.int64).tolist()
        picks = rng.integers(0, 10, size).tolist()
        out = []
        for i, (gap, pick) in enumerate(zip(gaps, picks, strict=True)):
            t += gap
            seq = lo + i
            a = seq // 3
            if pick < 4:
                p = {
                    "ticket_code": ev.ticket_code(1, a),
                    "event_id": 1,
                    "gate": "A",
                    "lane": a % 12,
                    "direction": "in",
                }
                out.append(
                    Event(
                        t,
                        seq,
                        ev.SCAN,
                        f"attendee:{a}",
                        ev.TARGET_SCAN,
                        pack_payload(p),
                        None,
                        ev.VALID,
                    )
                )
            elif pick < 7:
                out.append(Event(t, seq, ev.ARRIVE, f"attendee:{a}", None, b"", None, None))
            elif pick < 8:
                body = {
                    "id": f"evt_{seq}",
                    "object": "event",
                    "type": "payment_intent.succeeded",
                    "created": 1_750_000_000,
                    "data": {
                        "object": {
                            "id": f"pi_sim_{seq}",
                            "object": "payment_intent",
                            "amount": 9900,
                            "currency": "usd",
                            "status": "succeeded",
                            "metadata": {
                                "event_id": "1",
                                "quantity": "2",
                                "buyer": f"buyer:{a}",
                                "order_ref": f"o{a}",
                            },
                        }
                    },
                    "livemode": False,
                }
                out.append(
                    Event(
                        t,
                        seq,
                        ev.WEBHOOK,
                        "stripe",
                        ev.TARGET_WEBHOOK,
                        pack_payload(body),
                        None,
                        ev.PROCESSED,
                    )
                )
            elif pick < 9:
                p = {"load": a, "query": {"select": "*", "event_id": "eq.1"}}
                out.append(
                    Event(
                        t,
                        seq,
                        ev.VIEW,
                        f"viewer:{a % 50}",
                        ev.TARGET_REST_EVENTS,
                        pack_payload(p),
                        None,
                        None,
                    )
                )
            else:
                p = {
                    "amount": 9900,
                    "currency": "usd",
                    "quantity": 2,
                    "event_id": 1,
                    "buyer": f"buyer:{a}",
                    "order_ref": f"o{a}",
                }
                out.append(
                    Event(
                        t,
                        seq,
                        ev.CHECKOUT,
                        f"buyer:{a}",
                        ev.TARGET_PI_CREATE,
                        pack_payload(p),
                        None,
                        None,
                    )
                )
        yield out


def best_of(runs: int, fn: Callable[[], int]) -> tuple[float, int]:
    """Best wall time of `runs` calls (the machine is shared) and the count fn returned."""
    best, count = float("inf"), 0
    for _ in range(runs):
        t0 = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - t0)
    return best, count


def _count_events(path: Path) -> int:
    with open_reader(path) as r:
        n = 0
        for _ in r:
            n += 1
        return n


def _count_rows(path: Path) -> int:
    with open_reader(path) as r:
        return sum(b.num_rows for b in r.batches())


_RSS_CHILD = """
import sys
from traces.io import open_reader

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

before = hwm()
with open_reader(sys.argv[1]) as r:
    n = sum(1 for _ in r)
print(n, before, hwm())
"""


def read_rss_mb(path: Path) -> tuple[float, float]:
    """(peak RSS after imports, peak RSS after reading every event) of a fresh process, in MB."""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
    ).stdout.split()
    return int(out[1]) / 1024, int(out[2]) / 1024


_WRITE_CHILD = """
import sys
from bench.bench_traces import synthetic
from traces.header import TraceHeader
from traces.io import open_writer

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

chunks = synthetic(int(sys.argv[2]))
first = next(chunks)
before = hwm()
with open_writer(sys.argv[1], TraceHeader()) as w:
    w.write_many(first)
    for chunk in chunks:
        w.write_many(chunk)
print(before, hwm())
"""


def write_rss_mb(path: Path, n: int) -> tuple[float, float]:
    """(peak RSS before writing, peak RSS after writing n streamed events) of a fresh process, MB."""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", _WRITE_CHILD, str(path), str(n)],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
    ).stdout.split()
    return int(out[0]) / 1024, int(out[1]) / 1024


def main() -> None:
    """Print write/read rates for both formats, memory while reading, and the floors."""
    n = int(os.environ.get("BENCH_TRACE_EVENTS", "1500000"))
    print(f"command: python -m bench traces   ({n:,} synthetic event-day events, best of 3 reads)")
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-traces-") as tmp:
        paths = {fmt: Path(tmp) / f"day.{fmt}" for fmt in ("parquet", "grt")}
        writers = {fmt: open_writer(p, TraceHeader(source="bench")) for fmt, p in paths.items()}
        spent = dict.fromkeys(paths, 0.0)
        for chunk in synthetic(n):
            for fmt, w in writers.items():
                t0 = time.perf_counter()
                w.write_many(chunk)
                spent[fmt] += time.perf_counter() - t0
        for fmt, w in writers.items():
            t0 = time.perf_counter()
            w.close()
            spent[fmt] += time.perf_counter() - t0
            results[f"{fmt} write"] = n / spent[fmt]
        for fmt, p in paths.items():
            print(
                f"file     {fmt:<8} {p.stat().st_size / 1e6:8.1f} MB  ({p.stat().st_size / n:.0f} bytes/event)"
            )

        for name, fn in (
            ("parquet batches()", lambda: _count_rows(paths["parquet"])),
            ("parquet events", lambda: _count_events(paths["parquet"])),
            ("grt events", lambda: _count_events(paths["grt"])),
            ("grt batches()", lambda: _count_rows(paths["grt"])),
        ):
            secs, count = best_of(3, fn)
            assert count == n, (name, count)
            results[name] = n / secs
        secs, info = best_of(1, lambda: summarize(paths["parquet"]).events)
        results["trace info (parquet)"] = n / secs

        for name, rate in results.items():
            floor = FLOORS.get(name)
            verdict = (
                "" if floor is None else f"   floor {floor:,}: {'OK' if rate >= floor else 'BELOW'}"
            )
            print(f"rate     {name:<22} {rate:>12,.0f} events/s{verdict}")
        for fmt, p in paths.items():
            base, peak = read_rss_mb(p)
            print(
                f"memory   read all of {fmt:<8} peak RSS {peak:6.0f} MB (after imports {base:.0f} MB)"
            )
        for fmt, p in paths.items():
            small = write_rss_mb(p, n // 4)[1]
            base, peak = write_rss_mb(p, n)
            print(
                f"memory   write {fmt:<8}       peak RSS {peak:6.0f} MB for {n:,} events,"
                f" {small:.0f} MB for {n // 4:,} (before writing {base:.0f} MB)"
            )


if __name__ == "__main__":
    main()
