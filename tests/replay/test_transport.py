"""The raw keep-alive transport: response framing, connection reuse, retries, caps, timeouts."""

from __future__ import annotations

import asyncio

import pytest
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.transport import (
    AiohttpTransport,
    RawTransport,
    Request,
    _dechunk,
    encode_request,
    make_transport,
    split_origin,
)


def test_encode_request() -> None:
    req = Request("http://h:8080", "POST", "/a?b=1", (("X-A", "1"),), b"{}")
    assert (
        encode_request(req, "h:8080")
        == b"POST /a?b=1 HTTP/1.1\r\nHost: h:8080\r\nX-A: 1\r\nContent-Length: 2\r\n\r\n{}"
    )
    get = encode_request(Request("http://h", "GET", "/", ()), "h")
    assert get == b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def test_split_origin() -> None:
    assert split_origin("https://x.supabase.co") == ("https", "x.supabase.co", 443)
    assert split_origin("http://127.0.0.1:5") == ("http", "127.0.0.1", 5)
    with pytest.raises(ValueError, match="http"):
        split_origin("ftp://x")


@settings(max_examples=200)
@given(st.lists(st.binary(min_size=1, max_size=20), max_size=6), st.data())
def test_dechunk_is_none_until_complete(chunks: list[bytes], data: st.DataObject) -> None:
    wire = b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    cut = data.draw(st.integers(min_value=0, max_value=len(wire) - 1))
    assert _dechunk(bytearray(b"HEAD" + wire[:cut]), 4) is None
    assert _dechunk(bytearray(b"HEAD" + wire), 4) == b"".join(chunks)


class Behaviour:
    """What the in-test server does with each request."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.connections = 0
        self.requests = 0


async def serve(b: Behaviour) -> tuple[asyncio.AbstractServer, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        b.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                n = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        n = int(line.split(b":")[1])
                await reader.readexactly(n)
                b.requests += 1
                if b.mode == "hang":
                    await asyncio.sleep(30)
                elif b.mode == "chunked":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n"
                    )
                elif b.mode == "eof":
                    writer.write(b"HTTP/1.0 200 OK\r\n\r\nuntil-close")
                    await writer.drain()
                    writer.close()
                    return
                else:
                    writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello")
                await writer.drain()
                if b.mode == "close-after":  # a keep-alive the server drops silently
                    await asyncio.sleep(0.05)
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"


def exchange(
    mode: str, n: int = 1, gap: float = 0.0, transport: str = "raw", **kw
) -> tuple[list[tuple], Behaviour]:
    b = Behaviour(mode)
    out: list[tuple] = []

    async def main() -> None:
        srv, url = await serve(b)
        tr = make_transport(transport, **kw)
        await tr.start({})
        for _ in range(n):
            fut = asyncio.get_running_loop().create_future()
            tr.send(Request(url, "POST", "/x", (), b"{}"), lambda *a, f=fut: f.set_result(a))
            out.append(await fut)
            await asyncio.sleep(gap)
        await tr.close()
        srv.close()

    uvloop.run(main())
    return out, b


def test_keep_alive_reuses_one_connection() -> None:
    out, b = exchange("plain", n=20)
    assert [o[2] for o in out] == [201] * 20 and {o[3] for o in out} == {b"hello"}
    assert b.connections == 1 and b.requests == 20
    sent_t, done_t, status, body, nsent, nrecv, error = out[0]
    assert (
        done_t >= sent_t
        and error is None
        and nsent > 0
        and nrecv == len(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello")
    )


def test_chunked_and_read_to_eof_bodies() -> None:
    out, _ = exchange("chunked", n=2)
    assert [o[3] for o in out] == [b"abcdef", b"abcdef"]
    out, b = exchange("eof", n=2)
    assert [o[3] for o in out] == [b"until-close"] * 2 and b.connections == 2


def test_a_dropped_keep_alive_is_retried_on_a_new_connection() -> None:
    out, b = exchange("close-after", n=3, gap=0.01)
    assert [o[2] for o in out] == [201, 201, 201] and all(o[6] is None for o in out)


def test_timeout_is_a_transport_error() -> None:
    out, _ = exchange("hang", n=1, timeout=0.2)
    assert out[0][2] == 0 and "timeout" in out[0][6]


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
    b = Behaviour("plain")
    res: list = []

    async def main() -> None:
        srv, url = await serve(b)
        tr = RawTransport(max_connections=2)
        futs = []
        for _ in range(10):
            fut = asyncio.get_running_loop().create_future()
            tr.send(Request(url, "GET", "/", ()), lambda *a, f=fut: f.set_result(a))
            futs.append(fut)
        res.extend(await asyncio.gather(*futs))
        assert tr.pools[url].conns <= 2
        await tr.close()
        srv.close()

    uvloop.run(main())
    assert [r[2] for r in res] == [201] * 10 and b.connections == 2


def test_aiohttp_transport_same_interface() -> None:
    out, b = exchange("plain", n=3, transport="aiohttp")
    assert [o[2] for o in out] == [201] * 3 and [o[3] for o in out] == [b"hello"] * 3
    assert isinstance(make_transport("aiohttp"), AiohttpTransport)
    with pytest.raises(ValueError, match="raw or aiohttp"):
        make_transport("curl")
