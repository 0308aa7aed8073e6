"""Realtime viewers: one websocket per viewer on Supabase's Phoenix channel protocol (vsn 1.0.0).

A viewer's socket is opened by its own shard only (``shard_of`` its actor, like its other events):
the target pushes every change over it, whichever shard made the write. A ``subscribe`` event
opens the socket and joins ``realtime:<table>`` with a postgres_changes binding (a
``realtime_join`` row); each postgres_changes message that matches a write this run made (a
scanned ticket, the tickets of a paid order) gives a ``realtime_update_latency`` row: from the
write's HTTP completion to the message's arrival (0 when the message beat the response).
``unsubscribe`` closes the socket. Message builders are pure.

Which write a message is about comes from the trace: every shard reads every event, and a
``WriteIndex`` keeps each ticket code's writes, so the latest one due before the message is the
one. When this shard sent it, the row is complete here; when another shard did, only that shard
knows its completion, so this one writes a ``realtime_message`` row that reading the results
makes the latency row (judge.realtime_messages).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from judge.realtime_messages import REALTIME_MESSAGE
from judge.resultlog import REALTIME_JOIN, REALTIME_UPDATE_LATENCY
from replay.builders import BuildContext, split_base
from traces.event import (
    ALREADY_SCANNED,
    DUPLICATE,
    INVALID,
    SCAN,
    SUBSCRIBE,
    UNSUBSCRIBE,
    WEBHOOK,
    Event,
    order_ticket_code,
    unpack_payload,
)

now = time.monotonic
HEARTBEAT_S = 25.0
RECENT = 200_000  # writes remembered for matching messages
WRITE_KINDS = (SCAN, WEBHOOK)
NO_CHANGE = frozenset((ALREADY_SCANNED, INVALID, DUPLICATE))  # expected to change no row
PER_CODE = 8  # writes remembered per ticket code (a ticket scanned in and out, or shared)


def websocket_url(ctx: BuildContext) -> str:
    """The Realtime websocket URL (it carries the apikey: never log it)."""
    origin, prefix = split_base(ctx.supabase_url)
    ws = "wss" + origin[5:] if origin.startswith("https") else "ws" + origin[4:]
    q = {"vsn": "1.0.0"}
    if ctx.keys.anon_key:
        q["apikey"] = ctx.keys.anon_key
    return f"{ws}{prefix}/realtime/v1/websocket?{urlencode(q)}"


def join_message(topic: str, table: str, filter_: str | None, access_token: str, ref: str) -> str:
    """A phx_join for a postgres_changes subscription on one table."""
    change: dict[str, Any] = {"event": "*", "schema": "public", "table": table}
    if filter_:
        change["filter"] = filter_
    payload: dict[str, Any] = {
        "config": {
            "broadcast": {"ack": False, "self": False},
            "presence": {"enabled": False, "key": ""},
            "postgres_changes": [change],
            "private": False,
        }
    }
    if access_token and not access_token.startswith(("sb_publishable_", "sb_secret_")):
        payload["access_token"] = access_token
    return json.dumps(
        {"topic": topic, "event": "phx_join", "payload": payload, "ref": ref, "join_ref": ref}
    )


def heartbeat_message(ref: str) -> str:
    """The Phoenix heartbeat that keeps a socket open."""
    return json.dumps({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": ref})


def write_keys(ev: Event) -> list[str]:
    """The ticket codes a write changes, to match postgres_changes records with it."""
    try:
        p = unpack_payload(ev.payload)
    except Exception:  # noqa: BLE001 - not matchable
        return []
    if not isinstance(p, dict):
        return []
    if ev.kind == SCAN and p.get("ticket_code"):
        return [str(p["ticket_code"])]
    if ev.kind == WEBHOOK and p.get("type") == "payment_intent.succeeded":
        obj = (p.get("data") or {}).get("object") or {}
        pi = obj.get("id")
        try:
            n = int((obj.get("metadata") or {}).get("quantity", 0))
        except (TypeError, ValueError):
            n = 0
        return [order_ticket_code(pi, i) for i in range(n)] if pi else []
    return []


def record_key(msg: dict[str, Any]) -> str | None:
    """The ticket code a postgres_changes message is about, if any."""
    data = (msg.get("payload") or {}).get("data") or {}
    rec = data.get("record") or {}
    code = rec.get("code") or rec.get("ticket_code")
    return str(code) if code else None


class WriteIndex:
    """The trace's writes by the ticket code they change, every shard's: whose write a message is."""

    def __init__(self, speed: float = 1.0) -> None:
        self.k = 1.0 / speed
        # code -> (due µs since the start, seq, this shard's, expected to change the row)
        self.by_code: OrderedDict[str, list[tuple[int, int, bool, bool]]] = OrderedDict()
        self.listener: Callable[[str, int, int, bool], None] | None = None

    def add(self, ev: Event, own: bool) -> None:
        """Note a write as the trace is read (`own`: this shard sends it)."""
        if ev.kind not in WRITE_KINDS:
            return
        due_us = round(ev.t_us * self.k)
        changes = ev.expect not in NO_CHANGE
        for code in write_keys(ev):
            writes = self.by_code.get(code)
            if writes is None:
                writes = self.by_code[code] = []
                if len(self.by_code) > RECENT:
                    self.by_code.popitem(last=False)
            writes.append((due_us, ev.seq, own, changes))
            del writes[:-PER_CODE]
            if self.listener is not None:
                self.listener(code, due_us, ev.seq, own)

    def latest(self, code: str, at_us: int) -> tuple[int, bool] | None:
        """(seq, own) of the write of `code` a message at `at_us` (µs since the start) is about:
        the last one due by then, preferring one the trace expects to change the row (a
        duplicate scan a moment later does not)."""
        due = [w for w in self.by_code.get(code, ()) if w[0] <= at_us]
        for _, seq, own, changes in reversed(due):
            if changes:
                return seq, own
        return (due[-1][1], due[-1][2]) if due else None


class Realtime:
    """The run's viewers and the writes their messages are matched against."""

    def __init__(self, ctx: BuildContext, sink: Callable[[tuple], None], us: Callable[[float], int],
                 redact: Callable[[str], str] = lambda s: s, writes: WriteIndex | None = None) -> None:  # fmt: skip
        self.ctx = ctx
        self.sink = sink
        self.us = us
        self.redact = redact
        self.writes = writes  # None: one sender, every write is ours
        if writes is not None:
            writes.listener = self._write_read
        self.viewers: dict[str, Any] = {}  # actor -> websocket
        self.tasks: dict[str, asyncio.Task] = {}
        self.recent: OrderedDict[str, tuple[int, float]] = (
            OrderedDict()
        )  # code -> (write seq, done)
        # messages before their write answered: (viewer, target, arrival, the write's seq if known)
        self.early: OrderedDict[str, list[tuple[str, str, float, int | None]]] = OrderedDict()
        self.session = None
        self._ref = 0

    def handle(self, ev: Event, sched: float) -> None:
        """Open (subscribe) or close (unsubscribe) a viewer's socket."""
        if ev.kind == UNSUBSCRIBE:
            task = self.tasks.pop(ev.actor, None)
            if task is not None:
                task.cancel()
            return
        if ev.kind == SUBSCRIBE or ev.kind not in (UNSUBSCRIBE,):
            old = self.tasks.pop(ev.actor, None)
            if old is not None:
                old.cancel()
            self.tasks[ev.actor] = asyncio.get_running_loop().create_task(self._viewer(ev, sched))

    def watching(self) -> bool:
        """Whether any viewer is open."""
        return bool(self.tasks)

    def note_write(self, ev: Event, done_t: float, body: bytes) -> None:
        """Remember a completed write so the messages it causes can be timed."""
        if not self.tasks or ev.kind not in (SCAN, WEBHOOK):
            return
        for code in write_keys(ev):
            self.recent[code] = (ev.seq, done_t)
            if len(self.recent) > RECENT:
                self.recent.popitem(last=False)
            keep = []
            for actor, target, t_msg, seq in self.early.pop(code, ()):
                if seq is None or seq == ev.seq:
                    self._row(ev.seq, target, actor, done_t, max(done_t, t_msg))
                else:
                    keep.append((actor, target, t_msg, seq))
            if keep:
                self.early[code] = keep

    def _row(self, seq: int, target: str, actor: str, write_t: float, msg_t: float) -> None:
        w = self.us(write_t)
        self.sink((seq, target, "postgres_changes", actor, w, w, self.us(msg_t), 0, None, 0, 0, None, None,
                   REALTIME_UPDATE_LATENCY))  # fmt: skip

    def _next_ref(self) -> str:
        self._ref += 1
        return str(self._ref)

    async def _viewer(self, ev: Event, sched: float) -> None:
        import aiohttp

        target: str = ev.target  # type: ignore[assignment]
        try:
            p = unpack_payload(ev.payload)
        except Exception:  # noqa: BLE001
            p = {}
        table = str(p.get("table") or target.partition(":")[2])
        topic = f"realtime:{p.get('channel') or table}"
        if self.session is None:
            self.session = aiohttp.ClientSession()
        t0 = now()
        ref = self._next_ref()
        status, error, joined_t = 0, None, None
        try:
            ws = await self.session.ws_connect(websocket_url(self.ctx), heartbeat=None, autoping=True,
                                               headers={"X-Gaterush-Run": self.ctx.run_id})  # fmt: skip
        except Exception as e:  # noqa: BLE001 - a failed join is a row, not a crash
            self._join_row(
                ev, sched, t0, now(), 0, self.redact(f"connect: {type(e).__name__}: {e}")
            )
            return
        try:
            await ws.send_str(
                join_message(topic, table, p.get("filter"), self.ctx.keys.anon_key, ref)
            )
            hb = asyncio.get_running_loop().create_task(self._heartbeat(ws))
            try:
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    t = now()
                    try:
                        m = json.loads(msg.data)
                    except ValueError:
                        continue
                    event = m.get("event")
                    if event == "phx_reply" and m.get("ref") == ref and joined_t is None:
                        pl = m.get("payload") or {}
                        joined_t = t
                        if pl.get("status") == "ok":
                            status = 200
                        else:
                            reason = (pl.get("response") or {}).get("reason") or pl.get("status")
                            error = self.redact(f"join refused: {reason}")
                        self._join_row(ev, sched, t0, t, status, error)
                        if error:
                            return
                    elif event == "postgres_changes":
                        self._message(ev.actor, target, m, t)
            finally:
                hb.cancel()
            if joined_t is None:
                self._join_row(
                    ev, sched, t0, now(), 0, "socket closed before the join was answered"
                )
        except asyncio.CancelledError:
            if joined_t is None:
                self._join_row(ev, sched, t0, now(), 0, "unsubscribed before the join was answered")
            raise
        finally:
            await ws.close()

    def _message(self, actor: str, target: str, m: dict[str, Any], t: float) -> None:
        code = record_key(m)
        if code is None:
            return
        w = None if self.writes is None else self.writes.latest(code, self.us(t))
        if w is not None and not w[1]:  # another shard's write: only it knows the completion
            self._message_row(w[0], target, actor, t)
            return
        hit = self.recent.get(code)
        if hit is not None and (w is None or hit[0] == w[0]):
            seq, done_t = hit
            self._row(seq, target, actor, done_t, max(t, done_t))
        else:  # our write has not answered yet (or the trace is not read that far)
            self.early.setdefault(code, []).append((actor, target, t, None if w is None else w[0]))
            if len(self.early) > RECENT:
                self.early.popitem(last=False)

    def _write_read(self, code: str, due_us: int, seq: int, own: bool) -> None:
        """A write just read from the trace: the messages that came before it was read."""
        if own or code not in self.early:
            return
        keep = []
        for actor, target, t_msg, wanted in self.early.pop(code):
            if wanted is None and self.us(t_msg) >= due_us:
                self._message_row(seq, target, actor, t_msg)
            else:  # came before this write was due, or waits for one of ours
                keep.append((actor, target, t_msg, wanted))
        if keep:
            self.early[code] = keep

    def _message_row(self, seq: int, target: str, actor: str, msg_t: float) -> None:
        m = self.us(msg_t)  # judge.realtime_messages times it from the write's own row
        self.sink((seq, target, "postgres_changes", actor, m, m, m, 0, None, 0, 0, None, None,
                   REALTIME_MESSAGE))  # fmt: skip

    def _join_row(
        self, ev: Event, sched: float, t0: float, t1: float, status: int, error: str | None
    ) -> None:
        self.sink((ev.seq, ev.target, ev.kind, ev.actor, self.us(sched), self.us(t0), self.us(t1), status, error,
                   0, 0, "joined" if status == 200 else None, ev.expect, REALTIME_JOIN))  # fmt: skip

    async def _heartbeat(self, ws: Any) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            await ws.send_str(heartbeat_message(self._next_ref()))

    async def close(self) -> None:
        """Close every viewer's socket and the session."""
        tasks = list(self.tasks.values())
        self.tasks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.close()
