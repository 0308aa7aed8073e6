"""A minimal loopback HTTP/1.1 target that timestamps each request's first byte.

The timestamp is the kernel's receive time of the first segment (SO_TIMESTAMPNS), so it says when
the request reached the server, not when this Python process got around to reading it.

Runs in its own process (so its work does not disturb the sender's timing), on 127.0.0.1 only.
It answers every request with a small JSON body (``{"outcome": "valid"}``, or a PaymentIntent for
``/v1/payment_intents``), records ``(first_byte_monotonic, key)`` per request, where key is the
request's ``p_ticket_code`` (a Stripe event's ``evt_`` id, or else its path), and can stall: requests arriving inside a stall window
are answered when it ends. Control endpoints: ``GET /__stamps[?clear=1]`` (JSON list),
``GET /__record?on=0|1`` and ``GET /__stall?from=T&to=T`` (monotonic seconds). Used by tests/replay and bench/bench_replay.py.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import re
import socket
import struct
import time
import urllib.request
from typing import Any

_CODE = re.compile(rb'"p_ticket_code":"([^"]*)"|"id":"(evt_[^"]*)"')
_PI = re.compile(rb"/v1/payment_intents/([^/ ]+)/confirm")


class _Server(asyncio.Protocol):
    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self.buf = bytearray()
        self.first: float | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes, t: float | None = None) -> None:
        t = time.monotonic() if t is None else t
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
        st["stamps"].append((first, ((m.group(1) or m.group(2)) if m else path).decode()))
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


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


class _SockTransport:
    """The bit of asyncio.Transport _Server uses, on a socket read with kernel receive timestamps."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, proto: _Server
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.proto = proto
        self.closed = False
        proto.transport = self  # type: ignore[assignment]
        loop.add_reader(sock, self.on_readable)

    def on_readable(self) -> None:
        try:
            data, anc, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(16))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, anc = b"", []
        if not data:
            self.close()
            return
        t = None
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= 16:
                sec, nsec = struct.unpack("qq", cdata[:16])
                # the kernel's receive time (CLOCK_REALTIME) on the monotonic clock the sender uses
                t = sec + nsec * 1e-9 - (time.time() - time.monotonic())
        self.proto.data_received(data, t)

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return
        if sent < len(data):  # large control answers only: block until written
            self.sock.setblocking(True)
            try:
                self.sock.sendall(data[sent:])
            finally:
                self.sock.setblocking(False)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.sock)
            self.sock.close()


def _run(port_q: Any, record: bool) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def main() -> None:
        state: dict[str, Any] = {"stamps": [] if record else _Null(), "stall": (0.0, 0.0), "pi": 0}
        loop = asyncio.get_running_loop()
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(4096)
        lsock.setblocking(False)

        def accept() -> None:
            while True:
                try:
                    conn, _ = lsock.accept()
                except (BlockingIOError, InterruptedError):
                    return
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                _SockTransport(loop, conn, _Server(state))

        loop.add_reader(lsock, accept)
        port_q.put(lsock.getsockname()[1])
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
