"""Realtime: Phoenix channel protocol (vsn 1.0.0, JSON objects) with postgres_changes subscriptions.

`Connection.handle(text)` is sans-IO: a client frame in, the frames to send back out. The Hub
fans committed row changes out to every matching subscription through each connection's queue.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
_FILTER_OPS = {"eq", "neq", "lt", "lte", "gt", "gte", "in"}
_ids = itertools.count(1_000_001)
QUEUE_LIMIT = 10_000  # frames waiting for a slow client before it is dropped


@dataclass(frozen=True, slots=True)
class Subscription:
    """One postgres_changes binding of a joined channel."""

    id: int
    topic: str
    join_ref: str | None
    event: str  # "*", "INSERT", "UPDATE", "DELETE"
    table: str
    filter: tuple[str, str, tuple[str, ...]] | None  # (column, op, values)

    def matches(self, table: str, type_: str, record: dict[str, Any]) -> bool:
        """Whether a change of `table` goes to this subscription."""
        if table != self.table or (self.event != "*" and self.event != type_):
            return False
        if self.filter is None:
            return True
        col, op, values = self.filter
        v = record.get(col)
        if v is None:
            return False
        sv = str(int(v) if isinstance(v, bool) else v)
        if op == "eq":
            return sv == values[0]
        if op == "neq":
            return sv != values[0]
        if op == "in":
            return sv in values
        try:
            a, b = float(sv), float(values[0])
        except ValueError:
            a, b = sv, values[0]  # type: ignore[assignment]
        return {"lt": a < b, "lte": a <= b, "gt": a > b, "gte": a >= b}[op]


def parse_change_filter(text: str) -> tuple[str, str, tuple[str, ...]]:
    """`event_id=eq.1` or `id=in.(1,2)` as (column, op, values); ValueError when malformed."""
    col, sep, rest = text.partition("=")
    op, sep2, value = rest.partition(".")
    if not sep or not sep2 or not col or op not in _FILTER_OPS:
        raise ValueError(
            f"filter {text!r}: expected column=op.value with op one of {sorted(_FILTER_OPS)}"
        )
    if op == "in":
        if not (value.startswith("(") and value.endswith(")")):
            raise ValueError(f"filter {text!r}: in needs a parenthesised list")
        return col, op, tuple(v.strip().strip('"') for v in value[1:-1].split(","))
    return col, op, (value,)


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
        """The replies to one client frame; a frame that is not Phoenix protocol gets an error reply."""
        try:
            msg = json.loads(text)
            if self.arrays and isinstance(msg, list) and len(msg) == 5:
                msg = dict(zip(("join_ref", "ref", "topic", "event", "payload"), msg, strict=True))
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
            flt = None
            if c.get("filter"):
                try:
                    flt = parse_change_filter(str(c["filter"]))
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
                    **(
                        {
                            "filter": f"{s.filter[0]}={s.filter[1]}."
                            + (
                                f"({','.join(s.filter[2])})"
                                if s.filter[1] == "in"
                                else s.filter[2][0]
                            )
                        }
                        if s.filter
                        else {}
                    ),
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

    def __init__(self) -> None:
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
