"""Round trips, determinism and bad input for traces.io, over both formats."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import headers, traces
from traces.event import Event, TraceError, pack_payload
from traces.header import TraceHeader, normalized
from traces.io import open_reader, open_writer
from traces.projection import Projection, project
from traces.schema import SCHEMA

FORMATS = ("parquet", "grt")
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def write(path: Path, header: TraceHeader, events: list[Event], **kw) -> TraceHeader:
    with open_writer(path, header, **kw) as w:
        w.write_many(events)
    return w.header


def read(path: Path) -> tuple[TraceHeader, list[Event]]:
    with open_reader(path) as r:
        return r.header, list(r)


@SETTINGS
@given(header=headers(), events=traces(max_size=30), rows=st.integers(1, 8))
def test_parquet_grt_parquet_round_trip_is_lossless(tmp_path: Path, header, events, rows) -> None:
    a, b, c = tmp_path / "a.parquet", tmp_path / "b.grt", tmp_path / "c.parquet"
    written = write(a, header, events, row_group_rows=rows)
    h1, e1 = read(a)
    assert e1 == events
    assert h1 == written
    write(b, h1, e1)
    h2, e2 = read(b)
    assert (h2, e2) == (h1, e1)
    write(c, h2, e2, row_group_rows=rows)
    h3, e3 = read(c)
    assert (h3, e3) == (h1, e1)
    assert a.read_bytes() == c.read_bytes()


@SETTINGS
@given(header=headers(), events=traces(max_size=30, day=True))
def test_header_stats_equal_a_fold_over_the_events(tmp_path: Path, header, events) -> None:
    for fmt in FORMATS:
        h = write(tmp_path / f"x.{fmt}", header, events)
        p = Projection()
        p.add_many(events)
        assert h.expected == project(events)
        assert h.counts == p.sorted_counts()
        assert h.targets == p.sorted_targets()
        stored, _ = read(tmp_path / f"x.{fmt}")
        assert stored.expected == h.expected
        # the timing is a fold too: the last t_us, the busiest whole second (brute force)
        per: dict[tuple[int, str], int] = {}
        for e in events:
            if e.target is not None:
                per[(e.t_us // 1_000_000, e.target)] = (
                    per.get((e.t_us // 1_000_000, e.target), 0) + 1
                )
        total: dict[int, int] = {}
        for (sec, _), n in per.items():
            total[sec] = total.get(sec, 0) + n
        by_target: dict[str, int] = {}
        for (_, t), n in per.items():
            by_target[t] = max(by_target.get(t, 0), n)
        assert stored.duration_us == h.duration_us == (events[-1].t_us if events else 0)
        assert stored.peak_rps == max(total.values(), default=0)
        assert stored.peak_rps_by_target == dict(sorted(by_target.items()))
        # everything but the folds is the header that was given
        folds = dict(counts={}, targets={}, expected={}, duration_us=None, peak_rps=None,
                     peak_rps_by_target=None)  # fmt: skip
        assert dataclasses.replace(stored, **folds) == normalized(header)


@SETTINGS
@given(header=headers(), events=traces(max_size=25))
def test_writers_are_byte_deterministic(tmp_path: Path, header, events) -> None:
    for fmt in FORMATS:
        kw = {"row_group_rows": 3} if fmt == "parquet" else {}
        write(tmp_path / f"1.{fmt}", header, events, **kw)
        # a second writer fed one event at a time writes the same bytes: row groups are formed
        # by count, not by how the events were handed over
        with open_writer(tmp_path / f"2.{fmt}", header, **kw) as w:
            for e in events:
                w.write(e)
        assert (tmp_path / f"1.{fmt}").read_bytes() == (tmp_path / f"2.{fmt}").read_bytes()
        write(tmp_path / f"3.{fmt}", header, list(events), **kw)
        assert (tmp_path / f"1.{fmt}").read_bytes() == (tmp_path / f"3.{fmt}").read_bytes()


@SETTINGS
@given(events=traces(min_size=1, max_size=30), rows=st.integers(1, 7))
def test_batches_hold_the_same_events_in_bounded_batches(tmp_path: Path, events, rows) -> None:
    from traces.schema import batch_to_events

    for fmt in FORMATS:
        path = tmp_path / f"b.{fmt}"
        write(path, TraceHeader(), events, **({"row_group_rows": rows} if fmt == "parquet" else {}))
        with open_reader(path) as r:
            batches = list(r.batches(rows))
        assert all(b.schema.equals(SCHEMA) and 0 < b.num_rows <= rows for b in batches)
        assert [e for b in batches for e in batch_to_events(b)] == events


def ev(t: int, seq: int, **kw) -> Event:
    base = {
        "kind": "scan",
        "actor": "a",
        "target": None,
        "payload": b"",
        "after": None,
        "expect": None,
    }
    return Event(t, seq, **{**base, **kw})


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "events, why",
    [
        ([ev(5, 1), ev(4, 2)], "sorted"),
        ([ev(5, 2), ev(5, 2)], "sorted"),
        ([ev(5, 2), ev(5, 1)], "sorted"),
        ([ev(1.0, 1)], "t_us must be an int"),
        ([ev(1, True)], "seq must be an int"),
        ([ev(1, 2**63)], "does not fit in int64"),
        ([ev(1, 1, payload="text")], "payload must be bytes"),
        ([ev(1, 1, kind=None)], "kind must be a str"),
        ([ev(1, 1, actor="\ud800")], "UTF-8"),
        ([ev(1, 1, after=1.5)], "after must be an int"),
        ([(1, 2, 3)], "8 fields"),
    ],
)
def test_malformed_or_unsorted_events_are_refused_naming_the_problem(
    tmp_path, fmt, events, why
) -> None:
    with (
        pytest.raises(TraceError, match=why),
        open_writer(tmp_path / f"x.{fmt}", TraceHeader()) as w,
    ):
        w.write_many(events)


def test_a_writer_failing_inside_with_leaves_no_parquet_and_an_unfinished_grt(tmp_path) -> None:
    for fmt in FORMATS:
        path = tmp_path / f"x.{fmt}"
        with pytest.raises(RuntimeError), open_writer(path, TraceHeader()) as w:
            w.write(ev(1, 1))
            raise RuntimeError("model crashed")
    assert not (tmp_path / "x.parquet").exists()
    r = open_reader(tmp_path / "x.grt")
    assert not r.complete
    with pytest.raises(TraceError, match="without a trailer"):
        list(r)


@pytest.mark.parametrize(
    "scenario, where",
    [
        (
            {"gate": {"opens": __import__("datetime").time(10, 30)}},
            r"header\.scenario\.gate\.opens: a time",
        ),
        ({"lanes": [1, 2**64]}, r"header\.scenario\.lanes\[1\]: .* too big"),
        ({1: "x"}, r"header\.scenario: key 1 is not a string"),
    ],
)
def test_an_unstorable_header_is_refused_naming_the_key(tmp_path, scenario, where) -> None:
    h = TraceHeader(scenario=scenario)
    for fmt in FORMATS:
        with pytest.raises(TraceError, match=where):
            open_writer(tmp_path / f"x.{fmt}", h)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["trace.csv", "trace", "trace.parquet.gz"])
def test_unknown_suffix_is_named(tmp_path, name) -> None:
    with pytest.raises(TraceError, match=r"\.parquet or \.grt"):
        open_reader(tmp_path / name)
    with pytest.raises(TraceError, match=r"\.parquet or \.grt"):
        open_writer(tmp_path / name, TraceHeader())


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_empty_and_foreign_files_are_clear_errors(tmp_path, fmt) -> None:
    with pytest.raises(TraceError, match="no such file"):
        open_reader(tmp_path / f"nope.{fmt}")
    empty = tmp_path / f"empty.{fmt}"
    empty.write_bytes(b"")
    with pytest.raises(TraceError, match=str(empty)):
        open_reader(empty)
    junk = tmp_path / f"junk.{fmt}"
    junk.write_bytes(b"\xc1 this is not a trace" * 10)
    with pytest.raises(TraceError, match="not a"):
        open_reader(junk)


def test_a_msgpack_file_that_is_not_a_trace_is_refused(tmp_path) -> None:
    import msgpack

    path = tmp_path / "other.grt"
    path.write_bytes(msgpack.packb({"format": "something-else"}) + msgpack.packb([1, 2]))
    with pytest.raises(TraceError, match="not a gaterush trace"):
        open_reader(path)
    path.write_bytes(msgpack.packb({"format": "gaterush-trace", "version": 99}))
    with pytest.raises(TraceError, match="newer"):
        open_reader(path)


def test_a_parquet_file_that_is_not_a_trace_is_refused(tmp_path) -> None:
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), path)
    with pytest.raises(TraceError, match="missing column"):
        open_reader(path)
    table = pa.Table.from_batches([pa.RecordBatch.from_pylist([], schema=SCHEMA)])
    pq.write_table(table, path)
    with pytest.raises(TraceError, match="gaterush.header"):
        open_reader(path)


def test_a_parquet_trace_rewritten_by_another_tool_with_plain_strings_still_reads(tmp_path) -> None:
    events = [ev(1, 1, target="rpc:x", expect="valid", payload=pack_payload({"a": 1})), ev(2, 2)]
    src = tmp_path / "a.parquet"
    write(src, TraceHeader(seed=7), events)
    table = pq.read_table(src)
    fields = [
        f.with_type(pa.string()) if pa.types.is_dictionary(f.type) else f for f in table.schema
    ]
    plain = table.cast(
        pa.schema(
            fields,
            metadata={
                b"gaterush.header": pq.ParquetFile(src).metadata.metadata[b"gaterush.header"]
            },
        )
    )
    assert not any(pa.types.is_dictionary(f.type) for f in plain.schema)
    other = tmp_path / "b.parquet"
    pq.write_table(plain, other)
    header, got = read(other)
    assert got == events and header.seed == 7


def test_a_truncated_parquet_file_is_a_clear_error_naming_the_file(tmp_path) -> None:
    path = tmp_path / "cut.parquet"
    write(path, TraceHeader(), [ev(i, i) for i in range(100)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceError, match=r"cut\.parquet.*cut short.*\.grt"):
        open_reader(path)


def test_a_parquet_footer_naming_a_column_in_bad_utf8_is_a_clear_error(tmp_path) -> None:
    """A flipped byte in a column name of the footer once escaped as a UnicodeDecodeError."""
    path = tmp_path / "bad.parquet"
    write(path, TraceHeader(), [ev(i, i) for i in range(10)])
    data = path.read_bytes()
    path.write_bytes(data.replace(b"actor", b"\xffctor"))
    with pytest.raises(TraceError, match=r"bad\.parquet: not a readable Parquet file"):
        open_reader(path)


def test_header_metadata_is_canonical_json(tmp_path) -> None:
    path = tmp_path / "x.parquet"
    write(path, TraceHeader(scenario={"b": 1, "a": [1, 2]}), [ev(1, 1)])
    raw = pq.ParquetFile(path).metadata.metadata[b"gaterush.header"].decode()
    obj = json.loads(raw)
    assert raw == json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert obj["counts"] == {"scan": 1}


def test_parquet_rejects_append(tmp_path) -> None:
    with pytest.raises(TraceError, match="cannot be appended"):
        open_writer(tmp_path / "x.parquet", TraceHeader(), append=True)


@settings(SETTINGS, max_examples=60)
@given(
    events=traces(min_size=1, max_size=25, day=True),
    fmt=st.sampled_from(FORMATS),
    flips=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=3
    ),
)
def test_damaged_files_read_fine_or_raise_trace_error_never_anything_else(
    tmp_path, events, fmt, flips
) -> None:
    from traces.convert import convert
    from traces.info import summarize

    path = tmp_path / f"x.{fmt}"
    write(path, TraceHeader(), events, **({"row_group_rows": 5} if fmt == "parquet" else {}))
    data = bytearray(path.read_bytes())
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    path.write_bytes(bytes(data))
    for action in (
        lambda: read(path),
        lambda: summarize(path),
        lambda: convert(path, tmp_path / "o.grt"),
    ):
        with contextlib.suppress(TraceError):
            action()


@settings(SETTINGS, max_examples=60)
@given(
    events=traces(min_size=1, max_size=25, day=True),
    where=st.floats(0, 1, exclude_max=True),
    bit=st.integers(0, 7),
)
def test_any_bit_flip_before_the_grt_trailer_is_an_error(tmp_path, events, where, bit) -> None:
    path = tmp_path / "x.grt"
    write(path, TraceHeader(), events)
    with open_reader(path) as r:
        end = r.trailer_at
    data = bytearray(path.read_bytes())
    data[int(where * end)] ^= 1 << bit
    path.write_bytes(bytes(data))
    with pytest.raises(TraceError, match=str(path)):
        read(path)


@SETTINGS
@given(events=traces(max_size=40, day=True), cut=st.integers(0, 40))
def test_timing_folds_the_same_from_events_and_from_batches(events, cut) -> None:
    from traces.header import Timing
    from traces.schema import events_to_batch

    one, two = Timing(), Timing()
    one.add_many(events)
    for part in (events[:cut], events[cut:]):  # a second may straddle two batches
        if part:
            two.add_batch(events_to_batch(part))
    assert one.result() == two.result()


def _without_timing(path: Path) -> None:
    """Rewrite a trace as a gaterush that did not keep the header's timing would have written it."""
    from traces.header import TIMING_FIELDS

    with open_reader(path) as r:
        header, events = r.header, list(r)
    obj = {k: v for k, v in header.to_dict().items() if k not in TIMING_FIELDS}
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        meta = {b"gaterush.header": json.dumps(obj, sort_keys=True).encode()}
        pq.write_table(table.replace_schema_metadata(meta), path, write_statistics=["t_us"])
        return
    import struct
    import zlib

    import msgpack

    head = {**obj, "counts": {}, "targets": {}, "expected": {}}
    body = msgpack.packb(head) + b"".join(msgpack.packb(list(e)) for e in events)
    trailer = {"trailer": {"events": len(events), "crc32": zlib.crc32(body),
                           "counts": header.counts, "targets": header.targets,
                           "expected": header.expected}}  # fmt: skip
    path.write_bytes(body + msgpack.packb(trailer) + struct.pack(">BQ", 0xCF, len(body)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_trace_without_timing_in_its_header_still_reads(tmp_path: Path, fmt: str) -> None:
    from traces.info import summarize

    evs = [
        Event(i * 400_000, i, "scan", f"a:{i}", "rpc:x" if i % 2 else None, b"") for i in range(9)
    ]
    path = tmp_path / f"old.{fmt}"
    write(path, TraceHeader(), evs)
    _without_timing(path)
    h, back = read(path)
    assert back == evs and h.peak_rps is None and h.peak_rps_by_target is None
    # the Parquet footer's statistics give the duration; an old .grt's is unknown (as before)
    assert h.duration_us == (3_200_000 if fmt == "parquet" else None)
    assert summarize(path).mismatches == ()
    fresh = write(tmp_path / f"new.{fmt}", h, back)  # rewriting it computes them
    assert (fresh.duration_us, fresh.peak_rps, fresh.peak_rps_by_target) == (
        3_200_000,
        2,
        {"rpc:x": 2},
    )


def _events_or_error(it) -> tuple[list[Event], str | None]:
    got: list[Event] = []
    try:
        for e in it:
            got.append(e)
    except TraceError as err:
        return got, str(err)
    return got, None


@settings(SETTINGS, max_examples=40)
@given(
    events=traces(max_size=300, day=True),
    fmt=st.sampled_from(FORMATS),
    cut=st.none() | st.floats(0.3, 1, exclude_max=True),
)
def test_paced_reading_gives_what_iterating_gives(tmp_path, events, fmt, cut) -> None:
    """A replay reads a trace paced (small pieces; Parquet read ahead by a thread): the same
    events, and for a damaged file the same events before the same error."""
    path = tmp_path / f"p.{fmt}"
    write(path, TraceHeader(), events, **({"row_group_rows": 50} if fmt == "parquet" else {}))
    if cut is not None:
        data = path.read_bytes()
        path.write_bytes(data[: int(cut * len(data))])
    try:
        reader = open_reader(path)
    except TraceError:
        return  # unreadable at open: neither way reads it
    with reader as r:
        whole = _events_or_error(r)
        paced = _events_or_error(r.paced())
    assert paced == whole
    if cut is None:
        assert paced == (events, None)


def test_paced_parquet_reading_stops_its_thread_when_abandoned(tmp_path) -> None:
    import threading

    path = tmp_path / "big.parquet"
    write(path, TraceHeader(), [ev(i, i) for i in range(20_000)], row_group_rows=1000)
    with open_reader(path) as r:
        it = r.paced()
        first = [next(it) for _ in range(10)]
        it.close()
    assert [e.seq for e in first] == list(range(10))
    assert not any(t.name == "gaterush-trace-read" for t in threading.enumerate())
