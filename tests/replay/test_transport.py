"""The raw keep-alive transport against loopback servers the tests start: framing, reuse, drops."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import uvloop

from judge.resultlog import read_results
from replay import transport as transport_mod
from replay.engine import ReplayConfig, run_replay
from replay.transport import (
    CLOSED,
    AiohttpTransport,
    RawTransport,
    Request,
    host_header_of,
    make_transport,
    split_origin,
)
from tests.replay.loopback_server import LoopbackServer
from traces.event import TARGET_SCAN, Event, pack_payload
from traces.header import TraceHeader
from traces.io import open_writer

Writer = asyncio.StreamWriter
# answer(server, method, headers, body, writer) -> keep the connection open?
Answer = Callable[["Server", bytes, dict[bytes, bytes], bytes, Writer], Awaitable[bool]]


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\n%bContent-Length: %d\r\n\r\n%b" % (extra, len(body), body)


async def echo_id(srv: Server, method: bytes, h: dict, body: bytes, w: Writer) -> bool:
    w.write(ok(h.get(b"x-id", b"")))
    return True


class Server:
    """A loopback HTTP/1.1 server in the test's loop: counts connections and each request's arrivals."""

    def __init__(self, answer: Answer = echo_id, host: str = "127.0.0.1") -> None:
        self.answer = answer
        self.host = host
        self.connections = 0
        self.requests = 0
        self.arrivals: Counter[bytes] = Counter()  # X-Id -> times it arrived
        self.dropped: set[bytes] = set()  # X-Ids read and then not answered
        self.heads: list[bytes] = []
        self.srv: asyncio.AbstractServer | None = None
        self.url = ""

    async def __aenter__(self) -> Server:
        self.srv = await asyncio.start_server(self.handle, self.host, 0)
        port = self.srv.sockets[0].getsockname()[1]
        self.url = f"http://{'[::1]' if ':' in self.host else self.host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.srv.close()  # type: ignore[union-attr]

    async def handle(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head[:-4].split(b"\r\n")
                h = {}
                for line in lines[1:]:
                    k, _, v = line.partition(b":")
                    h[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(h.get(b"content-length", 0)))
                self.requests += 1
                self.heads.append(head)
                if b"x-id" in h:
                    self.arrivals[h[b"x-id"]] += 1
                keep = await self.answer(self, lines[0].split(b" ")[0], h, body, writer)
                await writer.drain()
                if not keep:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def req(
    url: str, i: int | None = None, method: str = "POST", path: str = "/x", headers=()
) -> Request:
    ids = () if i is None else (("X-Id", str(i)),)
    return Request(url, method, path, (*ids, *headers), b"{}" if method == "POST" else b"")


async def send_all(tr, reqs: list[Request], in_flight: int = 1) -> list[list[tuple]]:
    """Send the requests keeping `in_flight` outstanding; the done() calls each got, in order."""
    got: list[list[tuple]] = [[] for _ in reqs]
    sem = asyncio.Semaphore(in_flight)
    finished: list[asyncio.Future] = []
    loop = asyncio.get_running_loop()
    for i, r in enumerate(reqs):
        await sem.acquire()
        fut = loop.create_future()
        finished.append(fut)

        def done(*a, i=i, fut=fut) -> None:
            got[i].append(a)
            if not fut.done():
                fut.set_result(None)
                sem.release()

        tr.send(r, done)
    await asyncio.gather(*finished)
    await asyncio.sleep(0.05)  # a second done() for any request would land here
    return got


def run(answer: Answer, make: Callable[[Server], list[Request]], in_flight: int = 1,
        transport: str = "raw", host: str = "127.0.0.1", **kw) -> tuple[list[tuple], Server]:  # fmt: skip
    """Start a server, send make(server)'s requests through a transport; (one result each, server)."""
    box: dict = {}

    async def main() -> None:
        async with Server(answer, host) as srv:
            tr = make_transport(transport, **kw)
            await tr.start({})
            box["got"] = await send_all(tr, make(srv), in_flight)
            await tr.close()
            box["srv"] = srv

    uvloop.run(main())
    got = box["got"]
    assert all(len(g) == 1 for g in got), "each request gets exactly one done()"
    return [g[0] for g in got], box["srv"]


def statuses(out: list[tuple]) -> list[int]:
    return [o[2] for o in out]


def test_split_origin_and_host_header() -> None:
    assert split_origin("https://x.supabase.co") == ("https", "x.supabase.co", 443)
    assert split_origin("http://127.0.0.1:5") == ("http", "127.0.0.1", 5)
    assert split_origin("http://[::1]:8080") == ("http", "::1", 8080)
    assert host_header_of("http", "::1", 8080) == "[::1]:8080"
    assert host_header_of("https", "x.supabase.co", 443) == "x.supabase.co"
    assert host_header_of("http", "h", 443) == "h:443"
    with pytest.raises(ValueError, match="http"):
        split_origin("ftp://x")


def test_keep_alive_reuses_one_connection() -> None:
    out, srv = run(echo_id, lambda s: [req(s.url, i) for i in range(20)])
    assert statuses(out) == [200] * 20 and [o[3] for o in out] == [b"%d" % i for i in range(20)]
    assert srv.connections == 1 and srv.requests == 20
    sent_t, done_t, status, body, nsent, nrecv, error = out[3]
    assert done_t >= sent_t and error is None and nsent > 0 and nrecv == len(ok(b"3"))


@pytest.mark.parametrize("every", [7, 37])
def test_a_request_is_never_sent_twice_when_the_server_drops_connections(every: int) -> None:
    """The server closes its connection after reading every Nth request, without answering."""

    async def drop_every(srv: Server, method: bytes, h: dict, body: bytes, w: Writer) -> bool:
        if srv.requests % every == 0:
            srv.dropped.add(h[b"x-id"])
            return False
        w.write(ok(h[b"x-id"]))
        return True

    n = 400
    out, srv = run(drop_every, lambda s: [req(s.url, i) for i in range(n)], in_flight=8)
    assert srv.requests == n and max(srv.arrivals.values()) == 1, "no request arrives twice"
    assert len(srv.arrivals) == n and len(srv.dropped) == n // every
    failed = {b"%d" % i for i, o in enumerate(out) if o[2] == 0}
    assert failed == srv.dropped, "the dropped ones, and only they, are error rows"
    assert all(o[6] == CLOSED for o in out if o[2] == 0)
    assert all(o[3] == b"%d" % i and o[6] is None for i, o in enumerate(out) if o[2] == 200)


def test_a_keep_alive_the_server_closed_while_idle_is_not_used() -> None:
    async def close_later(srv: Server, method: bytes, h: dict, body: bytes, w: Writer) -> bool:
        w.write(ok(b"hello"))
        await w.drain()
        await asyncio.sleep(0.05)  # the keep-alive is dropped while idle
        return False

    async def main() -> tuple[list, Server]:
        async with Server(close_later) as srv:
            tr = RawTransport()
            outs = []
            for i in range(3):
                outs += await send_all(tr, [req(srv.url, i)])
                await asyncio.sleep(0.2)
            await tr.close()
            return outs, srv

    outs, srv = uvloop.run(main())
    assert [o[0][2] for o in outs] == [200] * 3 and srv.connections == 3
    assert max(srv.arrivals.values()) == 1


def test_a_request_goes_on_a_new_connection_when_the_idle_one_is_closing() -> None:
    """Nothing of it was written to the closing one, so it may go (once) on a fresh connection."""

    async def main() -> tuple[list, Server]:
        async with Server() as srv:
            tr = RawTransport()
            await tr.start({srv.url: 1})
            tr.pools[srv.url].idle[0].transport.close()  # closing, connection_lost not yet run
            out = await send_all(tr, [req(srv.url, 1)])
            await tr.close()
            return out, srv

    out, srv = uvloop.run(main())
    assert out[0][0][2] == 200 and srv.arrivals == {b"1": 1} and srv.connections == 2


def test_interim_responses_are_skipped() -> None:
    async def hints(srv: Server, method: bytes, h: dict, body: bytes, w: Writer) -> bool:
        w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await w.drain()
        w.write(b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n")
        await w.drain()
        await asyncio.sleep(0.01)
        w.write(b"HTTP/1.1 201 Created\r\nContent-Length: 7\r\n\r\ncreated")
        return True

    out, srv = run(hints, lambda s: [req(s.url, i) for i in range(3)])
    assert statuses(out) == [201] * 3 and {o[3] for o in out} == {b"created"}
    assert srv.connections == 1


def test_chunked_body_in_one_byte_pieces() -> None:
    body = bytes(range(256))
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(
        b"1\r\n%b\r\n" % body[i : i + 1] for i in range(len(body))
    ) + b"0\r\n\r\n"  # fmt: skip

    async def trickle(srv: Server, method: bytes, h: dict, b: bytes, w: Writer) -> bool:
        for i in range(len(wire)):
            w.write(wire[i : i + 1])
            await w.drain()
            if i % 64 == 0:
                await asyncio.sleep(0.001)  # let the client read what came so far
        return True

    out, srv = run(trickle, lambda s: [req(s.url, i) for i in range(2)])
    assert statuses(out) == [200, 200] and [o[3] for o in out] == [body, body]
    assert srv.connections == 1


def test_head_answers_with_content_length_have_no_body() -> None:
    async def head_or_get(srv: Server, method: bytes, h: dict, body: bytes, w: Writer) -> bool:
        if method == b"HEAD":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        else:
            w.write(ok(b"got"))
        return True

    out, srv = run(
        head_or_get,
        lambda s: [req(s.url, i, "HEAD" if i % 2 == 0 else "GET") for i in range(4)],
        timeout=5,
    )
    assert statuses(out) == [200] * 4 and [o[3] for o in out] == [b"", b"got", b"", b"got"]
    assert srv.connections == 1  # the GETs read their own answers on the same connection


@pytest.mark.parametrize("value", [b"keep-alive, close", b"close", b"Keep-Alive, Close"])
def test_connection_close_in_a_token_list_closes(value: bytes) -> None:
    async def closing(srv: Server, method: bytes, h: dict, body: bytes, w: Writer) -> bool:
        w.write(ok(b"bye", b"Connection: %b\r\n" % value))
        return True  # the server keeps it open: the client must close it

    out, srv = run(closing, lambda s: [req(s.url, i) for i in range(3)])
    assert statuses(out) == [200] * 3 and srv.connections == 3


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_ipv6_loopback_origin() -> None:
    async def echo_host(srv: Server, method: bytes, h: dict, body: bytes, w: Writer) -> bool:
        w.write(ok(h[b"host"]))
        return True

    out, srv = run(echo_host, lambda s: [req(s.url, i) for i in range(2)], host="::1")
    port = srv.url.rsplit(":", 1)[1]
    assert statuses(out) == [200, 200] and out[0][3] == b"[::1]:%b" % port.encode()


def test_an_oversize_response_head_is_an_error_row_and_the_run_goes_on() -> None:
    async def big_head(srv: Server, method: bytes, h: dict, body: bytes, w: Writer) -> bool:
        if h[b"x-id"] == b"1":
            w.write(
                b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100_000 + b"\r\nContent-Length: 0\r\n\r\n"
            )
        else:
            w.write(ok(h[b"x-id"]))
        return True

    out, srv = run(big_head, lambda s: [req(s.url, i) for i in range(3)], timeout=30)
    assert statuses(out) == [200, 0, 200] and [out[0][3], out[2][3]] == [b"0", b"2"]
    assert out[1][6] == "response head larger than 65536 bytes"


def test_an_endless_response_head_is_an_error_not_a_hang() -> None:
    async def endless(srv: Server, method: bytes, h: dict, body: bytes, w: Writer) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(20_000):  # 200 KB of header lines, never ending the head
            w.write(b"X-More: 0123456\r\n" * 10)
            await w.drain()
            if w.is_closing():
                break
        return False

    out, _ = run(endless, lambda s: [req(s.url, 0)], timeout=60)
    assert out[0][2] == 0 and "larger than" in out[0][6]


@pytest.mark.parametrize("transport", ["raw", "aiohttp"])
def test_bad_header_values_are_error_rows_never_sent(transport: str) -> None:
    bad = {
        1: ("X-Gaterush-Actor", "attendee:1\r\nX-Evil: 1"),
        3: ("X-Gaterush-Actor", "attendee:名"),
        4: ("X-Gaterush-Actor", "a\nX-Evil: 2"),
    }

    def make(s: Server) -> list[Request]:
        return [req(s.url, i, headers=(bad[i],) if i in bad else ()) for i in range(6)]

    out, srv = run(echo_id, make, transport=transport)
    assert statuses(out) == [200, 0, 200, 0, 0, 200]
    assert all(o[6].startswith("bad header value in X-Gaterush-Actor") for o in out if not o[2])
    assert set(srv.arrivals) == {b"0", b"2", b"5"} and not any(b"X-Evil" in h for h in srv.heads)


def test_a_replay_with_a_bad_actor_name_counts_the_row_and_goes_on(tmp_path: Path) -> None:
    """An actor name from a recording with CR/LF in it: that row is an error, the others are sent."""
    actors = ["attendee:1", "attendee:2\r\nX-Evil: 1", "attendee:3", "attendee:4\x00"]
    trace = tmp_path / "t.grt"

    def scan(i: int, actor: str) -> Event:
        p = {"ticket_code": f"C{i}", "event_id": 1, "gate": "A", "lane": "1", "direction": "in"}
        return Event(1000 * i, i, "scan", actor, TARGET_SCAN, pack_payload(p), None, "valid")

    with open_writer(trace, TraceHeader(scenario={"name": "t"})) as w:
        w.write_many(scan(i + 1, a) for i, a in enumerate(actors))
    with LoopbackServer() as server:
        cfg = ReplayConfig(
            trace=str(trace), out=str(tmp_path / "r.grr"), target=server.url, progress=False
        )
        result = run_replay(cfg, {"SUPABASE_ANON_KEY": "sb_publishable_test"}, progress=None)
        arrived = sorted(code for _, code in server.stamps())
    _, table = read_results(tmp_path / "r.grr")
    rows = {r["seq"]: r for r in table.to_pylist()}
    assert [rows[s]["status"] for s in (1, 2, 3, 4)] == [200, 0, 200, 0]
    assert rows[2]["error"].startswith("bad header value in X-Gaterush-Actor")
    assert result is not None and result.errors == 2 and arrived == ["C1", "C3"]


def test_timeout_is_a_transport_error() -> None:
    async def hang(srv: Server, method: bytes, h: dict, body: bytes, w: Writer) -> bool:
        await asyncio.sleep(30)
        return False

    out, _ = run(hang, lambda s: [req(s.url, 0)], timeout=0.2)
    assert out[0][2] == 0 and "timeout" in out[0][6]


def test_read_to_eof_bodies() -> None:
    async def eof(srv: Server, method: bytes, h: dict, body: bytes, w: Writer) -> bool:
        w.write(b"HTTP/1.0 200 OK\r\n\r\nuntil-close")
        return False

    out, srv = run(eof, lambda s: [req(s.url, i) for i in range(2)])
    assert [o[3] for o in out] == [b"until-close"] * 2 and srv.connections == 2


def test_a_truncated_body_is_connection_closed() -> None:
    async def short(srv: Server, method: bytes, h: dict, body: bytes, w: Writer) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        return False

    out, _ = run(short, lambda s: [req(s.url, 0)])
    assert out[0][2] == 0 and out[0][6] == CLOSED


def test_connection_refused_is_a_transport_error() -> None:
    out: list = []

    async def main() -> None:
        tr = RawTransport(timeout=2)
        fut = asyncio.get_running_loop().create_future()
        tr.send(Request("http://127.0.0.1:9", "GET", "/", ()), lambda *a: fut.set_result(a))
        out.append(await fut)

    uvloop.run(main())
    assert out[0][2] == 0 and "connect 127.0.0.1:9" in out[0][6]


def test_connection_cap_queues_requests() -> None:
    box: dict = {}

    async def main() -> None:
        async with Server() as srv:
            tr = RawTransport(max_connections=2)
            got = await send_all(tr, [req(srv.url, i) for i in range(10)], in_flight=10)
            box.update(got=got, conns=tr.pools[srv.url].conns, srv=srv)
            await tr.close()

    uvloop.run(main())
    assert [g[0][2] for g in box["got"]] == [200] * 10
    assert box["conns"] <= 2 and box["srv"].connections == 2


def test_a_request_waiting_for_a_connection_is_not_overtaken(monkeypatch) -> None:
    """Request 1 waits for a slow new connection; connection 0 is released meanwhile and request 2
    comes: 1 goes out first (on connection 0), 2 after it. One actor's order survives the pool."""
    box: dict = {}
    real_connect = transport_mod._Pool._connect
    calls = 0

    async def slow_second_connect(self):
        nonlocal calls
        calls += 1
        if calls == 2:
            await asyncio.sleep(0.3)
        return await real_connect(self)

    monkeypatch.setattr(transport_mod._Pool, "_connect", slow_second_connect)

    async def answer(srv: Server, method: bytes, h: dict, body: bytes, w: Writer) -> bool:
        if h.get(b"x-id") == b"0":
            await asyncio.sleep(0.1)  # request 0 holds connection 0 for 100 ms
        w.write(ok(h.get(b"x-id", b"")))
        return True

    async def main() -> None:
        async with Server(answer) as srv:
            tr = RawTransport()
            await tr.start({})
            loop = asyncio.get_running_loop()
            finished = []

            def sender(i: int):
                fut = loop.create_future()
                finished.append(fut)
                tr.send(req(srv.url, i), lambda *a: fut.done() or fut.set_result(a))

            sender(0)  # opens connection 0
            await asyncio.sleep(0.05)
            sender(1)  # connection 0 is busy: waits for a new (slow) one
            await asyncio.sleep(0.1)  # connection 0 is free again by now
            sender(2)
            box["got"] = await asyncio.gather(*finished)
            box["order"] = [hd.split(b"X-Id: ")[1].split(b"\r\n")[0] for hd in srv.heads]
            await tr.close()

    uvloop.run(main())
    assert [g[2] for g in box["got"]] == [200, 200, 200]
    assert box["order"] == [b"0", b"1", b"2"]  # before the fix: 0, 2, 1
    assert box["got"][1][0] < box["got"][2][0]  # 1 was written before 2


def test_aiohttp_transport_same_interface() -> None:
    out, _ = run(echo_id, lambda s: [req(s.url, i) for i in range(3)], transport="aiohttp")
    assert statuses(out) == [200] * 3 and [o[3] for o in out] == [b"0", b"1", b"2"]
    assert isinstance(make_transport("aiohttp"), AiohttpTransport)
    with pytest.raises(ValueError, match="raw or aiohttp"):
        make_transport("curl")
