"""The result log: round trips, readable while running, truncated files, parquet conversion."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from judge.resultlog import (
    COLUMNS,
    ResultHeader,
    ResultLogError,
    ResultRow,
    ResultWriter,
    iter_rows,
    pack_row,
    read_results,
)

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
    got = [ResultRow(*(table.column(c)[i].as_py() for c in COLUMNS)) for i in range(table.num_rows)]
    assert got == rs
    h2, it = iter_rows(path)
    assert list(it) == rs and h2.run_id == "run-1"
    assert not Path(f"{path}.grr").exists()


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
    w.add_packed(pack_row(_row(10)) + pack_row(_row(11)), 2)
    w.flush()
    # a crash: the stream file stays, cut in the middle of a row
    live = Path(f"{path}.grr")
    data = live.read_bytes()
    live.write_bytes(data[:-3])
    header, table = read_results(path)
    assert table.num_rows == 11 and table.column("seq").to_pylist() == list(range(11))
    assert not header.complete


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


def test_not_a_result_log(tmp_path: Path) -> None:
    bad = tmp_path / "x.grr"
    bad.write_bytes(b"")
    with pytest.raises(ResultLogError, match="x.grr"):
        read_results(bad)
    with pytest.raises(ResultLogError, match="no such"):
        read_results(tmp_path / "missing.grr")
    with pytest.raises(ValueError, match="parquet or .grr"):
        ResultWriter(tmp_path / "x.csv", HEADER)
