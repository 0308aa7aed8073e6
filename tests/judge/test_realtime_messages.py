"""A viewer's messages about another shard's writes become latency rows when the rows are read."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import assume, given
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


def _part(rows: list[tuple]) -> pa.Table:
    return time_messages(table(rows))  # as read_results gives a file: its own messages timed


run_st = st.lists(  # a run: its shard files, each some writes and viewers' messages
    st.tuples(
        st.lists(st.tuples(st.integers(1, 30), st.integers(0, 10**6), st.sampled_from([200, 500])), max_size=8),
        st.lists(st.tuples(st.integers(1, 30), st.integers(0, 10**6)), max_size=8),
    ),
    min_size=1,
    max_size=3,
)  # fmt: skip


def _shard_tables(run: list) -> list[pa.Table]:
    return [
        _part([write(s, d, code) for s, d, code in ws] + [message(s, a) for s, a in ms])
        for ws, ms in run
    ]


def _rows(t: pa.Table, shift: int = 0) -> list[str]:
    out = []
    for x in t.to_pylist():
        for c in ("scheduled_us", "sent_us", "done_us"):
            x[c] -= shift
        out.append(repr(sorted(x.items())))
    return sorted(out)


@given(run_st, run_st, st.integers(0, 10**6), st.integers(0, 10**6), st.randoms())
def test_two_runs_reported_together_time_each_message_within_its_own_run(a: list, b: list, start_a: int,
                                                                          start_b: int, rnd) -> None:  # fmt: skip
    """Seqs overlap across runs: every row of each run (its latencies, its unmatched messages) is
    what that run alone gives, whatever the order of the files."""
    for run in (a, b):  # within one run a seq is one request: written once, by one shard
        seqs = [s for ws, _ in run for s, _, _ in ws]
        assume(len(seqs) == len(set(seqs)))
    parts = [(t, "a", start_a, "run-a") for t in _shard_tables(a)] + [
        (t, "b", start_b, "run-b") for t in _shard_tables(b)
    ]
    rnd.shuffle(parts)
    merged, base = merge_tables([p[:3] for p in parts], [p[3] for p in parts])
    for name, run, start in (("a", a, start_a), ("b", b, start_b)):
        alone, _ = merge_tables([(t, name, start) for t in _shard_tables(run)])
        mine = merged.filter(pa.compute.equal(merged["scenario"], name))
        assert _rows(mine, start - base) == _rows(alone)


def test_report_of_two_runs_matches_messages_within_each(tmp_path) -> None:
    """`gaterush report a.grr b.grr`: run a's viewer heard of its seq 7, whose write is in its other
    shard file (not given); run b's seq 7 write must not time it."""
    from judge.report import load

    files = []
    for run_id, rows in (("run-a", [message(7, 5_000)]), ("run-b", [write(7, 1_000)])):
        p = tmp_path / f"{run_id}.grr"
        header = ResultHeader(run_id=run_id, target_url="http://127.0.0.1:1", trace_path="t.grt",
                              start_unix_us=1_000_000)  # fmt: skip
        with ResultWriter(p, header) as w:
            for r in rows:
                w.add(r)
        files.append(p)
    rows = load(files).table.to_pylist()
    assert sorted(str(x["metric"]) for x in rows if x["seq"] == 7) == ["None", REALTIME_MESSAGE]
    # shards of one run (one run_id) still match across files
    rows = load(
        [files[0], _rewrite_run(files[1], tmp_path / "b-as-a.grr", "run-a")]
    ).table.to_pylist()
    lat = [(x["sent_us"], x["done_us"]) for x in rows if x["metric"] == REALTIME_UPDATE_LATENCY]
    assert lat == [(1_000, 5_000)]


def _rewrite_run(src, dst, run_id: str):
    header, t = read_results(src)
    with ResultWriter(dst, ResultHeader(run_id=run_id, target_url=header.target_url, trace_path="t.grt",
                                        start_unix_us=header.start_unix_us)) as w:  # fmt: skip
        for r in t.to_pylist():
            w.add(tuple(r[c] for c in COLUMNS))
    return dst
