"""A minimal loopback HTTP/1.1 target that timestamps each request's first byte.

Runs in its own process (so its work does not disturb the sender's timing), on 127.0.0.1 only.
It answers every request with a small JSON body (``{"outcome": "valid"}``, or a PaymentIntent for
``/v1/payment_intents``), records ``(first_byte_monotonic, key)`` per request, where key is the
request's ``p_ticket_code`` (or its path), and can stall: requests arriving inside a stall window
are answered when it ends. Control endpoints: ``GET /__stamps[?clear=1]`` (JSON list),
``GET /__record?on=0|1`` and ``GET /__stall?from=T&to=T`` (monotonic seconds). Used by tests/replay and bench/bench_replay.py.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import re
import time
import urllib.request
from typing import Any

_CODE = re.compile(rb'"p_ticket_code":"([^"]*)"')
_PI = re.compile(rb"/v1/payment_intents/([^/ ]+)/confirm")


class _Server(asyncio.Protocol):
    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self.buf = bytearray()
        self.first: float | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        t = time.monotonic()
        if not self.buf:
            self.first = t
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end])
            m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            n = int(m.group(1)) if m else 0
            if len(self.buf) < end + 4 + n:
                return
            req = bytes(self.buf[: end + 4 + n])
            del self.buf[: end + 4 + n]
            first = self.first or t
            self.first = t if self.buf else None
            self.answer(req, first)

    def answer(self, req: bytes, first: float) -> None:
        st = self.state
        line = req[: req.find(b"\r\n")]
        path = line.split(b" ")[1] if b" " in line else b"/"
        if path.startswith(b"/__stamps"):
            out = json.dumps(st["stamps"]).encode()
            if b"clear=1" in path:
                st["stamps"].clear()
            return self.reply(out)
        if path.startswith(b"/__record"):
            st["stamps"] = [] if b"on=1" in path else _Null()
            return self.reply(b"{}")
        if path.startswith(b"/__stall"):
            q = dict(kv.split("=") for kv in path.decode().split("?", 1)[1].split("&"))
            st["stall"] = (float(q["from"]), float(q["to"]))
            return self.reply(b"{}")
        m = _CODE.search(req)
        st["stamps"].append((first, (m.group(1) if m else path).decode()))
        if path == b"/v1/payment_intents":
            st["pi"] += 1
            body = json.dumps(
                {
                    "id": f"pi_{st['pi']}",
                    "object": "payment_intent",
                    "status": "requires_payment_method",
                }
            ).encode()
        elif (mp := _PI.search(path)) is not None:
            body = json.dumps(
                {"id": mp.group(1).decode(), "object": "payment_intent", "status": "succeeded"}
            ).encode()
        else:
            body = b'{"outcome":"valid"}'
        s0, s1 = st["stall"]
        if s0 <= first < s1:
            asyncio.get_running_loop().call_at(
                asyncio.get_running_loop().time() + (s1 - time.monotonic()), self.reply, body
            )
        else:
            self.reply(body)

    def reply(self, body: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
                % (len(body), body)
            )


def _run(port_q: Any, record: bool) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def main() -> None:
        state: dict[str, Any] = {"stamps": [] if record else _Null(), "stall": (0.0, 0.0), "pi": 0}
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Server(state), "127.0.0.1", 0, backlog=4096)
        port_q.put(server.sockets[0].getsockname()[1])
        await asyncio.sleep(3600)

    asyncio.run(main())


class _Null(list):
    def append(self, _: Any) -> None:  # type: ignore[override]
        pass


class LoopbackServer:
    """Start the minimal target in a child process on 127.0.0.1; stop it on exit."""

    def __init__(self, record: bool = True) -> None:
        self.record = record
        self.proc: multiprocessing.Process | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LoopbackServer:
        ctx = multiprocessing.get_context("spawn")
        q = ctx.Queue()
        self.proc = ctx.Process(target=_run, args=(q, self.record), daemon=True)
        self.proc.start()
        self.port = q.get(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.join(10)

    def stamps(self, clear: bool = False) -> list[tuple[float, str]]:
        """(first-byte monotonic time, ticket code or path) of every request so far (then forget them)."""
        with urllib.request.urlopen(
            f"{self.url}/__stamps{'?clear=1' if clear else ''}", timeout=60
        ) as r:
            return [tuple(x) for x in json.loads(r.read())]

    def set_recording(self, on: bool) -> None:
        """Start (with an empty list) or stop recording stamps."""
        with urllib.request.urlopen(f"{self.url}/__record?on={int(on)}", timeout=30) as r:
            r.read()

    def stall(self, t_from: float, t_to: float) -> None:
        """Hold the answers of requests arriving in [t_from, t_to) (monotonic) until t_to."""
        with urllib.request.urlopen(f"{self.url}/__stall?from={t_from}&to={t_to}", timeout=30) as r:
            r.read()
