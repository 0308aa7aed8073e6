"""Realtime: Phoenix messages and matching postgres_changes with the writes that caused them."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from click.testing import CliRunner

from judge.realtime_messages import REALTIME_MESSAGE
from judge.resultlog import iter_rows, read_results
from replay.builders import BuildContext, Credentials
from replay.realtime import (
    Realtime,
    WriteIndex,
    heartbeat_message,
    join_message,
    record_key,
    websocket_url,
    write_keys,
)
from replay.scheduler import shard_of
from tests.replay.test_cli import INVENTORY, LENIENT, Captured, cli
from traces.event import TARGET_SCAN, Event, order_ticket_code, pack_payload, ticket_code
from traces.header import TraceHeader
from traces.io import open_writer


def test_websocket_url() -> None:
    ctx = BuildContext("https://p.supabase.co", "r", Credentials(anon_key="sb_publishable_k"))
    assert (
        websocket_url(ctx)
        == "wss://p.supabase.co/realtime/v1/websocket?vsn=1.0.0&apikey=sb_publishable_k"
    )
    assert websocket_url(BuildContext("http://127.0.0.1:5/", "r")).startswith(
        "ws://127.0.0.1:5/realtime/v1/websocket?vsn=1.0.0"
    )


def test_join_message_shape() -> None:
    m = json.loads(join_message("realtime:tickets", "tickets", "event_id=eq.1", "jwt.x.y", "3"))
    assert (m["topic"], m["event"], m["ref"], m["join_ref"]) == (
        "realtime:tickets",
        "phx_join",
        "3",
        "3",
    )
    pc = m["payload"]["config"]["postgres_changes"]
    assert pc == [{"event": "*", "schema": "public", "table": "tickets", "filter": "event_id=eq.1"}]
    assert m["payload"]["access_token"] == "jwt.x.y"
    # a publishable key is not a JWT: no access_token
    assert (
        "access_token"
        not in json.loads(join_message("realtime:t", "t", None, "sb_publishable_x", "1"))["payload"]
    )
    assert json.loads(heartbeat_message("9")) == {
        "topic": "phoenix",
        "event": "heartbeat",
        "payload": {},
        "ref": "9",
    }


def test_write_keys_and_record_key() -> None:
    scan = Event(
        0, 1, "scan", "a", "rpc:scan_ticket_atomic", pack_payload({"ticket_code": "T1-0000003"})
    )
    assert write_keys(scan) == ["T1-0000003"]
    obj = {
        "type": "payment_intent.succeeded",
        "data": {"object": {"id": "pi_9", "metadata": {"quantity": 2}}},
    }
    hook = Event(0, 2, "webhook", "stripe", "fn:stripe-webhook", pack_payload(obj))
    assert write_keys(hook) == [order_ticket_code("pi_9", 0), order_ticket_code("pi_9", 1)]
    assert write_keys(Event(0, 3, "view", "v", "rest:events", pack_payload({}))) == []
    msg = {
        "event": "postgres_changes",
        "payload": {"data": {"type": "UPDATE", "record": {"code": "T1-0000003"}}},
    }
    assert record_key(msg) == "T1-0000003" and record_key({"payload": {}}) is None


# --- viewers in their own shard only --------------------------------------------------------


def _viewer_trace(path: Path, viewers: int, scans: int) -> Path:
    evs = [
        Event(i * 1_000, 1 + i, "subscribe", f"viewer:{i}", "realtime:tickets",
              pack_payload({"table": "tickets", "filter": "event_id=eq.1"}))
        for i in range(viewers)
    ]  # fmt: skip
    for i in range(scans):
        p = dict(ticket_code=ticket_code(1, i), event_id=1, gate="A", lane="1", direction="in")
        # writes 2 s in: every viewer has joined by then even on a loaded machine
        evs.append(Event(2_000_000 + i * 10_000, 100 + i, "scan", f"attendee:{i}", TARGET_SCAN,
                         pack_payload(p), None, "valid"))  # fmt: skip
    evs += [
        Event(3_000_000 + i, 200 + i, "unsubscribe", f"viewer:{i}", "realtime:tickets", pack_payload({}))
        for i in range(viewers)
    ]  # fmt: skip
    with open_writer(path, TraceHeader(scenario={"name": "rt"}, inventory=INVENTORY)) as w:
        w.write_many(evs)
    return path


class CountingStandIn(Captured):
    """The local stand-in, counting the subscriptions (joins) it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.joins = 0

    @contextlib.contextmanager
    def __call__(self, **kw) -> Iterator:
        with super().__call__(**kw) as s:
            hub = s.app.hub
            add = hub.add

            def counted(conn, subs) -> None:
                self.joins += len(subs)
                add(conn, subs)

            hub.add = counted
            yield s


def test_each_viewer_is_watched_by_its_own_shard_only(tmp_path: Path) -> None:
    viewers, scans = 6, 16
    t = _viewer_trace(tmp_path / "v.grt", viewers, scans)
    # the trace puts viewers and writers in both shards: most messages cross shards
    assert {shard_of(f"viewer:{i}", 2) for i in range(viewers)} == {0, 1}
    assert {shard_of(f"attendee:{i}", 2) for i in range(scans)} == {0, 1}
    latencies = {}
    for workers in ("1", "2"):
        standin = CountingStandIn()
        out = tmp_path / f"v{workers}.grr"
        r = CliRunner().invoke(cli(standin), ["replay", str(t), "-o", str(out), "--workers", workers, "-q", *LENIENT])  # fmt: skip
        assert r.exit_code == 0, r.output
        assert standin.joins == viewers  # each subscription opened exactly once
        rows = read_results(out)[1].to_pylist()
        assert not [x for x in rows if x["metric"] == REALTIME_MESSAGE]  # every one timed
        raw = [x.metric for x in iter_rows(out)[1]]  # as written: cross-shard ones timed on reading
        assert (REALTIME_MESSAGE in raw) == (workers == "2")
        joins = [x for x in rows if x["metric"] == "realtime_join"]
        assert sorted(x["actor"] for x in joins) == [f"viewer:{i}" for i in range(viewers)]
        assert all(x["status"] == 200 for x in joins)
        lat = [x for x in rows if x["metric"] == "realtime_update_latency"]
        scan_rows = {x["seq"]: x for x in rows if x["metric"] is None}
        # timed from the write's completion, whichever shard sent it, to the viewer's message
        assert all(x["sent_us"] == scan_rows[x["seq"]]["done_us"] <= x["done_us"] for x in lat)
        latencies[workers] = sorted((x["actor"], x["seq"]) for x in lat)
    want = sorted((f"viewer:{v}", 100 + i) for v in range(viewers) for i in range(scans))
    assert latencies["1"] == latencies["2"] == want  # one sample per viewer and write, either way


def _scan(seq: int, t_us: int, code: str) -> Event:
    return Event(
        t_us, seq, "scan", f"attendee:{seq}", TARGET_SCAN, pack_payload({"ticket_code": code})
    )


def _change(code: str) -> dict:
    return {"event": "postgres_changes", "payload": {"data": {"record": {"code": code}}}}


def _watching(rows: list[tuple]) -> tuple[Realtime, WriteIndex]:
    """A Realtime with one viewer open (no socket), its rows into `rows`, times in µs of seconds."""
    writes = WriteIndex()
    rt = Realtime(BuildContext("http://127.0.0.1:1", "r"), rows.append, lambda t: round(t * 1e6), writes=writes)  # fmt: skip
    rt.tasks["viewer:1"] = None  # type: ignore[assignment]
    return rt, writes


def test_a_message_is_matched_with_the_last_write_due_whichever_shard_sends_it() -> None:
    rows: list[tuple] = []
    rt, writes = _watching(rows)
    a1, b, a2 = _scan(1, 1_000, "A"), _scan(2, 2_000, "B"), _scan(3, 3_000, "A")
    for ev, own in ((a1, True), (b, False), (a2, True)):
        writes.add(ev, own)
    rt._message("viewer:1", "realtime:tickets", _change("B"), 0.0025)  # another shard's write
    assert (
        rows[-1][0] == 2
        and rows[-1][4:7] == (2500, 2500, 2500)
        and rows[-1][13] == REALTIME_MESSAGE
    )
    rt.note_write(a1, 0.0012, b"")
    rt._message("viewer:1", "realtime:tickets", _change("A"), 0.0015)  # ours, answered: timed here
    assert (
        rows[-1][0] == 1
        and rows[-1][5:7] == (1200, 1500)
        and rows[-1][13] == "realtime_update_latency"
    )
    n = len(rows)
    rt._message("viewer:1", "realtime:tickets", _change("A"), 0.0031)  # ours, not answered yet
    assert len(rows) == n
    rt.note_write(a2, 0.0035, b"")  # it answers after its message: latency 0
    assert rows[-1][0] == 3 and rows[-1][5:7] == (3500, 3500)
    # a message before this shard read the write it is about: matched when the write is read
    rt._message("viewer:1", "realtime:tickets", _change("C"), 0.0050)
    n = len(rows)
    writes.add(_scan(4, 6_000, "C"), False)  # due after the message: not its write
    writes.add(_scan(5, 4_000, "C"), False)
    assert len(rows) == n + 1 and rows[-1][0] == 5 and rows[-1][13] == REALTIME_MESSAGE


def test_a_duplicate_scan_a_moment_later_does_not_take_the_admissions_message() -> None:
    rows: list[tuple] = []
    rt, writes = _watching(rows)
    valid = _scan(1, 1_000, "A")
    shared = Event(1_500, 2, "scan", "attendee:9", TARGET_SCAN, pack_payload({"ticket_code": "A"}), None,
                   "already_scanned")  # fmt: skip
    writes.add(valid, True)
    writes.add(shared, False)  # another shard's, expected to change nothing
    rt.note_write(valid, 0.0013, b"")
    rt._message("viewer:1", "realtime:tickets", _change("A"), 0.0016)
    assert [(r[0], r[5], r[6], r[13]) for r in rows] == [(1, 1300, 1600, "realtime_update_latency")]
