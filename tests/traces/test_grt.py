"""The .grt stream: truncation at any byte, corruption, append/resume, flush."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import headers, traces
from traces.event import Event, TraceError
from traces.header import TraceHeader
from traces.io import open_reader, open_writer

SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def read_until_error(path: Path) -> tuple[list[Event], TraceError | None]:
    got: list[Event] = []
    try:
        with open_reader(path) as r:
            for e in r:
                got.append(e)
    except TraceError as err:
        return got, err
    return got, None


def offset_in(err: TraceError) -> int:
    import re

    m = re.search(r"byte (\d+)", str(err))
    assert m, str(err)
    return int(m.group(1))


@settings(SETTINGS, max_examples=10)
@given(header=headers(), events=traces(min_size=1, max_size=10))
def test_truncation_at_every_byte_yields_a_prefix_then_an_error_naming_file_and_offset(
    tmp_path: Path, header, events
) -> None:
    full = tmp_path / "full.grt"
    with open_writer(full, header) as w:
        w.write_many(events)
    data = full.read_bytes()
    cut = tmp_path / "cut.grt"
    for n in range(len(data)):
        cut.write_bytes(data[:n])
        got, err = read_until_error(cut)
        assert got == events[: len(got)], n
        assert err is not None, f"no error for a file cut at byte {n} of {len(data)}"
        assert str(cut) in str(err)
        if n:
            assert offset_in(err) <= n
    assert read_until_error(full) == (events, None)


@SETTINGS
@given(events=traces(min_size=1, max_size=20), data=st.data())
def test_a_cut_file_resumed_with_append_equals_the_uncut_file(tmp_path: Path, events, data) -> None:
    full = tmp_path / "full.grt"
    with open_writer(full, TraceHeader(seed=1)) as w:
        w.write_many(events)
    raw = full.read_bytes()
    with open_reader(full) as r:
        start = r.events_start
    n = data.draw(st.integers(start, len(raw)), label="cut at")
    cut = tmp_path / "cut.grt"
    cut.write_bytes(raw[:n])
    kept, _ = read_until_error(cut)
    with open_writer(cut, TraceHeader(seed=999), append=True) as w:  # the file's own header is kept
        w.write_many(events[len(kept) :])
    assert cut.read_bytes() == raw


def test_flush_makes_every_written_event_readable_while_the_writer_is_open(tmp_path: Path) -> None:
    path = tmp_path / "rec.grt"
    w = open_writer(path, TraceHeader(source="record"))
    for i in range(5):
        w.write(Event(i, i, "scan", "a", "rpc:scan_ticket_atomic", b"", None, None))
        w.flush()
        got, err = read_until_error(path)
        assert [e.seq for e in got] == list(range(i + 1))
        assert err is not None and "without a trailer" in str(err)
    w.close()
    assert read_until_error(path)[1] is None


def test_corrupt_bytes_inside_the_stream_are_reported_at_their_offset(tmp_path: Path) -> None:
    path = tmp_path / "x.grt"
    events = [Event(i, i, "scan", "a", None, b"", None, None) for i in range(10)]
    with open_writer(path, TraceHeader()) as w:
        w.write_many(events[:4])
        w.flush()
        at = path.stat().st_size
        w.write_many(events[4:])
    data = bytearray(path.read_bytes())
    data[at] = 0xC1  # the one byte msgpack never uses
    path.write_bytes(bytes(data))
    got, err = read_until_error(path)
    assert got == events[:4]
    assert err is not None and f"byte {at}" in str(err) and "corrupt" in str(err)


def test_an_object_that_is_not_an_event_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "x.grt"
    head = msgpack.packb({"format": "gaterush-trace", "version": 1})
    good = msgpack.packb([1, 1, "scan", "a", None, b"", None, None])
    path.write_bytes(head + good + msgpack.packb([1, 2, 3]))
    got, err = read_until_error(path)
    assert [e.seq for e in got] == [1]
    assert (
        err is not None and f"byte {len(head) + len(good)}" in str(err) and "8 fields" in str(err)
    )


def test_a_trailer_that_disagrees_with_the_events_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "x.grt"
    with open_writer(path, TraceHeader()) as w:
        w.write_many([Event(i, i, "scan", "a", None, b"", None, None) for i in range(3)])
    data = path.read_bytes()
    # a trailer that claims 4 events (msgpack positive fixint 3 -> 4 right after the "events" key)
    i = data.rindex(b"\xa6events\x03")
    path.write_bytes(data[: i + 7] + b"\x04" + data[i + 8 :])
    got, err = read_until_error(path)
    assert len(got) == 3 and err is not None and "trailer says 4" in str(err)


def test_reader_header_has_the_trailer_stats_and_event_count(tmp_path: Path) -> None:
    path = tmp_path / "x.grt"
    with open_writer(path, TraceHeader(seed=5)) as w:
        w.write_many([Event(i, i, "arrive", "a", None, b"", None, None) for i in range(3)])
    with open_reader(path) as r:
        assert r.complete and r.num_events == 3
        assert r.header.counts == {"arrive": 3} and r.header.seed == 5


def test_write_after_close_is_an_error(tmp_path: Path) -> None:
    for fmt in ("grt", "parquet"):
        w = open_writer(tmp_path / f"x.{fmt}", TraceHeader())
        w.close()
        with pytest.raises(TraceError, match="after close"):
            w.write(Event(1, 1, "k", "a", None, b"", None, None))


@SETTINGS
@given(events=traces(min_size=1, max_size=30), rows=st.integers(1, 8), data=st.data())
def test_batches_of_a_cut_file_hold_every_complete_event_then_raise(
    tmp_path: Path, events, rows, data
) -> None:
    from traces.schema import batch_to_events

    full = tmp_path / "full.grt"
    with open_writer(full, TraceHeader()) as w:
        w.write_many(events)
    raw = full.read_bytes()
    with open_reader(full) as r:
        start = r.events_start
    n = data.draw(st.integers(start, len(raw) - 1), label="cut at")
    cut = tmp_path / "cut.grt"
    cut.write_bytes(raw[:n])
    by_row, err = read_until_error(cut)
    got: list[Event] = []
    with pytest.raises(TraceError, match=str(cut)), open_reader(cut) as r:
        for b in r.batches(rows):
            assert b.num_rows <= rows
            got.extend(batch_to_events(b))
    assert got == by_row == events[: len(got)]


@pytest.mark.parametrize("damage", ["flip", "junk-object"])
def test_append_refuses_a_damaged_file_instead_of_cutting_events_away(
    tmp_path: Path, damage
) -> None:
    path = tmp_path / "x.grt"
    events = [Event(i, i, "scan", "a", None, b"payload", None, None) for i in range(10)]
    with open_writer(path, TraceHeader()) as w:
        w.write_many(events[:3])
        w.flush()
        at = path.stat().st_size
        w.write_many(events[3:])
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[at + 3] ^= 0x01  # inside the 4th event: only the checksum can tell
    else:
        data[at] = 0x07  # a bare int where an event array should be
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    with pytest.raises(TraceError, match=str(path)):
        open_writer(path, TraceHeader(), append=True)
    assert path.read_bytes() == before
