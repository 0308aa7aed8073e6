"""The transport's HTTP/1.1 layer without sockets: request heads and the response reader."""

from __future__ import annotations

import re

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.http1 import (
    MAX_HEAD,
    Request,
    RequestError,
    ResponseError,
    ResponseReader,
    encode_request,
)


def test_encode_request() -> None:
    req = Request("http://h:8080", "POST", "/a?b=1", (("X-A", "1"),), b"{}")
    assert (
        encode_request(req, "h:8080")
        == b"POST /a?b=1 HTTP/1.1\r\nHost: h:8080\r\nX-A: 1\r\nContent-Length: 2\r\n\r\n{}"
    )
    get = encode_request(Request("http://h", "GET", "/", ()), "h")
    assert get == b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    assert encode_request(Request("http://h", "GET", "/", (("X-Actor", "Zoë"),)), "h").endswith(
        b"X-Actor: Zo\xeb\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("headers", "path", "error"),
    [
        ((("X-Gaterush-Actor", "attendee:1\r\nX-Evil: 1"),), "/", "bad header value in X-Gaterush-Actor"),
        ((("X-Gaterush-Actor", "a\nb"),), "/", "bad header value in X-Gaterush-Actor"),
        ((("X-Gaterush-Actor", "a\rb"),), "/", "bad header value in X-Gaterush-Actor"),
        ((("X-Gaterush-Actor", "a\0b"),), "/", "bad header value in X-Gaterush-Actor"),
        ((("X-Gaterush-Actor", "attendee:名"),), "/", "bad header value in X-Gaterush-Actor"),
        ((("X-A", "1"), ("X\r\nEvil", "1")), "/", "bad header name"),
        ((), "/a b", "bad request path"),
        ((), "/a\r\nX-Evil: 1", "bad request path"),
    ],
)  # fmt: skip
def test_a_bad_head_is_refused_by_name(headers, path: str, error: str) -> None:
    secret = "sb_secret_never_shown"
    req = Request("http://h", "POST", path, (("apikey", secret), *headers), b"{}")
    with pytest.raises(RequestError, match=error) as e:
        encode_request(req, "h")
    assert secret not in str(e.value) and "Evil" not in str(e.value)


header_text = st.text(st.characters(codec="utf-8"), max_size=12)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.from_regex(r"\AX-[A-Za-z0-9-]{1,8}\Z"), header_text), max_size=4))
def test_an_encoded_head_says_exactly_what_the_request_holds(headers: list) -> None:
    """Encoded or refused: never a head whose parse differs from the request (no injection)."""
    req = Request("http://h", "GET", "/p", tuple(headers))
    try:
        wire = encode_request(req, "h")
    except RequestError as e:
        assert any(
            re.search(r"[\x00-\x08\x0a-\x1f\x7f]", v) or any(ord(c) > 255 for c in v)
            for _, v in headers
        )
        assert str(e).startswith("bad header value in X-")
        return
    got: list[tuple[bytes, bytes]] = []

    class Sink:
        def on_header(self, name: bytes, value: bytes) -> None:
            got.append((name, value))

    httptools.HttpRequestParser(Sink()).feed_data(wire)
    # llhttp drops the optional whitespace before a value
    want = [(b"Host", b"h")] + [
        (k.encode(), v.encode("latin-1").lstrip(b" \t")) for k, v in headers
    ]
    assert got == want


def read(wire: bytes, head: bool = False, pieces: list[int] | None = None) -> ResponseReader:
    """Feed the wire to a fresh reader in pieces of the given sizes (the rest in one)."""
    r = ResponseReader()
    r.begin(head)
    pos = 0
    for n in pieces or []:
        if pos >= len(wire):
            break
        r.feed(wire[pos : pos + n])
        pos += n
    if pos < len(wire):
        r.feed(wire[pos:])
    return r


def chunked(body: bytes, size: int) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


INTERIM = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
)


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, int, bytes]:
    """(wire bytes, status, body): a final response with any framing, maybe after 1xx answers."""
    status = draw(st.sampled_from([200, 201, 400, 409, 500]))
    body = draw(st.binary(max_size=300))
    if draw(st.booleans()):
        framing = b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body, draw(st.integers(1, 64)))
    else:
        framing = b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
    interim = draw(st.sampled_from([b"", INTERIM]))
    return interim + b"HTTP/1.1 %d X\r\nServer: t\r\n%b" % (status, framing), status, body


@settings(max_examples=300)
@given(responses(), st.lists(st.integers(1, 40), max_size=60))
def test_any_split_of_a_response_reads_the_same(resp: tuple, pieces: list[int]) -> None:
    wire, status, body = resp
    r = read(wire, pieces=pieces)
    assert (r.complete, r.status, bytes(r.body), r.keep_alive, r.extra) == (
        True,
        status,
        body,
        True,
        False,
    )


@settings(max_examples=100)
@given(responses(), st.data())
def test_a_response_is_not_complete_before_its_last_byte(resp: tuple, data: st.DataObject) -> None:
    wire, _, _ = resp
    cut = data.draw(st.integers(0, len(wire) - 1))
    r = ResponseReader()
    r.begin(False)
    assert not r.feed(wire[:cut]) and r.feed(wire[cut:])


def test_interim_responses_are_skipped_byte_by_byte() -> None:
    wire = INTERIM + b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    r = read(wire, pieces=[1] * len(wire))
    assert (r.status, bytes(r.body), r.keep_alive) == (201, b"ok", True)


def test_a_large_chunked_body_in_one_byte_pieces() -> None:
    """512 KiB fed one byte at a time: linear work (a reader that re-copies its buffer per piece
    would copy about 10^11 bytes here and never finish inside the test timeout)."""
    body = bytes(range(256)) * 2048
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body, 4096)
    r = ResponseReader()
    r.begin(False)
    view = memoryview(wire)
    assert [r.feed(view[i : i + 1]) for i in range(len(wire))][-1]
    assert bytes(r.body) == body


def test_head_answers_have_no_body_whatever_content_length_says() -> None:
    r = read(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", head=True)
    assert (r.complete, r.status, bytes(r.body), r.keep_alive) == (True, 200, b"", True)
    # the same reader then reads the next answer on the connection
    r.begin(False)
    assert r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc") and bytes(r.body) == b"abc"


@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_have_no_body(status: int) -> None:
    r = read(b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\n" % status)
    assert (r.complete, r.status, bytes(r.body)) == (True, status, b"")


@pytest.mark.parametrize(
    ("connection", "keep_alive"),
    [
        (b"", True),
        (b"Connection: keep-alive\r\n", True),
        (b"Connection: close\r\n", False),
        (b"Connection: keep-alive, close\r\n", False),
        (b"Connection: Upgrade-Insecure, CLOSE\r\n", False),
    ],
)
def test_connection_token_lists(connection: bytes, keep_alive: bool) -> None:
    r = read(b"HTTP/1.1 200 OK\r\n%bContent-Length: 1\r\n\r\nx" % connection)
    assert (r.status, bytes(r.body), r.keep_alive) == (200, b"x", keep_alive)


def test_http10_body_runs_to_the_end_of_the_connection() -> None:
    r = read(b"HTTP/1.0 200 OK\r\n\r\nuntil-close")
    assert not r.complete and r.eof() and bytes(r.body) == b"until-close" and not r.keep_alive


def test_a_truncated_framed_body_is_not_complete_at_eof() -> None:
    r = read(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 10\r\n\r\nabc")
    assert not r.complete and not r.eof()


def test_bytes_after_the_response_are_flagged() -> None:
    r = read(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n")
    assert r.complete and r.extra


@pytest.mark.parametrize("pieces", [None, [1000] * 200])
def test_an_oversize_head_is_an_error(pieces: list[int] | None) -> None:
    wire = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEAD + 10) + b"\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(ResponseError, match=f"response head larger than {MAX_HEAD} bytes"):
        read(wire, pieces=pieces)


def test_an_endless_head_stops_at_the_limit() -> None:
    r = ResponseReader()
    r.begin(False)
    r.feed(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(ResponseError, match="larger than"):
        for _ in range(MAX_HEAD):
            r.feed(b"X-A: b\r\n")


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (b"garbage\r\n\r\n", "bad response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "bad response"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n", "101"),
    ],
)
def test_malformed_responses_are_errors(wire: bytes, error: str) -> None:
    with pytest.raises(ResponseError, match=error):
        read(wire)


FRAMINGS = {
    "none": b"",
    "length": b"%s: %%d\r\n",
    "chunked": b"%s: chunked\r\n",
}


@settings(max_examples=200)
@given(
    st.sampled_from(sorted(FRAMINGS)),
    st.sampled_from([b"Content-Length", b"content-length", b"CONTENT-LENGTH"]),
    st.sampled_from([b"Transfer-Encoding", b"transfer-encoding"]),
    st.sampled_from([b"", INTERIM]),
    st.sampled_from([b"HTTP/1.1 200 OK\r\nConnection: close\r\n", b"HTTP/1.0 200 OK\r\n"]),
    st.binary(min_size=1, max_size=80),
    st.data(),
)
def test_at_the_end_of_the_connection_only_an_unframed_body_is_complete(
    framing: str, cl: bytes, te: bytes, interim: bytes, status_line: bytes, body: bytes,
    data: st.DataObject,
) -> None:  # fmt: skip
    # an answer that closes the connection: its body ends with it unless its head frames it
    # (any case of the header's name), however the bytes are split and wherever they stop
    if framing == "length":
        head = FRAMINGS[framing] % cl % len(body)
        rest = body
    elif framing == "chunked":
        head, rest = FRAMINGS[framing] % te, chunked(body, 16)
    else:
        head, rest = b"", body
    wire = interim + status_line + b"Server: t\r\n" + head + b"\r\n" + rest
    cut = len(wire) - data.draw(st.integers(1, len(rest)))  # stops inside the body
    pieces = data.draw(st.lists(st.integers(1, 30), max_size=20))
    r = read(wire[:cut], pieces=pieces)
    assert r.head_done and not r.complete
    assert r.eof() == (framing == "none") and not r.keep_alive


@pytest.mark.parametrize("interim", [b"", INTERIM])
@pytest.mark.parametrize("pieces", [None, [7] * 100, [1] * 400])
def test_the_head_limit_counts_every_byte_up_to_the_final_heads_end(
    interim: bytes, pieces: list[int] | None
) -> None:
    def wire(head_bytes: int) -> bytes:
        start = interim + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Pad: "
        pad = head_bytes - len(start) - len(b"\r\n\r\n")
        return start + b"a" * pad + b"\r\n\r\n" + b"hello"

    def reader(wire: bytes) -> ResponseReader:
        r = ResponseReader(max_head=300)
        r.begin(False)
        pos = 0
        for n in pieces or [len(wire)]:
            r.feed(wire[pos : pos + n])
            pos += n
            if pos >= len(wire):
                break
        else:
            r.feed(wire[pos:])
        return r

    assert len(wire(300).partition(b"\r\n\r\n" if not interim else b"X-Pad")[0]) < 300
    r = reader(wire(300))  # exactly the limit, the body's bytes not counted
    assert r.complete and bytes(r.body) == b"hello"
    with pytest.raises(ResponseError, match="response head larger than 300 bytes"):
        reader(wire(301))
