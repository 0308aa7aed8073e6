"""Transport: send built requests over keep-alive HTTP/1.1 connections, one pool per origin.

The hot path of replay. :class:`RawTransport` writes each request's bytes straight to an idle
keep-alive connection (an ``asyncio.Protocol``, no task or future per request) and reads the
response with llhttp (``replay.http1``); it sustains several times aiohttp's request rate in one
process (``python -m bench transport`` measures it). :class:`AiohttpTransport` has the same
interface on aiohttp's client, kept for comparison and as a fallback (``--transport aiohttp``).

Both call ``done(sent_t, done_t, status, body, bytes_sent, bytes_received, error)`` once per
request, times in ``time.monotonic()`` seconds (not ``loop.time()``: uvloop's is cached to the
millisecond); ``status`` is 0 and ``error`` set when no HTTP response arrived. A request is
written at most once: when a connection drops after a request's bytes were written, that request
is an error row (``connection closed``), never sent again (the server may have acted on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

from replay.http1 import (
    Request,
    RequestError,
    ResponseError,
    ResponseReader,
    check_request,
    encode_request,
)

__all__ = [
    "AiohttpTransport",
    "RawTransport",
    "Request",
    "RequestError",
    "encode_request",
    "make_transport",
]

now = time.monotonic
Done = Callable[[float, float, int, bytes, int, int, "str | None"], None]


def split_origin(origin: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an origin URL, with the scheme's default port (an IPv6 host bare)."""
    u = urlsplit(origin)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"{origin!r}: expected an http:// or https:// URL")
    return u.scheme, u.hostname, u.port or (443 if u.scheme == "https" else 80)


def host_header_of(scheme: str, host: str, port: int) -> str:
    """The Host header for a host and port: the port only if not the scheme's, IPv6 in brackets."""
    name = f"[{host}]" if ":" in host else host
    return name if port == (443 if scheme == "https" else 80) else f"{name}:{port}"


CLOSED = "connection closed"


class _Conn(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    __slots__ = (
        "pool",
        "transport",
        "reader",
        "done",
        "sent_t",
        "nsent",
        "nrecv",
        "closed",
    )

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.reader = ResponseReader()
        self.done: Done | None = None
        self.sent_t = 0.0
        self.nsent = 0
        self.nrecv = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.pool.all.add(self)

    def usable(self) -> bool:
        """Open as far as we know: a request written now reaches the socket."""
        return not self.closed and not self.transport.is_closing()  # type: ignore[union-attr]

    def send(self, data: bytes, done: Done, sent_t: float | None = None) -> None:
        self.done = done
        self.sent_t = now() if sent_t is None else sent_t
        self.nsent = len(data)
        self.nrecv = 0
        self.reader.begin(data.startswith(b"HEAD "))
        pool = self.pool
        if pool.sweep is None:  # no timer per request: the pool's sweep finds the ones overdue
            pool.start_sweep()
        self.transport.write(data)  # type: ignore[union-attr]

    def _timeout(self) -> None:
        self._fail(f"timeout after {self.pool.timeout:g} s")
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.done is None:  # bytes nobody asked for: the server is confused; drop the connection
            self.closed = True
            self.transport.close()  # type: ignore[union-attr]
            return
        self.nrecv += len(data)
        try:
            complete = self.reader.feed(data)
        except ResponseError as e:
            self._fail(str(e))
            self.closed = True
            self.transport.abort()  # type: ignore[union-attr]
            return
        if complete:
            self._finish()

    def _finish(self) -> None:
        done = self.done
        self.done = None
        r = self.reader
        t = now()
        body = bytes(r.body)
        if self.closed or not r.keep_alive or r.extra:
            if not self.closed:
                self.closed = True
                self.transport.close()  # type: ignore[union-attr]
            done(self.sent_t, t, r.status, body, self.nsent, self.nrecv, None)  # type: ignore[misc]
        else:
            done(self.sent_t, t, r.status, body, self.nsent, self.nrecv, None)  # type: ignore[misc]
            self.pool.release(self)

    def _fail(self, error: str) -> None:
        done = self.done
        if done is None:
            return
        self.done = None
        done(self.sent_t, now(), 0, b"", self.nsent, self.nrecv, error)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.all.discard(self)
        with contextlib.suppress(ValueError):
            self.pool.idle.remove(self)
        self.pool.conns -= 1
        if self.done is not None:
            if self.reader.eof():  # a body that runs to the end of the connection
                self._finish()
            else:
                # the request's bytes were written: the server may have acted on it, so it is
                # never sent again (a load tester that resends manufactures duplicates)
                self._fail(CLOSED)
        self.pool.pump()


class _Pool:
    """Keep-alive connections to one origin: an idle one, else the queue, served in order by the
    next connection free (a new one opened for it while under the cap, or one released).

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
        self.host_header = host_header_of(scheme, self.host, self.port)
        self.idle: list[_Conn] = []
        self.conns = 0  # open or opening
        self.max_conns = max_conns
        self.queue: deque[tuple[bytes, Done, float | None]] = deque()  # waiting, oldest first
        self.opening = 0  # connections being opened for the queue
        self.all: set[_Conn] = set()  # every open connection (the sweep looks for overdue ones)
        self.sweep: asyncio.TimerHandle | None = None
        # a request times out between timeout and timeout + this (one timer for all, not one each)
        self.sweep_s = min(1.0, max(0.01, timeout / 8))

    def start_sweep(self) -> None:
        """Look for overdue requests every sweep_s while connections are open."""
        self.sweep = self.loop.call_later(self.sweep_s, self._sweep)

    def _sweep(self) -> None:
        self.sweep = None
        t = now() - self.timeout
        for c in [c for c in self.all if c.done is not None and c.sent_t <= t]:
            c._timeout()
        if self.all or self.queue:
            self.start_sweep()

    def send(self, data: bytes, done: Done, sent_t: float | None = None) -> None:
        """Write on an idle connection, else queue the request and open a connection for it.

        Queued requests are written in the order they came, on whichever connection is free
        first (a new one, or one an answer released): a request that waits for a connection is
        never overtaken by a later one that found a free connection, so one actor's requests
        reach the target in the trace's order.
        """
        if not self.queue:
            while self.idle:
                conn = self.idle.pop()
                if conn.usable():  # one that is closing gets nothing written: the request goes on
                    conn.send(data, done, sent_t)
                    return
        self.queue.append((data, done, sent_t))
        self.pump()

    def release(self, conn: _Conn) -> None:
        """A connection is free again: give it the oldest queued request, or keep it idle."""
        if not conn.usable():
            return
        if self.queue:
            conn.send(*self.queue.popleft())
        else:
            self.idle.append(conn)

    def pump(self) -> None:
        """Open a connection for each queued request no opening one will serve, under the cap."""
        while len(self.queue) > self.opening and (
            self.max_conns is None or self.conns < self.max_conns
        ):
            self.conns += 1
            self.opening += 1
            self.loop.create_task(self._open())

    async def _open(self) -> None:
        t0 = now()
        try:
            conn = await self._connect()
        except (TimeoutError, OSError) as e:
            self.conns -= 1
            self.opening -= 1
            self._fail_oldest(t0, f"connect {self.host_header}: {e}")
            self.pump()
            return
        self.opening -= 1
        if not conn.usable():  # closed by the server before we wrote anything: nothing was sent
            self._fail_oldest(t0, CLOSED)
            return
        self.release(conn)

    def _fail_oldest(self, t0: float, error: str) -> None:
        """A connection meant for the queue failed: the oldest queued request gets the error."""
        if self.queue:
            _, done, sent_t = self.queue.popleft()
            done(t0 if sent_t is None else sent_t, now(), 0, b"", 0, 0, error)

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
        if self.sweep is not None:
            self.sweep.cancel()
            self.sweep = None
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
        """Write the request now on an idle connection (or a new one); `done` gets the outcome.

        A request whose head cannot be written as it is (CR/LF in a header value, say) is not
        sent: `done` gets status 0 and the reason, at once.
        """
        pool = self._pool(req.origin)
        try:
            data = encode_request(req, pool.host_header)
        except RequestError as e:
            t = now()
            done(t, t, 0, b"", 0, 0, str(e))
            return
        pool.send(data, done)

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
        """Start the request as a task; `done` gets the outcome (a bad head: at once, as raw's)."""
        try:
            check_request(req)
        except RequestError as e:
            t = now()
            done(t, t, 0, b"", 0, 0, str(e))
            return
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
