"""The stand-in in its own process: no GIL shared with the caller (a replay measuring latency).

`with standin_in_process(inventory=...) as s:` starts `python -m staging.process`, passes the
configuration (secrets included) on stdin, reads the URL and keys back from its stdout, and stops
it with SIGTERM (it also stops when its stdin closes, so it never outlives its parent).
The object it yields has the same face as ThreadedStandIn: url, keys, env(), end_state(), stats(),
webhooks_idle(), set_knobs().
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from staging.keys import Keys
from staging.knobs import Knobs, knobs_from_dict
from traces.header import Inventory

_ROOT = Path(__file__).resolve().parents[1]


class ProcessStandIn:
    """A stand-in running in a child process, reached over HTTP (admin endpoints for state and knobs)."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, keys: Keys) -> None:
        self.proc = proc
        self.url = url
        self.keys = keys

    anon_key = property(lambda self: self.keys.anon_key, doc="The legacy JWT anon key.")
    publishable_key = property(
        lambda self: self.keys.publishable_key, doc="The sb_publishable_ key."
    )
    service_key = property(lambda self: self.keys.service_key, doc="The service_role JWT (admin).")
    webhook_secret = property(lambda self: self.keys.webhook_secret, doc="The whsec_ secret.")
    stripe_key = property(lambda self: self.keys.stripe_key, doc="The sk_test_ key it accepts.")
    stripe_base = property(lambda self: self.url, doc="Base address for the stripe client.")

    def env(self) -> dict[str, str]:
        """The environment a replay needs to target this stand-in."""
        return {
            "SUPABASE_URL": self.url,
            "SUPABASE_ANON_KEY": self.anon_key,
            "SUPABASE_SERVICE_ROLE_KEY": self.service_key,
            "STRIPE_TEST_SK": self.stripe_key,
            "STRIPE_API_BASE": self.url,
            "STRIPE_WEBHOOK_SECRET": self.webhook_secret,
        }

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "apikey": self.service_key,
                "Authorization": f"Bearer {self.service_key}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def end_state(self, run_id: str | None = None) -> dict[str, Any]:
        """The end state with traces.projection's keys."""
        q = f"?{urllib.parse.urlencode({'run': run_id})}" if run_id else ""
        return self._admin("GET", "/admin/v1/state" + q)

    run_stats = end_state

    def stats(self) -> dict[str, Any]:
        """The server's own counters."""
        return self._admin("GET", "/admin/v1/stats")

    def set_knobs(self, knobs: Knobs) -> None:
        """Replace the knobs at run time."""
        self._admin("POST", "/admin/v1/knobs?replace=1", knobs.to_dict())

    def webhooks_idle(self, timeout: float | None = 30.0) -> bool:
        """Wait until no webhook delivery is pending; False on timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            d = self.stats().get("webhook_delivery")
            if not d or d.get("pending", 0) == 0:
                return True
            if end is not None and time.monotonic() > end:
                return False
            time.sleep(0.05)


@contextlib.contextmanager
def standin_in_process(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    db: str = ":memory:",
    inventory: Inventory | None = None,
    knobs: Knobs | None = None,
    webhook_secret: str | None = None,
    deliver_webhooks: bool = True,
    startup_timeout: float = 60.0,
) -> Iterator[ProcessStandIn]:
    """Run a stand-in (start_standin's arguments) in a child process for the `with` block."""
    config = {
        "host": host,
        "port": port,
        "db": db,
        "deliver_webhooks": deliver_webhooks,
        "inventory": inventory.to_dict() if inventory is not None else None,
        "knobs": (knobs or Knobs()).to_dict(),
        "webhook_secret": webhook_secret,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "staging.process"],
        cwd=_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(json.dumps(config).encode() + b"\n")
        proc.stdin.flush()
        line = _readline(proc, startup_timeout)
        started = json.loads(line)
        if "error" in started:
            raise RuntimeError(f"stand-in process: {started['error']}")
        yield ProcessStandIn(proc, started["url"], Keys.from_dict(started["keys"]))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(Exception):
            proc.stdin.close()
        with contextlib.suppress(Exception):
            proc.stdout.close()


def _readline(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        raise RuntimeError(f"stand-in process did not start within {timeout:g} s")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"stand-in process exited before starting (exit code {proc.wait()})")
    return line


async def _child(config: dict[str, Any]) -> None:
    from staging.server import start_standin

    loop = asyncio.get_running_loop()
    try:
        standin = await start_standin(
            host=config["host"],
            port=config["port"],
            db=config["db"],
            inventory=Inventory.from_dict(config["inventory"]) if config.get("inventory") else None,
            knobs=knobs_from_dict(config.get("knobs") or {}),
            webhook_secret=config.get("webhook_secret"),
            deliver_webhooks=config.get("deliver_webhooks", True),
        )
    except Exception as exc:  # reported to the parent, which raises it
        sys.stdout.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        sys.stdout.flush()
        return
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_reader(
        sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(1 << 16) else None
    )
    sys.stdout.write(json.dumps({"url": standin.url, "keys": standin.keys.to_dict()}) + "\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        loop.remove_reader(sys.stdin.fileno())
        await standin.stop()


def _main() -> None:
    config = json.loads(sys.stdin.buffer.readline())
    try:
        import uvloop
    except ImportError:
        asyncio.run(_child(config))
    else:
        uvloop.run(_child(config))


if __name__ == "__main__":
    _main()
