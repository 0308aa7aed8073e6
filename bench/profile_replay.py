"""Profile one replay process against the bench's loopback target: CPU per request and where it goes.

Makes a trace of scans (and, with --webhooks, one request in ten a Stripe webhook signed at send
time), starts the loopback capture server (tests/replay/loopback_server.py, its own process), runs
the replay in this process under cProfile (or without it, --no-profile) and prints: requests sent,
the sender's CPU-seconds per request (getrusage of this process alone: what decides the highest
rate one process sustains on a crowded machine, unlike wall-clock figures), schedule_lag p50/p99,
and the top functions by own time.

    python -m bench.profile_replay                       # 60,000 scans offered at 30,000/s
    python -m bench.profile_replay --rate 2000 --seconds 5 --webhooks --no-profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import senders
from bench.bench_replay import ENV, lag_stats, make_trace
from judge.resultlog import read_results
from replay import scheduler
from replay.engine import ReplayConfig, run_replay
from tests.replay.loopback_server import LoopbackServer


def cpu() -> tuple[float, float]:
    """(user, system) CPU-seconds of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=30_000, help="requests/s offered")
    ap.add_argument("--seconds", type=float, default=2.0, help="trace duration")
    ap.add_argument("--webhooks", action="store_true", help="event-day trace: 1 in 10 a webhook")
    ap.add_argument("--no-profile", action="store_true", help="CPU figures without cProfile")
    ap.add_argument("--pacer", default="auto", help="auto | timerfd | loop")
    ap.add_argument("--lead-us", type=float, help="timerfd: wake this long before a deadline")
    ap.add_argument("--top", type=int, default=30, help="functions to print")
    a = ap.parse_args()
    if a.lead_us is not None:
        make = scheduler.make_pacer
        scheduler.make_pacer = lambda kind, spin, _lead: make(kind, spin, a.lead_us / 1e6)
    with (
        tempfile.TemporaryDirectory(prefix="gaterush-profile-") as d,
        LoopbackServer(record=False) as srv,
    ):
        tmp = Path(d)
        trace = tmp / "p.grt"
        if a.webhooks:
            n = len(senders.event_day(trace, a.rate, a.seconds, seed=1))
        else:
            n = make_trace(trace, a.rate, a.seconds, seed=1)
        cfg = ReplayConfig(trace=str(trace), out=str(tmp / "p.grr"), target=srv.url,
                           progress=False, pacer=a.pacer)  # fmt: skip
        env = dict(ENV, STRIPE_WEBHOOK_SECRET="whsec_bench")
        # CPU time, not wall time: a profile of a sender that sleeps between deadlines must not count the sleep
        prof = None if a.no_profile else cProfile.Profile(time.process_time)
        c0 = cpu()
        if prof is not None:
            prof.enable()
        run_replay(cfg, env, progress=None)
        if prof is not None:
            prof.disable()
        (u1, s1), (u0, s0) = cpu(), c0
        spent = u1 - u0 + s1 - s0
        _, table = read_results(tmp / "p.grr")
        p50, p99, achieved = lag_stats(table)
        status = np.asarray(table.column("status").to_numpy())
        print(f"offered {a.rate:,.0f}/s for {a.seconds:g} s: {table.num_rows}/{n} rows, "
              f"{int(np.sum(status != 200))} not 200, achieved {achieved:,.0f}/s; "
              f"schedule_lag p50 {p50:.3f} ms p99 {p99:.3f} ms")  # fmt: skip
        n = max(table.num_rows, 1)
        print(f"sender CPU {spent:.2f} s: {spent / n * 1e6:.1f} us per request ({(u1 - u0) / n * 1e6:.1f} user, "
              f"{(s1 - s0) / n * 1e6:.1f} system)"
              f"{' (under cProfile)' if prof else ''}, {table.num_rows / max(spent, 1e-9):,.0f} requests per CPU-second")  # fmt: skip
        if prof is not None:
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(a.top)
            print(s.getvalue())


if __name__ == "__main__":
    main()
