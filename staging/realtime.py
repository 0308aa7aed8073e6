"""Realtime: Phoenix channel protocol (vsn 1.0.0, JSON objects) with postgres_changes subscriptions.

`Connection.handle(text)` is sans-IO: a client frame in, the frames to send back out. The Hub
fans committed row changes out to every matching subscription through each connection's queue.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from staging.errors import PostgrestError
from staging.filters import Cond, evaluate, parse_cond, render, split_top
from staging.values import MAX_JSON_DEPTH, too_deep

COLUMN_TYPES = {
    "id": "int8",
    "event_id": "int8",
    "order_id": "int8",
    "ticket_id": "int8",
    "quantity": "int4",
    "amount_cents": "int8",
    "admissions": "int4",
    "capacity": "int4",
    "presold": "int4",
    "price_cents": "int8",
    "inside": "bool",
    "reentry": "bool",
    "allow_reentry": "bool",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
    "first_scanned_at": "timestamptz",
    "scanned_at": "timestamptz",
    "refunded_at": "timestamptz",
}
TABLES = ("tickets", "scans", "orders", "events")
_ids = itertools.count(1_000_001)
QUEUE_LIMIT = 10_000  # frames waiting for a slow client before it is dropped


# what postgres_changes filters take (realtime-py's on_postgres_changes docs)
REALTIME_OPS = ("eq", "neq", "lt", "lte", "gt", "gte", "in", "like", "ilike", "is")


@dataclass(frozen=True, slots=True)
class Subscription:
    """One postgres_changes binding of a joined channel."""

    id: int
    topic: str
    join_ref: str | None
    event: str  # "*", "INSERT", "UPDATE", "DELETE"
    table: str
    filter: tuple[Cond, ...] = ()  # every condition must hold (commas are AND)

    def matches(self, table: str, type_: str, record: dict[str, Any]) -> bool:
        """Whether a change of `table` goes to this subscription."""
        if table != self.table or (self.event != "*" and self.event != type_):
            return False
        return all(evaluate(c, record) is True for c in self.filter)


def parse_change_filter(text: str, table: str, types: Mapping[str, str]) -> tuple[Cond, ...]:
    """`event_id=eq.1`, `id=in.(1,2)` or `a=gt.1,b=not.is.null` (AND) as conditions on `table`
    (staging.filters' grammar, Realtime's operators); ValueError naming what is wrong."""
    out = []
    try:
        for part in split_top(text):
            col, sep, rest = part.strip().partition("=")
            if not sep or not col:
                raise ValueError(f"filter {text!r}: expected column=op.value")
            out.append(parse_cond(table, col, rest, types, REALTIME_OPS))
    except PostgrestError as exc:
        raise ValueError(f"filter {text!r}: {exc.body['message']}") from None
    return tuple(out)


def frame(
    topic: str, event: str, payload: Any, ref: str | None = None, join_ref: str | None = None
) -> str:
    """A Phoenix message as JSON text."""
    return json.dumps(
        {"topic": topic, "event": event, "payload": payload, "ref": ref, "join_ref": join_ref},
        separators=(",", ":"),
    )


def _error(topic: str, ref: Any, reason: str, join_ref: Any = None) -> str:
    return frame(
        topic, "phx_reply", {"status": "error", "response": {"reason": reason}}, ref, join_ref
    )


class Refused(Exception):
    """A client frame the server answers by closing the socket with `code` (RFC 6455 section 7.4.1)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Connection:
    """One websocket client: its joined channels and subscriptions, and its outgoing queue."""

    def __init__(self, hub: Hub, token_ok: Callable[[str], bool], vsn: str = "1.0.0") -> None:
        self.hub = hub
        self.token_ok = token_ok
        self.arrays = vsn == "2.0.0"  # vsn 2.0.0: [join_ref, ref, topic, event, payload]
        self.subs: dict[str, list[Subscription]] = {}
        self.out: asyncio.Queue[str | None] = asyncio.Queue()
        self.dropped = False

    def send(self, text: str) -> None:
        """Queue one frame; a client that falls QUEUE_LIMIT frames behind is dropped."""
        if self.dropped:
            return
        if self.out.qsize() >= QUEUE_LIMIT:
            self.dropped = True
            self.out.put_nowait(None)
            return
        if self.arrays:
            m = json.loads(text)
            text = json.dumps(
                [m["join_ref"], m["ref"], m["topic"], m["event"], m["payload"]],
                separators=(",", ":"),
            )
        self.out.put_nowait(text)

    def handle(self, text: str) -> list[str]:
        """The replies to one client frame; a frame that is not Phoenix protocol gets an error reply.

        A frame nested deeper than MAX_JSON_DEPTH raises Refused: the socket is closed with 1008.
        """
        if too_deep(text):
            raise Refused(1008, f"frame nests deeper than {MAX_JSON_DEPTH} levels")
        try:
            msg = json.loads(text)
            if self.arrays and isinstance(msg, list) and len(msg) == 5:
                msg = dict(zip(("join_ref", "ref", "topic", "event", "payload"), msg, strict=True))
        except RecursionError:
            raise Refused(1008, f"frame nests deeper than {MAX_JSON_DEPTH} levels") from None
        except ValueError:
            return [
                _error(
                    "phoenix",
                    None,
                    "malformed message: expected a JSON object "
                    "{topic, event, payload, ref} (Phoenix protocol vsn 1.0.0)",
                )
            ]
        if (
            not isinstance(msg, dict)
            or not isinstance(msg.get("topic"), str)
            or not isinstance(msg.get("event"), str)
        ):
            return [
                _error(
                    "phoenix",
                    msg.get("ref") if isinstance(msg, dict) else None,
                    "malformed message: 'topic' and 'event' must be strings (Phoenix protocol vsn 1.0.0)",
                )
            ]
        topic, event, ref = msg["topic"], msg["event"], msg.get("ref")
        join_ref = msg.get("join_ref")
        payload = msg.get("payload") if isinstance(msg.get("payload"), dict) else {}
        if topic == "phoenix" and event == "heartbeat":
            return [frame("phoenix", "phx_reply", {"status": "ok", "response": {}}, ref)]
        if event == "phx_join":
            return self._join(topic, payload, ref, join_ref or ref)
        if event == "phx_leave":
            self._leave(topic)
            return [frame(topic, "phx_reply", {"status": "ok", "response": {}}, ref, join_ref)]
        if event == "access_token":
            tok = payload.get("access_token")
            if isinstance(tok, str) and not self.token_ok(tok):
                return [
                    _error(
                        topic, ref, "InvalidJWTToken: the access token does not verify", join_ref
                    )
                ]
            return [frame(topic, "phx_reply", {"status": "ok", "response": {}}, ref, join_ref)]
        if topic not in self.subs:
            return [
                _error(
                    topic, ref, f"unmatched topic {topic!r}: join it first with phx_join", join_ref
                )
            ]
        if event in ("broadcast", "presence"):
            return [frame(topic, "phx_reply", {"status": "ok", "response": {}}, ref, join_ref)]
        return [_error(topic, ref, f"unknown event {event!r}", join_ref)]

    def _join(self, topic: str, payload: dict[str, Any], ref: Any, join_ref: Any) -> list[str]:
        if not topic.startswith("realtime:") or len(topic) <= len("realtime:"):
            return [_error(topic, ref, "topic must be 'realtime:<name>'", join_ref)]
        tok = payload.get("access_token")
        if isinstance(tok, str) and tok and not self.token_ok(tok):
            return [
                _error(topic, ref, "InvalidJWTToken: the access token does not verify", join_ref)
            ]
        config = payload.get("config") if isinstance(payload.get("config"), dict) else {}
        changes = config.get("postgres_changes") or []
        if not isinstance(changes, list):
            return [_error(topic, ref, "config.postgres_changes must be a list", join_ref)]
        subs: list[Subscription] = []
        for i, c in enumerate(changes):
            where = f"config.postgres_changes[{i}]"
            if not isinstance(c, dict):
                return [_error(topic, ref, f"{where} must be an object", join_ref)]
            table = c.get("table")
            ev = str(c.get("event", "*")).upper()
            if c.get("schema", "public") != "public" or table not in TABLES:
                return [
                    _error(
                        topic,
                        ref,
                        f"{where}: unknown table {c.get('schema', 'public')}.{table}; "
                        f"tables: {', '.join(TABLES)}",
                        join_ref,
                    )
                ]
            if ev not in ("*", "INSERT", "UPDATE", "DELETE"):
                return [
                    _error(
                        topic, ref, f"{where}: event must be *, INSERT, UPDATE or DELETE", join_ref
                    )
                ]
            flt: tuple[Cond, ...] = ()
            if c.get("filter"):
                try:
                    flt = parse_change_filter(str(c["filter"]), table, self.hub.types[table])
                except ValueError as exc:
                    return [_error(topic, ref, f"{where}: {exc}", join_ref)]
            subs.append(Subscription(next(_ids), topic, join_ref, ev, table, flt))
        self._leave(topic)
        self.subs[topic] = subs
        self.hub.add(self, subs)
        response = {
            "postgres_changes": [
                {
                    "id": s.id,
                    "event": s.event,
                    "schema": "public",
                    "table": s.table,
                    **({"filter": ",".join(render(c) for c in s.filter)} if s.filter else {}),
                }
                for s in subs
            ]
        }
        out = [frame(topic, "phx_reply", {"status": "ok", "response": response}, ref, join_ref)]
        if subs:
            out.append(
                frame(
                    topic,
                    "system",
                    {
                        "status": "ok",
                        "message": "Subscribed to PostgreSQL",
                        "extension": "postgres_changes",
                        "channel": topic[9:],
                    },
                    None,
                    join_ref,
                )
            )
        return out

    def _leave(self, topic: str) -> None:
        old = self.subs.pop(topic, None)
        if old:
            self.hub.remove(self, old)

    def close(self) -> None:
        """Drop every subscription of this connection."""
        for topic in list(self.subs):
            self._leave(topic)


class Hub:
    """Every live subscription, by table; publishes committed changes to them."""

    def __init__(self, types: Mapping[str, Mapping[str, str]]) -> None:
        self.types = types  # table -> column -> kind, for parsing subscription filters
        self.by_table: dict[str, list[tuple[Connection, Subscription]]] = {}
        self.tables: frozenset[str] = frozenset()
        self.connections = 0
        self.messages_sent = 0

    def add(self, conn: Connection, subs: list[Subscription]) -> None:
        for s in subs:
            self.by_table.setdefault(s.table, []).append((conn, s))
        self.tables = frozenset(t for t, v in self.by_table.items() if v)

    def remove(self, conn: Connection, subs: list[Subscription]) -> None:
        ids = {s.id for s in subs}
        for t in {s.table for s in subs}:
            self.by_table[t] = [(c, s) for c, s in self.by_table.get(t, []) if s.id not in ids]
        self.tables = frozenset(t for t, v in self.by_table.items() if v)

    def publish(
        self, changes: list[tuple[str, str, dict[str, Any], dict[str, Any] | None, str]]
    ) -> None:
        """Send each committed change (table, type, record, old_record, commit_timestamp) to its subscribers."""
        for table, type_, record, old, ts in changes:
            targets = self.by_table.get(table)
            if not targets:
                continue
            per_topic: dict[tuple[int, str], tuple[Connection, list[int], Any]] = {}
            for conn, sub in targets:
                if sub.matches(table, type_, record):
                    key = (id(conn), sub.topic)
                    if key in per_topic:
                        per_topic[key][1].append(sub.id)
                    else:
                        per_topic[key] = (conn, [sub.id], sub.join_ref)
            if not per_topic:
                continue
            data = {
                "schema": "public",
                "table": table,
                "commit_timestamp": ts,
                "type": type_,
                "columns": [{"name": k, "type": COLUMN_TYPES.get(k, "text")} for k in record],
                "record": record,
                "old_record": old or {},
                "errors": None,
            }
            for (_, topic), (conn, ids, join_ref) in per_topic.items():
                conn.send(
                    frame(topic, "postgres_changes", {"ids": ids, "data": data}, None, join_ref)
                )
                self.messages_sent += 1
