"""How fast metrics, thresholds, the summary and the HTML report judge a large result table.

Run: python -m bench metrics   (GATERUSH_BENCH_ROWS=N to change the size; default 5,000,000)
"""

from __future__ import annotations

import os
import resource
import time

import numpy as np
import pyarrow as pa

from judge import metrics as m
from judge import report as rep
from judge import summary as summ
from judge import thresholds as th

TARGETS = [
    "rpc:scan_ticket_atomic",
    "fn:stripe-webhook",
    "rest:events",
    "stripe:payment_intents.create",
]


def synthetic(n: int, seed: int = 1) -> pa.Table:
    """n request rows over an hour-long run at n/3600 req/s, lognormal durations, 1% failures."""
    rng = np.random.default_rng(seed)
    scheduled = np.sort(rng.integers(0, 3_600_000_000, n))
    sent = scheduled + rng.integers(0, 2_000, n)
    done = sent + (rng.lognormal(2.5, 0.6, n) * 1000).astype(np.int64)
    status = np.where(rng.random(n) < 0.01, 500, 200).astype(np.int32)
    target = pa.DictionaryArray.from_arrays(
        pa.array(rng.integers(0, len(TARGETS), n).astype(np.int32)), TARGETS
    )
    outcome = pa.array(np.where(rng.random(n) < 0.98, "valid", "already_scanned"))
    return pa.table(
        {
            "seq": np.arange(n),
            "target": target.cast(pa.string()),
            "kind": pa.array(["scan"] * n),
            "actor": pa.nulls(n, pa.string()),
            "scheduled_us": scheduled,
            "sent_us": sent,
            "done_us": done,
            "status": status,
            "error": pa.nulls(n, pa.string()),
            "bytes_sent": np.full(n, 300),
            "bytes_received": np.full(n, 120),
            "outcome": outcome,
            "expect": pa.array(["valid"] * n),
            "metric": pa.nulls(n, pa.string()),
        }
    )


def main() -> None:
    """Print the time of each stage and the peak resident memory."""
    n = int(os.environ.get("GATERUSH_BENCH_ROWS", "5000000"))
    t0 = time.perf_counter()
    table = synthetic(n)
    t1 = time.perf_counter()
    mt = m.from_table(table, scenario="bench")
    t2 = time.perf_counter()
    ts = th.parse_mapping(
        {
            "http_req_duration": ["p(95)<200", "p(99.9)<500", "avg<50", "med<20"],
            "http_req_duration{target:rpc:scan_ticket_atomic}": ["p(95)<200", "p(95)<200 over 10s"],
            "http_req_failed": ["rate<0.02", "rate<0.05 over 30s"],
            "checks": ["rate>0.95"],
        }
    )
    verdicts = th.evaluate(mt, ts)
    t3 = time.perf_counter()
    text = summ.render(mt, verdicts)
    t4 = time.perf_counter()
    page = rep.render_html(mt, verdicts)
    t5 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"rows: {n:,}")
    print(f"synthesise table:            {t1 - t0:6.2f} s")
    print(f"metrics (from_table):        {t2 - t1:6.2f} s  ({n / (t2 - t1) / 1e6:.1f} M rows/s)")
    print(f"9 thresholds (2 windowed):   {t3 - t2:6.2f} s")
    print(f"terminal summary:            {t4 - t3:6.2f} s")
    print(f"HTML report ({len(page) / 1e3:.0f} kB):        {t5 - t4:6.2f} s")
    print(f"total judge (metrics..html): {t5 - t1:6.2f} s; peak RSS {rss:.0f} MB")
    print(
        "verdicts:", ", ".join(f"{'ok' if v.ok else 'FAIL'} {v.threshold.name}" for v in verdicts)
    )
    print(text.splitlines()[-1])


if __name__ == "__main__":
    main()
