"""Recorded traffic: the latency `gaterush record` adds (hey, directly and through the proxy, in one
run) and the speed of the trace transforms in events per second.

Run: python -m bench recorded
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from traces import event as ev
from traces import transforms as tf
from traces.event import Event, pack_payload
from traces.header import Inventory, TraceHeader, VenueEvent

REQUESTS = 4000
CONCURRENCY = 20
EVENTS = 200_000


def _hey(url: str, headers: dict[str, str]) -> list[float]:
    """Per-request latencies in ms from `hey -o csv` (loopback only)."""
    cmd = ["hey", "-n", str(REQUESTS), "-c", str(CONCURRENCY), "-o", "csv"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run(
        [*cmd, url], capture_output=True, text=True, timeout=300, check=True
    ).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    return sorted(float(r["response-time"]) * 1000 for r in rows if r.get("status-code") == "200")


def _pct(sorted_ms: list[float], p: float) -> float:
    if not sorted_ms:
        return float("nan")
    i = p * (len(sorted_ms) - 1)
    lo = int(i)
    hi = min(lo + 1, len(sorted_ms) - 1)
    return sorted_ms[lo] + (sorted_ms[hi] - sorted_ms[lo]) * (i - lo)


def bench_overhead() -> None:
    """p50/p99 of a REST read at the stand-in, directly and through the recorder."""
    from replay.record import recorder_in_thread
    from staging.server import standin_in_thread

    if shutil.which("hey") is None:
        print("recording overhead: skipped (hey not installed: bash bench/install-tools.sh)")
        return
    inv = Inventory(events=(VenueEvent(1, "Final", 1000, 100, 2500),))
    with tempfile.TemporaryDirectory() as tmp, standin_in_thread(inventory=inv) as s:
        out = Path(tmp) / "bench.grt"
        headers = {"apikey": s.anon_key, "Authorization": f"Bearer {s.anon_key}"}
        path = "/rest/v1/events?select=id,name&id=eq.1"
        with recorder_in_thread(s.url, out) as rec:
            _hey(s.url + path, headers)  # warm both
            direct = _hey(s.url + path, headers)
            proxied = _hey(rec.url + path, headers)
            written = rec.stats.written
        size = out.stat().st_size
    print(
        f"recording overhead: GET {path}, hey -n {REQUESTS} -c {CONCURRENCY} (keys in headers, not shown)"
    )
    print(f"  {'':10} {'p50 ms':>8} {'p99 ms':>8} {'ok':>6}")
    for name, lat in (("direct", direct), ("recorded", proxied)):
        print(f"  {name:10} {_pct(lat, 0.5):8.2f} {_pct(lat, 0.99):8.2f} {len(lat):>6}")
    print(
        f"  added by the proxy: p50 {_pct(proxied, 0.5) - _pct(direct, 0.5):+.2f} ms, p99 {_pct(proxied, 0.99) - _pct(direct, 0.99):+.2f} ms"
    )
    print(f"  trace: {written} events written, {size / max(written, 1):.0f} bytes/event")


def _events(n: int) -> list[Event]:
    out = []
    for i in range(n):
        code = ev.ticket_code(1, i % 50_000)
        payload = pack_payload(
            {"ticket_code": code, "event_id": 1, "gate": "A", "lane": i % 8, "direction": "in"}
        )
        out.append(
            Event(
                i * 100,
                i,
                ev.SCAN,
                f"attendee:{i % 50_000}",
                ev.TARGET_SCAN,
                payload,
                None,
                ev.VALID,
            )
        )
    return out


def bench_transforms() -> None:
    """Events per second of each transform over in-memory events (no file I/O)."""
    events = _events(EVENTS)
    header = TraceHeader(
        inventory=Inventory(events=(VenueEvent(1, "Final", 100_000, 50_000, 2500),))
    )
    half = len(events) // 2
    cases = {
        "slice": lambda: tf.slice_trace(header, events, 1_000_000, 15_000_000),
        "speed 3": lambda: tf.speed(header, events, 3),
        "filter --actor": lambda: tf.filter_trace(header, events, actors=["attendee:1*"]),
        "amplify 3": lambda: tf.amplify(header, events, 3, jitter_us=5_000_000),
        "merge 2": lambda: tf.merge(
            [(header, lambda: events[:half]), (header, lambda: events[half:])]
        ),
        "merge --pieces 2": lambda: tf.merge(
            [(header, lambda: events[:half]), (header, lambda: events[half:])], pieces=True
        ),
        "anonymize": lambda: tf.anonymize(header, events, b"bench-key"),
    }
    print(f"transform speed over {EVENTS} scan events (input events per second):")
    for name, make in cases.items():
        t0 = time.perf_counter()
        _, it = make()
        n_out = sum(1 for _ in it)
        dt = time.perf_counter() - t0
        print(f"  {name:18} {EVENTS / dt:>12,.0f} ev/s   ({n_out} out, {dt:.2f} s)")


def main() -> None:
    """Print the recording overhead and the transform speeds."""
    bench_overhead()
    bench_transforms()


if __name__ == "__main__":
    main()
