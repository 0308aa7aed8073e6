"""The recording proxy: `gaterush record` forwards every request to an upstream and appends it to a
`.grt` trace as it goes.

Each request that is a gaterush target becomes an event: its time since the recording started,
its target from the path (traces.importers.endpoints, the same mapping the importers use), its
payload from the body or query, and the response's outcome as `expect`. Events are written in
arrival order (seq) as soon as every earlier request has answered, and flushed one by one, so a
kill loses at most the requests still in flight; memory holds only those. Headers never reach
the trace (`apikey`, `Authorization`, `Stripe-Signature` included): webhooks are stored unsigned,
for replay to sign again at send time. Realtime websockets are proxied frame by frame; each
`phx_join` with postgres_changes becomes a `subscribe` event, and its channel's end an
`unsubscribe`.

Actors: the `X-Gaterush-Actor` header when a client sends one, else the client's address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from replay.builders import ACTOR_HEADER, RUN_HEADER
from traces import event as ev
from traces.event import Event, TraceError, pack_payload
from traces.header import TraceHeader
from traces.importers.endpoints import (
    created_id,
    decode_body,
    endpoint,
    linked_request,
    outcome,
    realtime_joins,
)
from traces.importers.inventory import InventoryFold
from traces.importers.recorded import recorded_payload
from traces.io import open_reader, open_writer

# Hop-by-hop headers (RFC 9110 7.6.1) and those aiohttp recomputes: never forwarded as they are.
HOP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
        "Transfer-Encoding", "Upgrade", "Host", "Content-Length", "Content-Encoding",
    )
)  # fmt: skip
MAX_LINKS = 100_000  # PaymentIntent id -> checkout seq remembered for confirms (oldest dropped)


@dataclass
class RecordStats:
    """What a recording saw: events written, requests forwarded but not targets, upstream errors."""

    written: int = 0
    not_targets: int = 0
    upstream_errors: int = 0
    by_target: dict[str, int] = field(default_factory=dict)


class Recorder:
    """A reverse proxy to `upstream` that appends every target request to the trace at `out`."""

    def __init__(
        self,
        upstream: str,
        out: str | Path,
        *,
        timeout: float = 60.0,
        header: TraceHeader | None = None,
        append: bool = False,
        force: bool = False,
    ) -> None:
        if not upstream.startswith(("http://", "https://")):
            raise ValueError(f"--upstream: expected an http(s):// URL, got {_public(upstream)!r}")
        self.upstream = upstream.rstrip("/")
        self.out = Path(out)
        if self.out.suffix != ".grt":
            raise ValueError(f"{out}: record writes a .grt trace (it streams and survives a kill)")
        if append and force:
            raise ValueError("--append and --force: choose one (resume the trace, or replace it)")
        if not (append or force) and (self.out.exists() or self.out.is_symlink()):
            raise ValueError(
                f"{out}: exists; --append resumes it, --force replaces it (nothing was written)"
            )
        self.append = append
        self.timeout = timeout
        self.stats = RecordStats()
        self._header = header or TraceHeader(
            source="record", scenario={"upstream": _public(self.upstream)}
        )
        self._writer: Any = None
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._t0 = 0.0
        self._next_seq = 0
        self._next_write = 0
        self._done: dict[int, Event | None] = {}
        self._links: dict[str, int] = {}
        self.url = ""

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Open the trace, listen, and return the proxy's URL."""
        origin_us = time.time_ns() // 1000
        self._t0 = time.monotonic()
        resume = self.append and self.out.exists() and self.out.stat().st_size > 0
        if resume:  # go on from the cut trace: its clock and its seq
            origin_us, last = _resume_point(self.out)
            self._t0 -= (time.time_ns() // 1000 - origin_us) / 1e6
            self._next_seq = self._next_write = last + 1
        self._writer = open_writer(
            self.out, replace(self._header, origin_unix_us=origin_us), append=self.append
        )
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            auto_decompress=True,
            connector=aiohttp.TCPConnector(limit=0),
        )
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=5.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        h, p = sock.getsockname()[:2]
        self.url = f"http://{h}:{p}"
        return self.url

    async def stop(self) -> None:
        """Stop listening, write what is complete, and close the trace (its header filled)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._writer is not None:
            # requests that never answered are written too (no expect), so nothing complete is lost
            for seq in sorted(self._done):
                if seq >= self._next_write:
                    self._next_write = seq
                    self._drain()
            self._writer.close()
            self._writer = None
            with_inventory(self.out)

    # --- the proxy -------------------------------------------------------------------------------

    def _now_us(self) -> int:
        return round((time.monotonic() - self._t0) * 1_000_000)

    def _actor(self, request: web.Request) -> str:
        named = request.headers.get(ACTOR_HEADER)
        if named:
            return named
        return f"ip:{request.remote or 'unknown'}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        t_us = self._now_us()
        ep = endpoint(request.method, request.path)
        seq = self._take_seq() if ep is not None else None
        body = await request.read()
        headers = _forward_headers(request.headers)
        try:
            assert self._session is not None
            async with self._session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=body or None,
                allow_redirects=False,
            ) as up:
                rbody = await up.read()
                status, rheaders = up.status, up.headers
        except (TimeoutError, aiohttp.ClientError) as e:
            self.stats.upstream_errors += 1
            if seq is not None:
                self._complete(seq, None)
            return web.json_response(
                {"error": f"gaterush record: upstream unreachable: {type(e).__name__}"}, status=502
            )
        if ep is None:
            self.stats.not_targets += 1
        else:
            self._complete(
                seq,
                self._event(
                    ep, request, t_us, seq, body, status, rheaders.get("Content-Type"), rbody
                ),
            )
        out_headers = CIMultiDict((k, v) for k, v in rheaders.items() if k.lower() not in HOP)
        return web.Response(status=status, headers=out_headers, body=rbody)

    def _event(
        self,
        ep,
        request: web.Request,
        t_us: int,
        seq: int,
        body: bytes,
        status: int,
        rtype: str | None,
        rbody: bytes,
    ) -> Event:
        payload = recorded_payload(
            ep,
            request.method,
            request.path,
            request.query_string,
            list(request.headers.items()),
            body,
            status,
            run_id=request.headers.get(RUN_HEADER),
        )
        response = decode_body(rbody, rtype)
        after = linked_request(ep, payload, self._links)
        made = created_id(ep, response)
        if made:
            self._links[made] = seq
            if len(self._links) > MAX_LINKS:
                self._links.pop(next(iter(self._links)))
        return Event(
            t_us,
            seq,
            ep.kind,
            self._actor(request),
            ep.target,
            pack_payload(payload),
            after,
            outcome(ep, status, response),
        )

    def _take_seq(self) -> int:
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def _complete(self, seq: int, event: Event | None) -> None:
        """Hand a finished request over; write every event whose predecessors have all answered."""
        self._done[seq] = event
        self._drain()

    def _drain(self) -> None:
        wrote = False
        while self._next_write in self._done:
            e = self._done.pop(self._next_write)
            self._next_write += 1
            if e is not None:
                self._writer.write(e)
                self.stats.written += 1
                self.stats.by_target[e.target or ""] = (
                    self.stats.by_target.get(e.target or "", 0) + 1
                )
                wrote = True
        if wrote:
            self._writer.flush()

    # --- Realtime websockets ---------------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        client = web.WebSocketResponse(
            protocols=request.headers.getall("Sec-WebSocket-Protocol", ()), autoping=True
        )
        await client.prepare(request)
        actor = self._actor(request)
        assert self._session is not None
        try:
            upstream = await self._session.ws_connect(
                self.upstream + request.path_qs,
                headers=_forward_headers(request.headers, websocket=True),
                autoping=True,
            )
        except (TimeoutError, aiohttp.ClientError):
            self.stats.upstream_errors += 1
            await client.close(code=1011, message=b"upstream unreachable")
            return client
        joined: dict[str, dict[str, Any]] = {}

        async def client_to_upstream() -> None:
            async for msg in client:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._note_client_frame(msg.data, actor, joined)
                    await upstream.send_str(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    await upstream.send_bytes(msg.data)
                else:
                    break
            await upstream.close()

        async def upstream_to_client() -> None:
            async for msg in upstream:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await client.send_str(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    await client.send_bytes(msg.data)
                else:
                    break
            await client.close()

        tasks = [
            asyncio.create_task(client_to_upstream()),
            asyncio.create_task(upstream_to_client()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            with contextlib.suppress(Exception):
                await upstream.close()
            for sub in joined.values():
                self._subscription(ev.UNSUBSCRIBE, actor, sub, None)
        return client

    def _note_client_frame(self, data: str, actor: str, joined: dict[str, dict[str, Any]]) -> None:
        try:
            msg = json.loads(data)
        except ValueError:
            return
        if isinstance(msg, list) and len(msg) == 5:
            msg = {"topic": msg[2], "event": msg[3], "payload": msg[4]}
        if not isinstance(msg, dict):
            return
        if msg.get("event") == "phx_join":
            for sub in realtime_joins([msg]):
                payload = {
                    "table": sub["table"],
                    **({"filter": sub["filter"]} if "filter" in sub else {}),
                }
                joined[str(sub.get("topic"))] = payload
                self._subscription(ev.SUBSCRIBE, actor, payload, ev.OK)
        elif msg.get("event") == "phx_leave" and str(msg.get("topic")) in joined:
            self._subscription(ev.UNSUBSCRIBE, actor, joined.pop(str(msg.get("topic"))), None)

    def _subscription(
        self, kind: str, actor: str, payload: dict[str, Any], expect: str | None
    ) -> None:
        seq = self._take_seq()
        e = Event(
            self._now_us(),
            seq,
            kind,
            actor,
            f"realtime:{payload['table']}",
            pack_payload(payload),
            None,
            expect,
        )
        self._complete(seq, e)


def _resume_point(path: Path) -> tuple[int, int]:
    """(origin, last seq) of a trace a recording resumes; -1 when it has no event yet."""
    with open_reader(path) as reader:
        origin, last = reader.header.origin_unix_us, -1
        with contextlib.suppress(TraceError):  # a cut trace ends early: what it holds counts
            for e in reader:
                last = max(last, e.seq)
    return origin, last


def with_inventory(path: Path) -> None:
    """Put the inventory the trace's events touched into its header (rewritten beside, renamed).

    The header leads a .grt file, so the file is copied once with the new header; a kill during
    the copy leaves the recorded file as it was.
    """
    with open_reader(path) as reader:
        header = reader.header
        fold = InventoryFold()
        for e in reader:
            fold.add(e)
    inventory = fold.inventory(header.inventory)
    if inventory == header.inventory:
        return
    tmp = path.with_name(f".{path.stem}.inventory-tmp.grt")
    try:
        with (
            open_reader(path) as reader,
            open_writer(tmp, replace(header, inventory=inventory)) as writer,
        ):
            writer.write_many(reader)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _public(url: str) -> str:
    """A URL without credentials or query: safe for a trace header."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    host = u.hostname or ""
    return f"{u.scheme}://{host}{':' + str(u.port) if u.port else ''}{u.path}"


def _forward_headers(headers: Any, websocket: bool = False) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for k, v in headers.items():
        lk = k.lower()
        if lk in HOP or lk == ACTOR_HEADER.lower():
            continue
        if websocket and lk.startswith("sec-websocket"):
            continue
        out.add(k, v)
    return out


@contextlib.contextmanager
def recorder_in_thread(upstream: str, out: str | Path, **kwargs: Any) -> Iterator[Recorder]:
    """Run a Recorder on its own loop in a thread for the `with` block (tests, benchmarks)."""
    import threading

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gaterush-record", daemon=True)
    thread.start()
    rec = Recorder(upstream, out, **kwargs)
    try:
        asyncio.run_coroutine_threadsafe(rec.start(), loop).result(30)
        yield rec
    finally:
        asyncio.run_coroutine_threadsafe(rec.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
