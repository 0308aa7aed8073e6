"""Result log cost per row: the old msgpack path against the Arrow-native one (issues 13 and 15).

Run: python -m bench resultlog     (GATERUSH_BENCH_ROWS=N rows per run, default 500,000)

CPU seconds (process_time) per row from the scheduler's sink call to a judged table in memory:

- old (gaterush up to commit 35bfc5b): each row a tuple, packed to msgpack by the worker,
  unpacked by the parent for the progress line (a log histogram and the failure rule, row by row),
  appended to a msgpack ``.grr``, read back at the end row by row (type checks, then Python lists,
  then Arrow) and written as Parquet, which ``replay`` then read back to judge.
- new: each row appended to a RowBuffer (one call, each value to its column), taken as one Arrow
  record batch per flush, summarized for the progress line (RowCounts) and sent as its IPC message
  bytes, which the parent appends to the Arrow stream as they are; at the end the stream is read
  memory-mapped and written as Parquet in one write, and that table is what ``replay`` judges.

Both paths are timed for a sharded run (worker and parent in one process here, so their CPU adds
up) and for one process (`_run_here`: no pack/unpack, the same writer). The old path is the code
as it was, kept here (the writer and progress histogram) or still in judge.resultlog (the reader
of msgpack logs, which older files still need).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import pyarrow.parquet as pq

from judge.metrics import request_failed
from judge.resultlog import (
    DROPPED_EVENTS,
    PARQUET_META_KEY,
    ResultHeader,
    ResultWriter,
    batch_message,
    read_results,
    summarize,
)
from judge.rows import RowBuffer
from replay.progress import Progress

FLUSH_ROWS = 1000  # rows per flush in the sharded runs: 5,000 requests/s at FLUSH_S = 0.2 s
HEADER = ResultHeader(run_id="bench", target_url="http://127.0.0.1:1", trace_path="t.grt")


def rows(n: int) -> list[tuple]:
    """Result rows like a scan replay's: 1 in 50 a 503, 1 in 100 dropped, a group each."""
    out = []
    for i in range(n):
        drop = i % 100 == 99
        out.append((i, "rpc:scan_ticket_atomic", "scan", f"attendee:{i % 2000}", i * 200,
                    i * 200 + 40, i * 200 + 900 + i % 300, 0 if drop else (503 if i % 50 == 49 else 200),
                    "dropped: max-in-flight 1 reached" if drop else None, 0 if drop else 312,
                    0 if drop else 96, None if drop else "valid", "valid",
                    DROPPED_EVENTS if drop else None, f"ticket:1/T1-{i:07d}"))  # fmt: skip
    return out


# --- the old path, as it was ---------------------------------------------------------------------


class OldProgress:
    """The old progress line's row-by-row count (a log histogram for its p95)."""

    def __init__(self) -> None:
        self.done = self.errors = self.dropped = 0
        self.hist = [0] * 256

    def on_row(self, row: list | tuple) -> None:
        metric = row[13]
        if metric is None:
            self.done += 1
            if request_failed(row[1], row[7], row[8], row[11], row[12]):
                self.errors += 1
            d = row[6] - row[5]
            self.hist[min(255, int(math.log2(max(0, d) + 1) * 8))] += 1
        elif metric == DROPPED_EVENTS:
            self.dropped += 1


def old_path(data: list[tuple], d: Path, sharded: bool) -> int:
    """The old path end to end; the rows of the table judged."""
    grr, out = d / "old.parquet.grr", d / "old.parquet"
    packer = msgpack.Packer(use_bin_type=True)
    prog = OldProgress()
    f = open(grr, "wb")  # noqa: SIM115 - closed below
    f.write(packer.pack(HEADER.to_dict()))
    if sharded:
        pack = msgpack.Packer(use_bin_type=True).pack
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        packed = bytearray()

        def ship() -> None:  # parent: append the bytes, unpack them for the progress line
            f.write(packed)
            unpacker.feed(bytes(packed))
            for r in unpacker:
                prog.on_row(r)
            packed.clear()

        for i, r in enumerate(data, 1):  # worker: pack each row
            packed.extend(pack(list(r)))
            if i % FLUSH_ROWS == 0:
                ship()
        ship()
    else:
        buf = bytearray()
        last = time.monotonic()
        for r in data:
            buf += packer.pack(list(r))
            prog.on_row(r)
            if time.monotonic() - last >= 0.2:
                f.write(buf)
                buf.clear()
                last = time.monotonic()
        f.write(buf)
    f.write(packer.pack({"end": {"end_us": 1, "rows": len(data)}}))
    f.close()
    header, table = read_results(grr)  # the msgpack reader: row by row, checked, then Arrow
    meta = {PARQUET_META_KEY: json.dumps(header.to_dict()).encode()}
    pq.write_table(table.replace_schema_metadata(meta), out, row_group_size=65536)
    grr.unlink()
    return read_results(out)[1].num_rows  # replay read the Parquet back to judge it


# --- the new path -------------------------------------------------------------------------------


def new_path(data: list[tuple], d: Path, sharded: bool) -> int:
    """The Arrow-native path end to end; the rows of the table judged."""
    out = d / "new.parquet"
    w = ResultWriter(out, HEADER)
    prog = Progress(len(data), 0.0, None)

    def flush() -> None:
        batch = rows_buf.take()
        if batch is None:
            return
        counts = summarize(batch)
        if sharded:  # worker: the batch's bytes and counts; parent: append them as they are
            w.write_message(batch_message(batch), counts.rows)
        else:
            w.write_batch(batch)
        w.flush()
        prog.add(counts)

    rows_buf = RowBuffer(limit=FLUSH_ROWS if sharded else 1 << 30, full=flush)
    append = rows_buf.append
    if sharded:
        for r in data:
            append(*r)
    else:  # flushed on a clock (the run's ticker), as _run_here does
        last = time.monotonic()
        for r in data:
            append(*r)
            if time.monotonic() - last >= 0.2:
                flush()
                last = time.monotonic()
    flush()
    w.close(end_us=1)
    return w.table().num_rows


def cpu_per_row(run: Callable[[list[tuple], Path, bool], int], data: list[tuple], sharded: bool, repeat: int = 3) -> float:  # fmt: skip
    """The best of `repeat` runs, in CPU microseconds per row."""
    best = math.inf
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="gaterush-bench-rl-") as d:
            t0 = time.process_time()
            n = run(data, Path(d), sharded)
            best = min(best, time.process_time() - t0)
        assert n == len(data)
    return best / len(data) * 1e6


def main() -> None:
    n = int(os.environ.get("GATERUSH_BENCH_ROWS", "500000"))
    data = rows(n)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"result log CPU per row, {n:,} rows, best of 3 (load average {load})")
    for sharded in (True, False):
        old = cpu_per_row(old_path, data, sharded)
        new = cpu_per_row(new_path, data, sharded)
        what = "sharded (worker + parent)" if sharded else "one process"
        print(
            f"  {what:26s} old {old:6.2f} us/row   new {new:6.2f} us/row   old/new {old / new:4.1f}x"
        )
    print("command: python -m bench resultlog")


if __name__ == "__main__":
    main()
