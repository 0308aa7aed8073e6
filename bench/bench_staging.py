"""Stand-in throughput: the scan RPC and the stripe-webhook function at 64 connections (wrk and hey).

Runs `gaterush staging serve` as its own process on 127.0.0.1, seeded with one event of
300,000 pre-sold tickets, and fires at it for a few seconds per case:
- scan, distinct tickets (wrk + Lua): every request admits a new ticket (the write path);
- scan, one ticket (hey): every request after the first is already_scanned;
- webhook, distinct events (wrk + Lua, pre-signed): each creates an order and its 2 tickets;
- webhook, one event (hey): every request after the first is a duplicate.
Floor: >= 2,000 scans/s on the 2-core machine. Seconds per case: $GATERUSH_BENCH_SECONDS (8).

    python -m bench staging
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import stripe

from staging.process import standin_in_process
from traces.header import Inventory, VenueEvent

CONNECTIONS = 64
TICKETS = 300_000
FLOOR_SCANS_PER_S = 2000.0

SCAN_LUA = """
counter = 0
stride = 1
offset = 0
local threads = {}
function setup(thread)
  thread:set("offset", #threads)
  table.insert(threads, thread)
end
function init(args)
  stride = tonumber(args[1])
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["apikey"] = "__KEY__"
wrk.headers["Authorization"] = "Bearer __KEY__"
function request()
  local n = offset + counter * stride
  counter = counter + 1
  local body = string.format('{"p_ticket_code":"T1-%07d","p_event_id":1,"p_gate":"A","p_lane":"%d"}', n % __TICKETS__, n % 8)
  return wrk.format(nil, nil, nil, body)
end
"""

WEBHOOK_LUA = """
counter = 0
stride = 1
offset = 0
sigs = {}
bodies = {}
local threads = {}
function setup(thread)
  thread:set("offset", #threads)
  table.insert(threads, thread)
end
function init(args)
  stride = tonumber(args[1])
  for line in io.lines("__FILE__") do
    local tab = string.find(line, "\\t", 1, true)
    table.insert(sigs, string.sub(line, 1, tab - 1))
    table.insert(bodies, string.sub(line, tab + 1))
  end
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
function request()
  local i = (offset + counter * stride) % #bodies + 1
  counter = counter + 1
  wrk.headers["Stripe-Signature"] = sigs[i]
  return wrk.format(nil, nil, nil, bodies[i])
end
"""


def _seconds() -> int:
    return int(os.environ.get("GATERUSH_BENCH_SECONDS", "8"))


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def _wrk(url: str, script: Path, seconds: int) -> dict[str, float]:
    cmd = [
        "wrk",
        "-t2",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        url,
        "--",
        "2",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    res = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        res[f"p{pct}_ms"] = _ms(re.search(rf"\s{pct}%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    res["non_2xx"] = float(m.group(1)) if m else 0.0
    res["requests"] = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return res


def _hey(url: str, body: Path, headers: dict[str, str], seconds: int) -> dict[str, float]:
    cmd = [
        "hey",
        "-z",
        f"{seconds}s",
        "-c",
        str(CONNECTIONS),
        "-m",
        "POST",
        "-T",
        "application/json",
        "-D",
        str(body),
    ]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    res = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        res[f"p{pct}_ms"] = float(re.search(rf"{pct}% in ([\d.]+) secs", out).group(1)) * 1e3  # type: ignore[union-attr]
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    res["non_2xx"] = float(sum(n for c, n in codes.items() if not 200 <= c < 300))
    res["requests"] = float(sum(codes.values()))
    return res


def _signed_events(path: Path, secret: str, n: int) -> None:
    now = int(time.time())
    with path.open("w") as fh:
        for i in range(n):
            pi = f"pi_bench{i:07d}"
            ev = {
                "id": f"evt_bench{i:07d}",
                "object": "event",
                "type": "payment_intent.succeeded",
                "created": now,
                "livemode": False,
                "data": {
                    "object": {
                        "id": pi,
                        "object": "payment_intent",
                        "amount": 5000,
                        "currency": "usd",
                        "status": "succeeded",
                        "metadata": {"event_id": "1", "quantity": "2", "buyer": f"buyer:{i}"},
                    }
                },
            }
            body = json.dumps(ev, separators=(",", ":"))
            sig = stripe.WebhookSignature.generate_signature_header(body, secret, now)
            fh.write(f"{sig}\t{body}\n")


def _line(name: str, r: dict[str, float]) -> str:
    return (
        f"  {name:<44} {r['rps']:>9,.0f} req/s   p50 {r['p50_ms']:6.2f} ms   p99 {r['p99_ms']:7.2f} ms"
        f"   ({r['requests']:,.0f} requests, {r['non_2xx']:,.0f} non-2xx)"
    )


def main() -> None:
    """Print the stand-in's scan and webhook throughput at 64 connections, p50/p99, and the floor verdict."""
    missing = [t for t in ("wrk", "hey") if shutil.which(t) is None]
    if missing:
        print(
            f"bench_staging: {' and '.join(missing)} not installed (bash bench/install-tools.sh); skipped"
        )
        return
    seconds = _seconds()
    with tempfile.TemporaryDirectory(prefix="gaterush-bench-staging-") as d:
        tmp = Path(d)
        inventory = Inventory(
            events=(VenueEvent(1, "Bench", TICKETS, TICKETS, 2500),), allow_reentry=False
        )
        with standin_in_process(
            db=str(tmp / "bench.sqlite"), inventory=inventory, deliver_webhooks=False
        ) as standin:
            env = standin.env()
            url = env["SUPABASE_URL"]
            key = env["SUPABASE_ANON_KEY"]
            scan_url = f"{url}/rest/v1/rpc/scan_ticket_atomic"
            hook_url = f"{url}/functions/v1/stripe-webhook"
            print(
                f"stand-in: {url} (own process, uvloop if installed), {TICKETS:,} seeded tickets, "
                f"{CONNECTIONS} connections, {seconds} s per case, {os.cpu_count()} cores shared with the load tool"
            )
            scan_lua = tmp / "scan.lua"
            scan_lua.write_text(
                SCAN_LUA.replace("__KEY__", key).replace("__TICKETS__", str(TICKETS))
            )
            results = {"scan_distinct": _wrk(scan_url, scan_lua, seconds)}
            body = tmp / "scan.json"
            body.write_text(
                json.dumps(
                    {"p_ticket_code": "T1-0000000", "p_event_id": 1, "p_gate": "A", "p_lane": "1"}
                )
            )
            results["scan_same"] = _hey(
                scan_url, body, {"apikey": key, "Authorization": f"Bearer {key}"}, seconds
            )
            events = tmp / "events.tsv"
            _signed_events(events, env["STRIPE_WEBHOOK_SECRET"], 80_000)
            hook_lua = tmp / "hook.lua"
            hook_lua.write_text(WEBHOOK_LUA.replace("__FILE__", str(events)))
            results["webhook_distinct"] = _wrk(hook_url, hook_lua, seconds)
            one = tmp / "one.json"
            first = events.open().readline().rstrip("\n")
            sig, _, payload = first.partition("\t")
            one.write_text(payload)
            results["webhook_duplicate"] = _hey(hook_url, one, {"Stripe-Signature": sig}, seconds)
    print(_line("scan_ticket_atomic, distinct tickets (wrk)", results["scan_distinct"]))
    print(_line("scan_ticket_atomic, one ticket (hey)", results["scan_same"]))
    print(_line("stripe-webhook, distinct events (wrk)", results["webhook_distinct"]))
    print(_line("stripe-webhook, one event duplicated (hey)", results["webhook_duplicate"]))
    scans = min(results["scan_distinct"]["rps"], results["scan_same"]["rps"])
    verdict = "held" if scans >= FLOOR_SCANS_PER_S else "NOT HELD"
    print(
        f"floor: >= {FLOOR_SCANS_PER_S:,.0f} scans/s at {CONNECTIONS} connections: {verdict} (slowest scan case {scans:,.0f}/s)"
    )
    print("command: python -m bench staging")


if __name__ == "__main__":
    main()
