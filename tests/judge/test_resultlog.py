"""The result log: round trips, readable while running, truncated files, parquet conversion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from judge import metrics
from judge.resultlog import (
    COLUMNS,
    DROPPED_EVENTS,
    RESULT_FORMAT,
    SCHEMA,
    ResultHeader,
    ResultLogError,
    ResultRow,
    ResultWriter,
    batch_message,
    iter_rows,
    read_results,
    summarize,
)
from judge.rows import RowBuffer

text = st.text(max_size=12)
opt_text = st.none() | text
i64 = st.integers(min_value=-(2**62), max_value=2**62)


def rows() -> st.SearchStrategy[ResultRow]:
    """Arbitrary result rows."""
    return st.builds(
        ResultRow,
        i64, text, text, text, i64, i64, i64,
        st.integers(min_value=0, max_value=999),
        opt_text, i64, i64, opt_text, opt_text, opt_text,
    )  # fmt: skip


HEADER = ResultHeader(
    run_id="run-1",
    target_url="http://127.0.0.1:1",
    trace_path="t.grt",
    speed=2.0,
    thresholds={"http_req_duration": ["p(95)<200"]},
)


def table_rows(table: pa.Table) -> list[ResultRow]:
    return [
        ResultRow(*(table.column(c)[i].as_py() for c in COLUMNS)) for i in range(table.num_rows)
    ]


@settings(max_examples=40, deadline=None)
@given(st.lists(rows(), max_size=30), st.sampled_from(["grr", "parquet"]))
def test_round_trip(
    tmp_path_factory: pytest.TempPathFactory, rs: list[ResultRow], ext: str
) -> None:
    path = tmp_path_factory.mktemp("rl") / f"out.{ext}"
    with ResultWriter(path, HEADER) as w:
        for r in rs:
            w.add(r)
    header, table = read_results(path)
    assert header.complete and header.run_id == "run-1" and header.speed == 2.0
    assert header.thresholds == {"http_req_duration": ["p(95)<200"]}
    got = table_rows(table)
    assert got == rs
    h2, it = iter_rows(path)
    assert list(it) == rs and h2.run_id == "run-1"
    assert not Path(f"{path}.grr").exists()
    # what replay judges in memory is what a reader of the file gets
    assert w.header == header and table_rows(w.table()) == rs


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(rows(), max_size=6), max_size=5))
def test_rows_through_a_buffer_and_ipc_messages_come_back_whole(
    tmp_path_factory: pytest.TempPathFactory, flushes: list[list[ResultRow]]
) -> None:
    """Rows appended to a RowBuffer, each take sent as IPC message bytes (as a worker does), and
    appended to the log by the parent: the log's table is the rows, in order."""
    path = tmp_path_factory.mktemp("rl") / "out.grr"
    buf = RowBuffer()
    with ResultWriter(path, HEADER) as w:
        for chunk in flushes:
            for r in chunk:
                buf.append(*r)
            batch = buf.take()
            assert (batch is None) == (not chunk) and len(buf) == 0
            if batch is not None:
                w.write_message(batch_message(batch), batch.num_rows)
    header, table = read_results(path)
    assert table.schema.equals(SCHEMA) and header.complete and w.rows == table.num_rows
    assert table_rows(table) == [r for chunk in flushes for r in chunk]
    assert pa.ipc.open_stream(path.read_bytes()).schema.metadata  # any Arrow reader opens it


def test_a_row_buffer_asks_to_be_taken_when_full() -> None:
    taken: list[int] = []
    buf = RowBuffer(limit=3, full=lambda: taken.append(buf.take().num_rows))  # type: ignore[union-attr]
    for i in range(7):
        buf.append(*_row(i))
    assert taken == [3, 3] and len(buf) == 1
    buf.append(*_row(8)[:5], "late", *_row(8)[6:])
    with pytest.raises(ValueError, match="sent_us"):
        buf.take()
    assert len(buf) == 0  # emptied all the same: one bad row does not stall the log


def _row(i: int) -> ResultRow:
    return ResultRow(
        i,
        "rpc:scan_ticket_atomic",
        "scan",
        f"a:{i}",
        i,
        i + 1,
        i + 5,
        200,
        None,
        10,
        20,
        "valid",
        "valid",
    )


def test_readable_while_running_and_after_crash(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    w = ResultWriter(path, HEADER)
    for i in range(10):
        w.add(_row(i))
    w.flush()
    header, table = read_results(path)  # the .parquet does not exist yet: its live stream is read
    assert table.num_rows == 10 and not header.complete
    for i in (10, 11):  # two flushes: the crash below cuts the second
        w.add(_row(i))
        w.flush()
    # a crash: the stream file stays, cut in the middle of a batch
    live = Path(f"{path}.grr")
    data = live.read_bytes()
    live.write_bytes(data[:-3])
    header, table = read_results(path)
    assert table.num_rows == 11 and table.column("seq").to_pylist() == list(range(11))
    assert not header.complete


@settings(max_examples=8, deadline=None)
@given(st.lists(st.lists(rows(), min_size=1, max_size=3), max_size=3))
def test_a_log_cut_at_any_byte_reads_up_to_its_last_complete_batch(
    tmp_path_factory: pytest.TempPathFactory, flushes: list[list[ResultRow]]
) -> None:
    d = tmp_path_factory.mktemp("cut")
    path = d / "out.grr"
    w = ResultWriter(path, HEADER)
    ends = [(path.stat().st_size, 0)]  # (file size, rows) after the header and after each flush
    for chunk in flushes:
        for r in chunk:
            w.add(r)
        w.flush()
        ends.append((path.stat().st_size, w.rows))
    w.close(end_us=7)
    data = path.read_bytes()
    every = [r for chunk in flushes for r in chunk]
    cut = d / "cut.grr"
    for n in range(len(data) + 1):
        cut.write_bytes(data[:n])
        if n < ends[0][0]:
            with pytest.raises(ResultLogError, match="cut.grr"):
                read_results(cut)
            continue
        header, table = read_results(cut)
        kept = max(rows for size, rows in ends if size <= n)
        assert table_rows(table) == every[:kept], n
        # complete once the trailer came whole (the end-of-stream marker may be cut)
        assert header.complete == (n >= len(data) - 8)
        assert header.run_id == "run-1"


def test_rows_reach_the_file_within_flush_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import judge.resultlog as rl

    clock = [100.0]
    monkeypatch.setattr(rl.time, "monotonic", lambda: clock[0])
    path = tmp_path / "out.grr"
    w = ResultWriter(path, HEADER)
    w.add(_row(0))
    assert read_results(path)[1].num_rows == 0  # buffered
    clock[0] += rl.FLUSH_S
    w.add(_row(1))
    assert read_results(path)[1].num_rows == 2  # the interval passed: both written
    w.close(end_us=123)
    h, t = read_results(path)
    assert h.complete and h.end_us == 123 and t.num_rows == 2


def test_the_trailer_completes_the_header(tmp_path: Path) -> None:
    path = tmp_path / "out.grr"
    with ResultWriter(path, HEADER) as w:
        w.add(_row(0))
        w.close(end_us=9, sender={"cpu_s": 1.5}, lost=[{"shard": 1}], end_state={"a": 1}, bogus=2)
    h, _ = read_results(path)
    assert (h.end_us, h.sender, h.lost) == (9, {"cpu_s": 1.5}, [{"shard": 1}])
    assert h.end_state == {"a": 1}
    assert h == w.header


def _grr(path: Path, header: dict, rows: list, end: dict | None = None) -> Path:
    base = {"format": RESULT_FORMAT, "run_id": "old", "target_url": "http://x", "trace_path": "t"}
    data = msgpack.packb({**base, **header}) + b"".join(msgpack.packb(r) for r in rows)
    path.write_bytes(data + (msgpack.packb({"end": end}) if end is not None else b""))
    return path


@pytest.mark.parametrize("version", [1, 2])
def test_msgpack_logs_of_older_gaterush_still_read(tmp_path: Path, version: int) -> None:
    row = list(_row(3))[: 14 if version == 1 else 15]  # version 1 rows had no group
    if version == 2:
        row[14] = "ticket:1/T1"
    p = _grr(tmp_path / "old.grr", {"version": version}, [row, row], {"end_us": 5, "rows": 2})
    header, table = read_results(p)
    assert header.complete and header.end_us == 5 and header.run_id == "old"
    group = row[14] if version == 2 else None
    assert table.num_rows == 2 and table.column("group").to_pylist() == [group, group]
    h, it = iter_rows(p)
    assert [r.seq for r in it] == [3, 3]


def test_not_a_result_log(tmp_path: Path) -> None:
    bad = tmp_path / "x.grr"
    bad.write_bytes(b"")
    with pytest.raises(ResultLogError, match="x.grr"):
        read_results(bad)
    with pytest.raises(ResultLogError, match="no such"):
        read_results(tmp_path / "missing.grr")
    with pytest.raises(ValueError, match="parquet or .grr"):
        ResultWriter(tmp_path / "x.csv", HEADER)
    other = tmp_path / "other.grr"  # an Arrow stream, but not of result rows
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, pa.schema([("a", pa.int64())])) as wr:
        wr.write_batch(pa.record_batch([pa.array([1])], names=["a"]))
    other.write_bytes(sink.getvalue().to_pybytes())
    with pytest.raises(ResultLogError, match="other.grr.*columns"):
        read_results(other)


statuses = st.sampled_from([0, 200, 201, 402, 404, 500, 503])
progress_rows = st.builds(
    ResultRow, st.integers(0, 10**6), st.sampled_from(["rpc:scan_ticket_atomic", "stripe:pi", "fn:webhook"]),
    st.just("scan"), st.just("a"), st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**7),
    statuses, st.none() | st.just("timeout"), st.just(1), st.just(1),
    st.sampled_from([None, "valid", "declined"]), st.sampled_from([None, "valid", "declined", "http_404"]),
    st.sampled_from([None, None, None, DROPPED_EVENTS, "dashboard_load"]),
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(st.lists(progress_rows, max_size=40))
def test_a_batch_summary_counts_as_the_judge_does(rs: list[ResultRow]) -> None:
    """What a worker reports for the progress line: the judge's failure rule and percentile."""
    buf = RowBuffer()
    for r in rs:
        buf.append(*r)
    batch = buf.take()
    if batch is None:
        return
    c = summarize(batch)
    reqs = [r for r in rs if r.metric is None]
    assert (c.rows, c.requests) == (len(rs), len(reqs))
    assert c.dropped == sum(r.metric == DROPPED_EVENTS for r in rs)
    failed = [
        metrics.request_failed(r.target, r.status, r.error, r.outcome, r.expect) for r in reqs
    ]
    assert c.failed == sum(failed)
    if reqs:
        durations = np.array([(r.done_us - r.sent_us) / 1000 for r in reqs])
        assert c.p95_ms == pytest.approx(metrics.percentile(durations, 0.95))
    else:
        assert c.p95_ms is None


@pytest.mark.parametrize("ext", ["grr", "parquet"])
def test_replay_judges_in_memory_what_report_judges_from_the_file(tmp_path: Path, ext: str) -> None:
    """The table the writer keeps (replay judges it without reading Parquet back) gives the same
    metrics, verdicts and fidelity as the file read back by `gaterush report`."""
    from judge import report, summary

    path = tmp_path / f"out.{ext}"
    h = ResultHeader(run_id="r", target_url="http://127.0.0.1:1", trace_path="t.grt",
                     thresholds={"http_req_duration": ["p(95)<3"], "http_req_failed": ["rate<0.1"]},
                     expected_requests=300, start_unix_us=1_700_000_000_000_000)  # fmt: skip
    with ResultWriter(path, h) as w:
        for i in range(300):
            status = 503 if i % 17 == 0 else 200
            w.add(ResultRow(i, "rpc:scan_ticket_atomic", "scan", f"a:{i % 7}", i * 1000, i * 1000 + i % 5,
                            i * 1000 + 2000 + 10 * i, status, None, 300, 80, "valid", "valid"))  # fmt: skip
            if i % 50 == 0:
                w.flush()
        w.add(ResultRow(999, "rpc:scan_ticket_atomic", "scan", "a:1", 5, 5, 5, 0, "dropped: cap", 0, 0,
                        None, "valid", DROPPED_EVENTS))  # fmt: skip
        w.close(end_us=400_000, sender={"cpu_s": 0.1, "wall_s": 0.4, "processes": 1})

    def judged(results: report.Results) -> dict:
        j = report.judge_run(results)
        return summary.to_json(j.metrics, j.verdicts, fidelity=j.fidelity)

    from_file = judged(report.load([path]))
    assert judged(report.in_memory(path, w.header, w.table())) == from_file
    assert from_file["metrics"]["http_reqs"]["values"]["count"] == 300


def _read_all(path: Path) -> None:
    read_results(path)
    list(iter_rows(path)[1])


@pytest.fixture(scope="module")
def good_logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The bytes of a finished result log in each format, and of an old msgpack one."""
    d = tmp_path_factory.mktemp("good")
    out = {}
    for ext in ("grr", "parquet"):
        with ResultWriter(d / f"r.{ext}", HEADER) as w:
            for i in range(40):
                w.add(ResultRow(i, "scan", f"ev{i}", "POST", i, i + 1, i + 2, 200, None,
                                10, 20, "é", None, None, None))  # fmt: skip
        out[ext] = (d / f"r.{ext}").read_bytes()
    head = msgpack.packb({"format": RESULT_FORMAT, "version": 2, **HEADER.to_dict()})
    rows = b"".join(msgpack.packb([i, "scan", "e", "POST", i, i, i, 200, None, 1, 2, None,
                                   None, None, None]) for i in range(20))  # fmt: skip
    out["msgpack"] = head + rows
    return out


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=600), st.sampled_from(["grr", "parquet"]), st.booleans())
def test_junk_is_a_named_error_never_a_crash(
    tmp_path_factory: pytest.TempPathFactory, junk: bytes, ext: str, as_stream: bool
) -> None:
    """Any bytes (junk as an old msgpack log, or after an IPC stream's magic) read or fail naming
    the file; a map keyed by a list, for one, once escaped as an internal TypeError."""
    path = tmp_path_factory.mktemp("junk") / f"x.{ext}"
    path.write_bytes((b"\xff\xff\xff\xff" if as_stream else b"") + junk)
    try:
        _read_all(path)
    except ResultLogError as e:
        assert str(path) in str(e)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["grr", "parquet", "msgpack"]), st.data())
def test_damaged_log_is_a_named_error_never_a_crash(
    tmp_path_factory: pytest.TempPathFactory, good_logs: dict[str, bytes], kind: str, data: Any
) -> None:
    """A good log with bytes overwritten and maybe cut short: rows, or an error naming the file
    (a Parquet footer or string page with bad UTF-8 once escaped as UnicodeDecodeError)."""
    raw = bytearray(good_logs[kind])
    for _ in range(data.draw(st.integers(1, 6), label="flips")):
        at = data.draw(st.integers(0, len(raw) - 1), label="at")
        raw[at] = data.draw(st.integers(0, 255), label="byte")
    if data.draw(st.booleans(), label="cut"):
        raw = raw[: data.draw(st.integers(0, len(raw)), label="cut at")]
    path = tmp_path_factory.mktemp("dmg") / f"x.{'parquet' if kind == 'parquet' else 'grr'}"
    path.write_bytes(bytes(raw))
    try:
        _read_all(path)
    except ResultLogError as e:
        assert str(path) in str(e)


def test_bad_utf8_in_a_parquet_logs_footer_or_strings_is_named(
    tmp_path: Path, good_logs: dict[str, bytes]
) -> None:
    """Parquet does not check UTF-8 on read: a damaged footer or string page once escaped as a
    UnicodeDecodeError, in reading or later in the judge's own code."""
    for name, (old, new) in {
        "footer": (b"target", b"\xffarget"),
        "page": ("é".encode(), b"\xc3("),
    }.items():
        path = tmp_path / f"{name}.parquet"
        path.write_bytes(good_logs["parquet"].replace(old, new))
        for read in (read_results, lambda p: list(iter_rows(p)[1])):
            with pytest.raises(ResultLogError, match=rf"{name}\.parquet: (not a readable|damaged)"):
                read(path)
