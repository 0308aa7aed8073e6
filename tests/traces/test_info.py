"""trace info: the summary is right, and it notices what is wrong with a file."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings

from tests.strategies import traces
from traces.event import Event, TraceError
from traces.header import TraceHeader
from traces.info import clock, format_info, info_json, summarize
from traces.io import open_writer
from traces.projection import project

SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def write(path: Path, events: list[Event], header: TraceHeader | None = None, **kw) -> None:
    with open_writer(path, header or TraceHeader(), **kw) as w:
        w.write_many(events)


@SETTINGS
@given(events=traces(max_size=50, day=True))
def test_summary_matches_a_naive_count(tmp_path: Path, events) -> None:
    # spread the events over a few seconds so peaks are interesting
    events = [e._replace(t_us=e.t_us % 5_000_000) for e in events]
    events.sort(key=lambda e: (e.t_us, e.seq))
    path = tmp_path / "x.parquet"
    write(path, events, row_group_rows=7)
    info = summarize(path)
    assert info.events == len(events)
    assert info.counts == dict(Counter(e.kind for e in events))
    assert info.expected == project(events)
    assert not info.mismatches and info.problem is None
    per = Counter((e.t_us // 1_000_000, e.target) for e in events if e.target is not None)
    overall = Counter(e.t_us // 1_000_000 for e in events if e.target is not None)
    if overall:
        best = max(overall.values())
        assert info.peak.requests == best
        assert info.peak.second == min(s for s, c in overall.items() if c == best)
    else:
        assert info.peak is None
    for target, p in info.peak_by_target.items():
        counts = {s: c for (s, t), c in per.items() if t == target}
        assert p.requests == max(counts.values())
        assert p.second == min(s for s, c in counts.items() if c == p.requests)
    assert set(info.peak_by_target) == {e.target for e in events if e.target is not None}
    if events:
        assert info.duration_us == events[-1].t_us - events[0].t_us
    json.loads(info_json(info))
    assert "header    ok" in format_info(info)


def test_an_unsorted_foreign_file_is_refused_naming_the_row(tmp_path: Path) -> None:
    src = tmp_path / "a.parquet"
    write(src, [Event(i, i, "k", "a", None, b"", None, None) for i in range(5)])
    table = pq.read_table(src)
    meta = pq.ParquetFile(src).metadata.metadata
    swapped = table.take(pa.array([0, 1, 3, 2, 4])).replace_schema_metadata(meta)
    out = tmp_path / "b.parquet"
    pq.write_table(swapped, out)
    with pytest.raises(TraceError, match=r"row 3: events are not sorted"):
        summarize(out)


def test_a_header_edited_after_writing_is_flagged(tmp_path: Path) -> None:
    src = tmp_path / "a.parquet"
    write(
        src, [Event(i, i, "scan", "a", "rpc:scan_ticket_atomic", b"", None, None) for i in range(5)]
    )
    f = pq.ParquetFile(src)
    header = json.loads(f.metadata.metadata[b"gaterush.header"])
    header["counts"]["scan"] = 6
    out = tmp_path / "b.parquet"
    pq.write_table(f.read(), out)
    # rewrite with the tampered header in the footer metadata
    w = pq.ParquetWriter(out, f.schema_arrow)
    w.write_table(f.read())
    w.add_key_value_metadata({"gaterush.header": json.dumps(header)})
    w.close()
    info = summarize(out)
    assert info.mismatches == ("counts",)
    assert "DIFFERS" in format_info(info)


def test_a_cut_grt_file_is_summarised_up_to_the_cut(tmp_path: Path) -> None:
    path = tmp_path / "a.grt"
    events = [
        Event(i * 1000, i, "scan", "a", "rpc:scan_ticket_atomic", b"", None, None)
        for i in range(100)
    ]
    write(path, events)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    info = summarize(path)
    assert 0 < info.events < 100 and info.problem and "truncated at byte" in info.problem
    assert not info.complete
    assert "PROBLEM" in format_info(info)


def test_header_fields_and_inventory_are_shown(tmp_path: Path) -> None:
    from traces.header import Inventory, VenueEvent

    h = TraceHeader(
        scenario={"name": "event-day"},
        seed=42,
        origin_unix_us=1_750_000_000_000_000,
        inventory=Inventory((VenueEvent(1, "Final", 60000, 55000, 9900),), allow_reentry=True),
    )
    path = tmp_path / "a.grt"
    write(
        path, [Event(3_600_000_000, 1, "scan", "a", "rpc:scan_ticket_atomic", b"", None, None)], h
    )
    text = format_info(summarize(path))
    assert "scenario event-day" in text and "seed 42" in text and "2025-06-15" in text
    assert "capacity 60,000" in text and "re-entry  allowed" in text and "+1:00:00" in text


def test_clock() -> None:
    assert clock(0) == "+0:00:00.000"
    assert clock(3_723_004_000) == "+1:02:03.004"
    assert clock(-1500) == "-0:00:00.001"


def test_empty_trace(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    write(path, [])
    info = summarize(path)
    assert info.events == 0 and info.peak is None and not info.mismatches
    assert "events    0" in format_info(info)
    assert dataclasses.asdict(info)["first_us"] is None
