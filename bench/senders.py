"""Senders measured alone, side by side: gaterush and k6, each in its own process, one target.

Each run returns what the receiver saw (first-byte kernel stamps of tests/replay/loopback_server.py
minus the schedule, centred on the median) and what the sender process alone spent: CPU seconds
(getrusage of that process) and peak RSS (VmHWM). Used by bench/bench_replay.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from judge.resultlog import read_results
from tests.replay.loopback_server import LoopbackServer
from traces.event import TARGET_SCAN, TARGET_WEBHOOK, Event, pack_payload
from traces.header import TraceHeader
from traces.io import open_writer

ROOT = Path(__file__).resolve().parent.parent
ENV = {"SUPABASE_ANON_KEY": "sb_publishable_bench", "STRIPE_WEBHOOK_SECRET": "whsec_bench"}
PATH = "/rest/v1/rpc/scan_ticket_atomic"


@dataclass(frozen=True, slots=True)
class Run:
    """One sender at one rate: receiver-side error (ms, centred on the median) and its cost."""

    sender: str
    rate: float
    seconds: float
    err_ms: np.ndarray  # arrival - schedule - median, in schedule order
    expected: int
    cpu_s: float  # user + system CPU of the sender process
    rss_mb: float  # its peak resident set
    load: float  # 1-minute load average at the end
    steal_ms: float = 0.0  # time the hypervisor ran something else on this VM's CPUs meanwhile
    own_ms: np.ndarray | None = None  # gaterush's own schedule lag (sent - scheduled, its log)

    @property
    def received(self) -> int:
        """Requests the target saw."""
        return len(self.err_ms)

    def pct(self, q: float) -> float:
        """A percentile of |error| in ms."""
        return float(np.percentile(np.abs(self.err_ms), q)) if len(self.err_ms) else float("inf")

    @property
    def per_cpu_s(self) -> float:
        """Requests sent per CPU-second of the sender."""
        return self.received / max(self.cpu_s, 1e-9)

    def holds(self, p99_ms: float = 10.0) -> bool:
        """Every request arrived (but one or two at the run's edges), with p99 error <= p99_ms.

        k6's constant-arrival-rate starts one iteration more or less than rate x duration at the
        edges of its run (1,999 of 2,000): that is not a sender falling behind, which drops many.
        """
        return self.received >= self.expected - 2 and self.pct(99) <= p99_ms

    def line(self) -> str:
        """One line of figures."""
        return (f"{self.sender:<8} {self.rate:>7,.0f}/s  p50 {self.pct(50):6.3f}  p99 {self.pct(99):7.3f}  "
                f"p99.9 {self.pct(99.9):7.3f}  max {self.pct(100):8.3f} ms  "
                f"{self.per_cpu_s:>7,.0f} req/CPU-s  {self.cpu_s / self.seconds:4.2f} cores  "
                f"RSS {self.rss_mb:4.0f} MB  got {self.received}/{self.expected}  load {self.load:.2f}"
                f"{self.why()}")  # fmt: skip

    def why(self) -> str:
        """Where a tail comes from: the sender's own lag (a request written late) and the VM's
        steal time (its CPUs taken by the host); a receiver-side tail with neither came after
        the write, on the kernel's way to the receiver."""
        own = ""
        if self.own_ms is not None and len(self.own_ms):
            own = (
                f"  own lag p99 {np.percentile(self.own_ms, 99):.3f} max {self.own_ms.max():.3f} ms"
            )
        return f"{own}  steal {self.steal_ms:.0f} ms"


def event_day(path: Path, rate: float, seconds: float, seed: int = 1) -> dict[str, int]:
    """An event-day trace at `rate` requests/s: bursts, groups, 1 in 10 a Stripe webhook.

    Groups (1, 2 or 4 people, a few ms apart) arrive with exponential gaps at a rate that swings
    +-50% over 2 s (gate rushes); each scan follows an untargeted ``arrive``; every tenth request
    is a ``fn:stripe-webhook`` event, signed at send time. Returns request key -> t_us (the key the
    loopback server records: ticket code or event id).
    """
    rng = np.random.default_rng(seed)
    mean_group = 0.7 * 1 + 0.2 * 2 + 0.1 * 4
    peak = 1.5 * rate / mean_group  # groups/s at the top of a swing; thinned below it
    m = int(peak * seconds * 1.2) + 16
    t = np.cumsum(rng.exponential(1 / peak, m))
    t = t[t < seconds]
    keep = rng.random(len(t)) < (1 + 0.5 * np.sin(2 * np.pi * t / 2.0)) / 1.5
    t = t[keep]
    sizes = rng.choice([1, 2, 4], p=[0.7, 0.2, 0.1], size=len(t))
    starts = np.repeat(t, sizes)
    first = np.repeat(np.cumsum(sizes) - sizes, sizes)
    gaps = rng.exponential(0.003, len(starts))
    gaps[first] = 0.0  # the group's first scan at the group's time
    offs = np.cumsum(gaps)
    offs -= offs[first]
    ts = np.sort(starts + offs)
    ts = ts[ts < seconds][: int(rate * seconds)]
    keys: dict[str, int] = {}

    def events():
        seq = 0
        for i, x in enumerate(ts):
            t_us = int(x * 1e6)
            if i % 10 == 9:
                eid = f"evt_{seed}_{i}"
                obj = {"id": f"pi_{i}", "object": "payment_intent", "amount": 4500, "currency": "usd",
                       "status": "succeeded", "metadata": {"order": f"o{i}"}}  # fmt: skip
                p = {"id": eid, "object": "event", "type": "payment_intent.succeeded",
                     "created": 1_700_000_000 + i, "data": {"object": obj}}  # fmt: skip
                seq += 1
                keys[eid] = t_us
                yield Event(t_us, seq, "webhook", "stripe", TARGET_WEBHOOK, pack_payload(p), None,
                            "processed")  # fmt: skip
                continue
            code = f"D{seed}_{i}"
            seq += 1
            yield Event(t_us, seq, "arrive", f"attendee:{i}", None, b"", None, None)
            p = {"ticket_code": code, "event_id": 1, "gate": "A", "lane": "1", "direction": "in"}
            seq += 1
            keys[code] = t_us
            yield Event(t_us, seq, "scan", f"attendee:{i}", TARGET_SCAN, pack_payload(p), None,
                        "valid")  # fmt: skip

    with open_writer(path, TraceHeader(scenario={"name": "bench-event-day"})) as w:
        w.write_many(events())
    return keys


def steal_ms() -> float:
    """The VM's steal time so far (all CPUs, /proc/stat), in ms: 0 where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) * 1000 / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _errors(stamps: dict[str, float], schedule: dict[str, float]) -> np.ndarray:
    """Arrival minus schedule in ms for the keys that arrived, in schedule order, centred."""
    keys = sorted((k for k in schedule if k in stamps), key=schedule.get)
    d = np.array([(stamps[k] - schedule[k]) * 1e3 for k in keys])
    return d - np.median(d) if len(d) else d


# The sender alone: its CPU from getrusage around the replay (not the imports), its peak from VmHWM
GATERUSH_CHILD = """
import json, resource, sys
import replay.scheduler as s
kind = sys.argv[4]
if kind != "auto":  # the bench's comparison of pacers
    make = s.make_pacer
    s.make_pacer = lambda _k, spin, lead: make(kind, spin, lead)
from replay.engine import ReplayConfig, run_replay
env = json.loads(sys.argv[5])
r0 = resource.getrusage(resource.RUSAGE_SELF)
run_replay(ReplayConfig(trace=sys.argv[1], out=sys.argv[2], target=sys.argv[3], progress=False), env,
           progress=None)
r1 = resource.getrusage(resource.RUSAGE_SELF)
hwm = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
print(json.dumps({"cpu": r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, "hwm_kb": hwm}))
"""


def gaterush(tmp: Path, server: LoopbackServer, rate: float, seconds: float, pacer: str = "auto",
             seed: int = 1) -> Run:  # fmt: skip
    """Replay an event-day trace at `rate` from a fresh process; what the receiver saw, its cost."""
    trace = tmp / f"g{rate:.0f}.grt"
    keys = event_day(trace, rate, seconds, seed)
    server.set_recording(True)
    steal0 = steal_ms()
    out = subprocess.run([sys.executable, "-c", GATERUSH_CHILD, str(trace), str(tmp / "g.grr"), server.url, pacer,
                          json.dumps(ENV)], capture_output=True, text=True, timeout=seconds * 10 + 120, cwd=ROOT)  # fmt: skip
    steal = steal_ms() - steal0
    stamps = {k: t for t, k in server.stamps(clear=True)}
    server.set_recording(False)
    trace.unlink()
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    m = json.loads(out.stdout.strip().splitlines()[-1])
    sched = {k: t / 1e6 for k, t in keys.items()}  # any origin will do: the errors are centred
    label = "gaterush" if pacer == "auto" else pacer
    _, table = read_results(tmp / "g.grr")
    own = (table.column("sent_us").to_numpy() - table.column("scheduled_us").to_numpy()) / 1e3
    return Run(label, rate, seconds, _errors(stamps, sched), len(keys), m["cpu"], m["hwm_kb"] / 1024,
               os.getloadavg()[0], steal, own)  # fmt: skip


K6_SCRIPT = textwrap.dedent("""
    import http from 'k6/http';
    import exec from 'k6/execution';

    export const options = {
      discardResponseBodies: true,
      scenarios: {
        scans: {
          executor: 'constant-arrival-rate',
          rate: __ENV.RATE, timeUnit: '1s', duration: __ENV.SECONDS + 's',
          preAllocatedVUs: __ENV.VUS, maxVUs: __ENV.MAXVUS,
        },
      },
    };
    const params = { headers: { 'Content-Type': 'application/json', apikey: 'sb_publishable_bench' } };

    export default function () {
      const i = exec.scenario.iterationInTest;
      http.post(__ENV.URL, `{"p_ticket_code":"K${i}","p_event_id":1,"p_gate":"A","p_lane":"1","p_direction":"in"}`, params);
    }
""")


def k6_exe() -> str | None:
    """The k6 binary (the `k6` wheel puts it next to this Python), or None."""
    exe = Path(sys.executable).with_name("k6")
    return str(exe) if exe.exists() else None


def k6_version() -> str:
    """k6's version line (k6 v1.1.0 ...)."""
    out = subprocess.run([k6_exe(), "version"], capture_output=True, text=True, timeout=30).stdout
    return out.split("(")[0].strip()


def k6(tmp: Path, server: LoopbackServer, rate: float, seconds: float) -> Run:
    """k6's constant-arrival-rate at `rate` for `seconds`: what the receiver saw, k6's cost."""
    script = tmp / "k6.js"
    script.write_text(K6_SCRIPT)
    vus = max(10, int(rate // 100))
    env = dict(os.environ, RATE=str(int(rate)), SECONDS=str(int(seconds)), VUS=str(vus),
               MAXVUS=str(max(100, vus * 10)), URL=server.url + PATH, K6_NO_USAGE_REPORT="true")  # fmt: skip
    server.set_recording(True)
    steal0 = steal_ms()
    proc = subprocess.Popen([k6_exe(), "run", "--quiet", "--no-summary", "--no-usage-report", str(script)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp)  # fmt: skip
    hwm = 0
    status = Path(f"/proc/{proc.pid}/status")
    while True:  # VmHWM of k6 itself (a child's ru_maxrss would carry this process's peak)
        with contextlib.suppress(OSError, StopIteration):
            hwm = max(hwm, next(int(ln.split()[1]) for ln in status.read_text().splitlines()
                                if ln.startswith("VmHWM:")))  # fmt: skip
        pid, _, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.05)
    proc.returncode = 0
    stamps = {k: t for t, k in server.stamps(clear=True)}
    server.set_recording(False)
    n = int(rate * seconds)
    arrived = sorted(int(k[1:]) for k in stamps if k.startswith("K") and k[1:].isdigit())
    sched = {f"K{i}": i / rate for i in arrived}  # iteration i is due at i / rate after k6's start
    return Run("k6", rate, seconds, _errors(stamps, sched), n, ru.ru_utime + ru.ru_stime,
               hwm / 1024, os.getloadavg()[0], steal_ms() - steal0)  # fmt: skip


def highest(
    run, start: float = 1000, limit: float = 64_000, steps: int = 8
) -> tuple[float, list[Run]]:
    """The highest rate `run(rate)` holds (all arrive, p99 <= 10 ms): doubling, then bisecting."""
    ok, bad = 0.0, None
    rate = start
    runs: list[Run] = []
    for _ in range(steps):
        r = run(rate)
        runs.append(r)
        if r.holds():
            ok = rate
        else:
            bad = rate
        if bad is None:
            if rate * 2 > limit:
                break
            rate *= 2
        else:
            if bad - ok <= max(250, ok / 10):
                break
            rate = (ok + bad) // 2
    return ok, runs
