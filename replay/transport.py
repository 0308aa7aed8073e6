"""Transport: send built requests over keep-alive HTTP/1.1 connections, one pool per origin.

The hot path of replay. :class:`RawTransport` writes each request's bytes straight to an idle
keep-alive connection (an ``asyncio.Protocol``, no task or future per request) and parses the
response with a minimal HTTP/1.1 parser; it sustains several times aiohttp's request rate in one
process (``python -m bench replay`` measures both). :class:`AiohttpTransport` has the same
interface on aiohttp's client, kept for comparison and as a fallback (``--transport aiohttp``).

Both call ``done(sent_t, done_t, status, body, bytes_sent, bytes_received, error)`` once per
request, times in ``time.monotonic()`` seconds (not ``loop.time()``: uvloop's is cached to the
millisecond); ``status`` is 0 and ``error`` set when no HTTP response arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import urlsplit

now = time.monotonic
Done = Callable[[float, float, int, bytes, int, int, "str | None"], None]


class Request(NamedTuple):
    """One HTTP request a builder made: where, what, and the exact body bytes."""

    origin: str  # scheme://host[:port], no path
    method: str
    path: str  # path and query string, starting with /
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""


def split_origin(origin: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an origin URL, with the scheme's default port."""
    u = urlsplit(origin)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"{origin!r}: expected an http:// or https:// URL")
    return u.scheme, u.hostname, u.port or (443 if u.scheme == "https" else 80)


def encode_request(req: Request, host_header: str) -> bytes:
    """The request as HTTP/1.1 bytes on a keep-alive connection."""
    lines = [f"{req.method} {req.path} HTTP/1.1\r\nHost: {host_header}\r\n"]
    lines.extend(f"{k}: {v}\r\n" for k, v in req.headers)
    if req.body or req.method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(req.body)}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1") + req.body


class _Conn(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    __slots__ = (
        "pool",
        "transport",
        "buf",
        "done",
        "sent_t",
        "nsent",
        "head_len",
        "clen",
        "chunked",
        "close_after",
        "status",
        "closed",
        "timer",
        "reused",
        "data",
    )

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.done: Done | None = None
        self.sent_t = 0.0
        self.nsent = 0
        self.head_len = -1
        self.clen = -1
        self.chunked = False
        self.close_after = False
        self.status = 0
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None
        self.reused = False
        self.data = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes, done: Done, sent_t: float | None = None) -> None:
        loop = self.pool.loop
        self.done = done
        self.data = data
        self.sent_t = now() if sent_t is None else sent_t
        self.nsent = len(data)
        self.head_len = -1
        self.buf.clear()
        self.timer = loop.call_at(loop.time() + self.pool.timeout, self._timeout)
        self.transport.write(data)  # type: ignore[union-attr]

    def _timeout(self) -> None:
        self.timer = None
        self._fail(f"timeout after {self.pool.timeout:g} s", retry=False)
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.done is None:  # bytes nobody asked for: the server is confused; drop the connection
            self.closed = True
            self.transport.close()  # type: ignore[union-attr]
            return
        self.buf += data
        buf = self.buf
        if self.head_len < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head_len = end + 4
            self._parse_head(bytes(buf[:end]))
        if self.chunked:
            body = _dechunk(buf, self.head_len)
            if body is None:
                return
            self._finish(body, len(buf))
        elif self.clen >= 0 and len(buf) - self.head_len >= self.clen:
            self._finish(
                bytes(buf[self.head_len : self.head_len + self.clen]), self.head_len + self.clen
            )
        # else: the body runs to the end of the connection (connection_lost finishes it)

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        try:
            self.status = int(lines[0][9:12])
        except ValueError:
            self.status = 0
        self.clen = -1
        self.chunked = False
        self.close_after = lines[0].startswith(b"HTTP/1.0")
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            n = name.strip().lower()
            if n == b"content-length":
                self.clen = int(value)
            elif n == b"transfer-encoding":
                self.chunked = b"chunked" in value.lower()
            elif n == b"connection":
                v = value.strip().lower()
                self.close_after = (
                    v == b"close" if v in (b"close", b"keep-alive") else self.close_after
                )
        if self.status in (204, 304) or 100 <= self.status < 200:
            self.clen = 0

    def _finish(self, body: bytes, nrecv: int) -> None:
        done = self.done
        self.done = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        t = now()
        if self.close_after or len(self.buf) > nrecv:
            self.closed = True
            self.transport.close()  # type: ignore[union-attr]
            done(self.sent_t, t, self.status, body, self.nsent, nrecv, None)  # type: ignore[misc]
        else:
            self.reused = True
            done(self.sent_t, t, self.status, body, self.nsent, nrecv, None)  # type: ignore[misc]
            self.pool.release(self)

    def _fail(self, error: str, retry: bool) -> None:
        done = self.done
        if done is None:
            return
        self.done = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if retry and self.reused and not self.buf:
            # a kept-alive connection the server had closed before our request reached it: the
            # request was not processed, so send it once more on a fresh connection
            self.pool.send(self.data, done, self.sent_t, retried=True)
            return
        done(self.sent_t, now(), 0, b"", self.nsent, len(self.buf), error)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        with contextlib.suppress(ValueError):
            self.pool.idle.remove(self)
        self.pool.conns -= 1
        if self.done is not None:
            if self.head_len >= 0 and self.clen < 0 and not self.chunked:
                self._finish(bytes(self.buf[self.head_len :]), len(self.buf))
            else:
                self._fail(f"connection closed{': ' + str(exc) if exc else ''}", retry=True)
        self.pool.pump()


def _dechunk(buf: bytearray, start: int) -> bytes | None:
    """The body of a complete chunked message in buf[start:], or None if it is not complete yet."""
    out = bytearray()
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n\r\n", pos - 2)
            return bytes(out) if end >= 0 else None
        if len(buf) < pos + size + 2:
            return None
        out += buf[pos : pos + size]
        pos += size + 2


class _Pool:
    """Keep-alive connections to one origin: an idle one, else a new one, else (at the cap) a queue.

    A queued request's ``sent_t`` is when it is written (as k6, http_req_duration excludes time
    blocked waiting for a connection; that time shows in schedule_lag and latency).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        origin: str,
        timeout: float,
        max_conns: int | None = None,
    ) -> None:
        scheme, self.host, self.port = split_origin(origin)
        self.loop = loop
        self.timeout = timeout
        self.ssl = ssl.create_default_context() if scheme == "https" else None
        default = 443 if scheme == "https" else 80
        self.host_header = self.host if self.port == default else f"{self.host}:{self.port}"
        self.idle: list[_Conn] = []
        self.conns = 0  # open or opening
        self.max_conns = max_conns
        self.queue: deque[tuple[bytes, Done, float | None, bool]] = deque()

    def send(
        self, data: bytes, done: Done, sent_t: float | None = None, retried: bool = False
    ) -> None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                if retried:
                    conn.reused = False  # no second retry
                conn.send(data, done, sent_t)
                return
        if self.max_conns is None or self.conns < self.max_conns:
            self.conns += 1
            self.loop.create_task(self._connect_and_send(data, done, sent_t, retried))
        else:
            self.queue.append((data, done, sent_t, retried))

    def release(self, conn: _Conn) -> None:
        """A connection is free again: give it the oldest queued request, or keep it idle."""
        if conn.closed:
            return
        if self.queue:
            data, done, sent_t, retried = self.queue.popleft()
            if retried:
                conn.reused = False
            conn.send(data, done, sent_t)
        else:
            self.idle.append(conn)

    def pump(self) -> None:
        """Open connections for queued requests while under the cap."""
        while self.queue and (self.max_conns is None or self.conns < self.max_conns):
            data, done, sent_t, retried = self.queue.popleft()
            self.conns += 1
            self.loop.create_task(self._connect_and_send(data, done, sent_t, retried))

    async def _connect_and_send(
        self, data: bytes, done: Done, sent_t: float | None, retried: bool
    ) -> None:
        t0 = now()
        try:
            conn = await self._connect()
        except (TimeoutError, OSError) as e:
            self.conns -= 1
            done(
                t0 if sent_t is None else sent_t,
                now(),
                0,
                b"",
                0,
                0,
                f"connect {self.host}:{self.port}: {e}",
            )
            self.pump()
            return
        if retried:
            conn.reused = False  # no second retry
        conn.send(data, done, sent_t)

    async def _connect(self) -> _Conn:
        _, conn = await asyncio.wait_for(
            self.loop.create_connection(
                lambda: _Conn(self),
                self.host,
                self.port,
                ssl=self.ssl,
                server_hostname=self.host if self.ssl else None,
            ),
            self.timeout,
        )
        return conn

    async def warm(self, n: int) -> None:
        """Open up to n connections now (at most the cap) so the first requests find them idle."""
        if self.max_conns is not None:
            n = min(n, self.max_conns - self.conns)
        self.conns += n
        got = await asyncio.gather(*(self._connect() for _ in range(n)), return_exceptions=True)
        for c in got:
            if isinstance(c, _Conn):
                self.idle.append(c)
            else:  # best effort: requests open connections on demand and record their own errors
                self.conns -= 1

    def close(self) -> None:
        for c in self.idle:
            if c.transport is not None:
                c.transport.close()
        self.idle.clear()


class RawTransport:
    """Keep-alive HTTP/1.1 on asyncio protocols: the fastest path (the default)."""

    name = "raw"

    def __init__(self, timeout: float = 60.0, max_connections: int | None = None) -> None:
        self.timeout = timeout
        self.max_connections = max_connections
        self.pools: dict[str, _Pool] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def _pool(self, origin: str) -> _Pool:
        pool = self.pools.get(origin)
        if pool is None:
            pool = self.pools[origin] = _Pool(
                self.loop or asyncio.get_running_loop(), origin, self.timeout, self.max_connections
            )
        return pool

    async def start(self, origins: dict[str, int]) -> None:
        """Open `n` keep-alive connections to each origin before the run starts."""
        self.loop = asyncio.get_running_loop()
        for origin, n in origins.items():
            await self._pool(origin).warm(n)

    def send(self, req: Request, done: Done) -> None:
        """Write the request now on an idle connection (or a new one); `done` gets the outcome."""
        pool = self._pool(req.origin)
        pool.send(encode_request(req, pool.host_header), done)

    def send_bytes(self, origin: str, data: bytes, done: Done) -> None:
        """Send a request already encoded with encode_request (the bench and prebuilt paths)."""
        self._pool(origin).send(data, done)

    def host_header(self, origin: str) -> str:
        """The Host header value for an origin."""
        return self._pool(origin).host_header

    async def close(self) -> None:
        """Close every idle connection."""
        for p in self.pools.values():
            p.close()


class AiohttpTransport:
    """The same interface on aiohttp's client (a task per request): for comparison and fallback."""

    name = "aiohttp"

    def __init__(self, timeout: float = 60.0, max_connections: int | None = None) -> None:
        self.timeout = timeout
        self.max_connections = max_connections
        self.session = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self, origins: dict[str, int]) -> None:
        """Create the session (connections open on first use)."""
        import aiohttp

        self.loop = asyncio.get_running_loop()
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=self.max_connections or 0),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        )

    def send(self, req: Request, done: Done) -> None:
        """Start the request as a task; `done` gets the outcome."""
        self.loop.create_task(self._send(req, done))  # type: ignore[union-attr]

    async def _send(self, req: Request, done: Done) -> None:
        t0 = now()
        nsent = (
            len(req.body) + sum(len(k) + len(v) + 4 for k, v in req.headers) + len(req.path) + 16
        )
        try:
            async with self.session.request(  # type: ignore[union-attr]
                req.method, req.origin + req.path, headers=list(req.headers), data=req.body or None
            ) as r:
                body = await r.read()
                nrecv = len(body) + sum(len(k) + len(v) + 4 for k, v in r.raw_headers) + 17
                done(t0, now(), r.status, body, nsent, nrecv, None)  # type: ignore[union-attr]
        except Exception as e:  # noqa: BLE001 - every failure is a result row, not a crash
            done(
                t0,
                now(),
                0,
                b"",
                nsent,
                0,
                f"{type(e).__name__}: {e}" if str(e) else type(e).__name__,
            )  # type: ignore[union-attr]

    async def close(self) -> None:
        """Close the session."""
        if self.session is not None:
            await self.session.close()


def make_transport(
    name: str, timeout: float = 60.0, max_connections: int | None = None
) -> RawTransport | AiohttpTransport:
    """The transport called `name` (raw | aiohttp), with at most max_connections per origin."""
    if name == "raw":
        return RawTransport(timeout, max_connections)
    if name == "aiohttp":
        return AiohttpTransport(timeout, max_connections)
    raise ValueError(f"transport {name!r}: expected raw or aiohttp")
