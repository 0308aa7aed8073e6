"""A viewer's messages about another shard's writes become latency rows when the rows are read."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from judge.metrics import merge_tables
from judge.realtime_messages import REALTIME_MESSAGE, time_messages
from judge.resultlog import COLUMNS, SCHEMA, ResultHeader, ResultWriter, read_results
from judge.rows import REALTIME_UPDATE_LATENCY


def table(rows: list[tuple]) -> pa.Table:
    return pa.Table.from_pylist([dict(zip(COLUMNS, r, strict=True)) for r in rows], schema=SCHEMA)


def write(seq: int, done_us: int, status: int = 200) -> tuple:
    return (seq, "rpc:scan_ticket_atomic", "scan", f"attendee:{seq}", 0, 10, done_us, status, None, 0, 0,
            "valid", "valid", None, None)  # fmt: skip


def message(seq: int, at_us: int, viewer: str = "viewer:1") -> tuple:
    return (seq, "realtime:tickets", "postgres_changes", viewer, at_us, at_us, at_us, 0, None, 0, 0,
            None, None, REALTIME_MESSAGE, None)  # fmt: skip


writes_st = st.dictionaries(
    st.integers(1, 50), st.tuples(st.integers(0, 10**7), st.sampled_from([200, 200, 500, 0]))
)
messages_st = st.lists(st.tuples(st.integers(1, 60), st.integers(0, 10**7)), max_size=40)


@given(writes_st, messages_st)
def test_each_message_is_timed_from_its_writes_completion(writes: dict, messages: list) -> None:
    t = time_messages(
        table(
            [write(s, d, st_) for s, (d, st_) in writes.items()]
            + [message(s, a) for s, a in messages]
        )
    )
    rows = t.to_pylist()
    lat = sorted(
        (x["seq"], x["sent_us"], x["done_us"])
        for x in rows
        if x["metric"] == REALTIME_UPDATE_LATENCY
    )
    ok = {s: d for s, (d, status) in writes.items() if status == 200}
    want = sorted(
        (s, ok[s], max(a, ok[s])) for s, a in messages if s in ok
    )  # 0 when it beat the answer
    assert lat == want
    left = sorted((x["seq"], x["done_us"]) for x in rows if x["metric"] == REALTIME_MESSAGE)
    assert left == sorted((s, a) for s, a in messages if s not in writes or writes[s][1] != 200)
    assert len(t) == len(writes) + len(
        messages
    )  # nothing lost: an unmatched message waits for its write
    assert [x for x in rows if x["metric"] is None] == table(
        [write(s, d, st_) for s, (d, st_) in writes.items()]
    ).to_pylist()


def test_shard_files_are_timed_when_merged(tmp_path) -> None:
    # the viewer's shard wrote the message, the write is in the other shard's file
    parts = []
    for k, rows in enumerate(([message(7, 5_000)], [write(7, 4_000)])):
        p = tmp_path / f"shard-{k}.grr"
        with ResultWriter(
            p,
            ResultHeader(
                run_id="r",
                target_url="http://127.0.0.1:1",
                trace_path="t.grt",
                start_unix_us=1_000_000,
            ),
        ) as w:
            for r in rows:
                w.add(r)
        _, t = read_results(p)
        parts.append((t, "s", 1_000_000))
    merged, _ = merge_tables(parts)
    lat = [x for x in merged.to_pylist() if x["metric"] == REALTIME_UPDATE_LATENCY]
    assert [(x["seq"], x["sent_us"], x["done_us"]) for x in lat] == [(7, 4_000, 5_000)]
