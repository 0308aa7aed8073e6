"""HTTP/1.1 on the wire, without I/O: encoding a request's head and reading one response at a time.

:func:`encode_request` turns a built request into bytes, refusing a head that would not say what the
request holds (CR, LF or NUL in a name or value, or a character outside latin-1). The reader parses
responses with llhttp (through ``httptools``, the parser uvicorn uses): it knows the request's
method (a HEAD answer has no body whatever its ``Content-Length`` says), skips 1xx interim responses,
follows ``Content-Length``, chunked framing (in linear time, however the bytes are split) and
``Connection`` token lists, reads a body to the end of the connection when the response has no
framing, and caps the response head. The transport (``replay.transport``) owns the sockets.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

import httptools

MAX_HEAD = 64 * 1024  # bytes of response head (status line, headers, interim responses) accepted


class Request(NamedTuple):
    """One HTTP request a builder made: where, what, and the exact body bytes."""

    origin: str  # scheme://host[:port], no path
    method: str
    path: str  # path and query string, starting with /
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""


class RequestError(ValueError):
    """A request that cannot be written as HTTP/1.1 as it is: the message names the bad part."""


class ResponseError(Exception):
    """The bytes the server sent are not a response we can read: the message says why."""


_BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))
# the bytes a head may hold besides the CRLFs we write: no control character but HTAB
HEAD_BYTES = bytes([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\u0100-\U0010ffff]")
_BAD_TOKEN = re.compile(r"[\x00-\x20\x7f\u0100-\U0010ffff]")


def encode_request(
    req: Request, host_header: str, extra: tuple[tuple[str, str], ...] = ()
) -> bytes:
    """The request as HTTP/1.1 bytes on a keep-alive connection; RequestError if it cannot be.

    The head is the request line, Host, ``req.headers``, then `extra` headers (the same bytes as
    with them at the end of ``req.headers``; a builder's per-request ones, so the rest of the
    block is encoded and checked once for all the requests that share it) and Content-Length.
    Refused: a control character (CR, LF and NUL included; HTAB is allowed in a value) or a
    character outside latin-1 anywhere in the head, and a space in the path.
    """
    first = f"{req.method} {req.path} HTTP/1.1\r\n"
    lines = [first, *[f"{k}: {v}\r\n" for k, v in extra]]
    body = req.body
    if body or req.method in _BODY_METHODS:
        lines.append(f"Content-Length: {len(body)}\r\n")
    lines.append("\r\n")
    try:
        head = "".join(lines).encode("latin-1")
        block = _header_block(host_header, req.headers)
    except (UnicodeEncodeError, RequestError):
        raise RequestError(_bad_part(req._replace(headers=(*req.headers, *extra)))) from None
    # what is left once every allowed byte is deleted must be exactly the CRLFs we wrote: any other
    # CR, LF or control byte came from the method, the path or a header
    if head.translate(None, HEAD_BYTES) != b"\r\n" * len(lines) or " " in req.path:
        raise RequestError(_bad_part(req._replace(headers=(*req.headers, *extra))))
    n = len(first)  # latin-1: one byte per character
    return b"".join((head[:n], block, head[n:], body))


@lru_cache(maxsize=256)
def _header_block(host_header: str, headers: tuple[tuple[str, str], ...]) -> bytes:
    """Host and `headers` as head lines, checked (RequestError, unnamed: the caller names the
    part); cached, as a run's requests of one kind carry the same headers."""
    lines = [f"Host: {host_header}\r\n", *[f"{k}: {v}\r\n" for k, v in headers]]
    try:
        block = "".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise RequestError from None
    if block.translate(None, HEAD_BYTES) != b"\r\n" * len(lines):
        raise RequestError
    return block


def check_request(req: Request) -> None:
    """Raise RequestError if the request's method, path or a header would not encode as itself."""
    encode_request(req, "h")


def _bad_part(req: Request) -> str:
    """Which part of the request is bad, by name only (a value may be a key: never shown)."""
    if _BAD_TOKEN.search(req.method):
        return "bad request method"
    if _BAD_TOKEN.search(req.path):
        return "bad request path (a space, a control character or one outside latin-1)"
    for k, v in req.headers:
        if _BAD_TOKEN.search(k):
            return "bad header name (a space, a control character or one outside latin-1)"
        if _BAD_VALUE.search(v):
            return f"bad header value in {k} (CR, LF or another control character, or one outside latin-1)"
    return "bad request head"


class _Stop(Exception):
    """Raised from a parser callback to stop llhttp at the end of a HEAD answer's head."""


_FRAMING = (b"\r\ncontent-length:", b"\r\ntransfer-encoding:")


class ResponseReader:
    """Reads one response per request from the bytes of a keep-alive connection (no I/O).

    Call :meth:`begin` when a request is written, then :meth:`feed` with what arrives until it
    returns True; then ``status``, ``body``, ``keep_alive`` and ``extra`` (bytes after the response:
    the connection cannot be trusted) hold the answer. :meth:`eof` says whether the end of the
    connection completes the response. Raises ResponseError on a malformed or oversize response.

    llhttp parses; no header is handed to Python one by one (a Supabase answer has fifteen: that
    was two thirds of reading it). What the reader needs of the head, its size (at most
    `max_head` bytes up to the final head's end, interim responses included) and whether its body
    is framed (Content-Length or Transfer-Encoding, else it runs to the end of the connection),
    it finds in the head's bytes, and only where it can matter: the size when the bytes read
    could exceed the limit, the framing when the answer does not keep the connection alive.
    """

    __slots__ = (
        "parser",
        "max_head",
        "head_request",
        "head_done",
        "fed",
        "chunk",
        "parts",
        "head_from",
        "interim",
        "framed",
        "complete",
        "extra",
        "status",
        "keep_alive",
        "body",
    )

    def __init__(self, max_head: int = MAX_HEAD) -> None:
        self.max_head = max_head
        self.parser: httptools.HttpResponseParser | None = None
        self.parts: list[bytes] = []
        self.begin(False)

    def begin(self, head_request: bool) -> None:
        """Expect the response to a new request (a HEAD request's answer has no body)."""
        if self.parser is None:
            self.parser = httptools.HttpResponseParser(self)
        self.head_request = head_request
        self.head_done = False
        self.fed = 0  # bytes fed before the chunk being read, while the head is not done
        self.chunk = b""  # the chunk being read
        if self.parts:
            self.parts = []  # earlier chunks of a head not done yet (rare: a head in pieces)
        self.head_from = 0  # where the head being read starts, in parts + chunk
        self.interim = False
        self.framed = False
        self.complete = False
        self.extra = False
        self.status = 0
        self.keep_alive = False
        self.body = bytearray()

    def feed(self, data: bytes) -> bool:
        """Parse the next bytes; True once the final response is complete."""
        self.chunk = data
        try:
            self.parser.feed_data(data)  # type: ignore[union-attr]
        except httptools.HttpParserUpgrade:
            self.parser = None
            raise ResponseError("unexpected 101 Switching Protocols") from None
        except httptools.HttpParserError as e:
            self.parser = None  # llhttp stays in its error state: a fresh parser for the next one
            if not self.complete:
                if isinstance(e.__context__, ResponseError):
                    raise e.__context__ from None
                raise ResponseError(f"bad response: {e}") from None
            if not self.head_request:
                self.extra = True  # garbage after a complete response
        if not self.head_done:
            self.parts.append(data)
            self.fed += len(data)
            if self.fed > self.max_head:
                self.parser = None
                raise ResponseError(f"response head larger than {self.max_head} bytes")
        return self.complete

    def eof(self) -> bool:
        """The connection ended: True if that completes the response (a body read to the end)."""
        if self.head_done and not self.complete and not self.framed:
            self.complete = True
            self.keep_alive = False
        return self.complete

    # llhttp callbacks (httptools calls only those defined)

    def on_message_begin(self) -> None:
        """A message starts (bytes after a complete one are extra)."""
        if self.complete:
            self.extra = True
        self.framed = False

    def on_headers_complete(self) -> None:
        """The head is read: a 1xx is skipped; a HEAD answer ends here."""
        p = self.parser
        status = p.get_status_code()  # type: ignore[union-attr]
        head = None
        # where this head ends: to know where the next starts (after a 1xx), or when the bytes
        # read so far could put it past the limit
        if status < 200 or self.fed + len(self.chunk) > self.max_head:
            head = self._head()
            if self.head_from > self.max_head:
                raise ResponseError(f"response head larger than {self.max_head} bytes")
        if status < 200:
            self.interim = True
            return
        self.status = status
        self.head_done = True
        keep_alive = p.should_keep_alive()  # type: ignore[union-attr]
        if self.head_request:
            self.keep_alive = keep_alive
            self.complete = True
            self.parser = None  # llhttp would wait for the body a HEAD answer does not have
            raise _Stop
        if keep_alive:  # llhttp keeps a connection alive only after a body it can end
            self.framed = True
        else:  # one that ends with the connection, unless its head frames it
            lower = (head if head is not None else self._head()).lower()
            self.framed = any(name in lower for name in _FRAMING)

    def _head(self) -> bytes:
        """The bytes of the head just read, to its blank line; head_from moves past it."""
        data = b"".join((*self.parts, self.chunk)) if self.parts else self.chunk
        start = self.head_from
        end = data.find(b"\r\n\r\n", start)
        self.head_from = len(data) if end < 0 else end + 4  # (llhttp has read one: it is there)
        return data[start : self.head_from]

    def on_body(self, data: bytes) -> None:
        """A piece of the body (appended: linear however it is split)."""
        self.body += data

    def on_message_complete(self) -> None:
        """A message ends: the answer, unless it was a 1xx."""
        if self.interim:
            self.interim = False
            return
        self.keep_alive = self.parser.should_keep_alive()  # type: ignore[union-attr]
        self.complete = True
