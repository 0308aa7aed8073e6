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
from hypothesis import strategies as st

from tests.strategies import traces
from traces import event as ev
from traces.event import Event, TraceError
from traces.header import TraceHeader
from traces.info import (
    DAY,
    HOUR,
    MAX_ROWS,
    MINUTE,
    SECOND,
    TIMELINE_COLUMNS,
    Peak,
    _TimelineBuilder,
    auto_floor,
    bar,
    bucket_label,
    clock,
    format_info,
    info_json,
    parse_bucket,
    summarize,
)
from traces.io import open_writer
from traces.projection import project
from traces.schema import events_to_batch as to_batch

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


# --- timeline ------------------------------------------------------------------------------------


def ev_at(sec: float, seq: int, kind: str, target: str | None, expect: str | None = None) -> Event:
    return Event(round(sec * SECOND), seq, kind, f"a:{seq}", target, b"", None, expect)


# (seconds, kind, target, expect): a hand-built trace whose bucket counts are known exactly
HAND = [
    (0.0, ev.ARRIVE, None, None),
    (0.5, ev.ARRIVE, None, None),
    (0.999999, ev.SCAN, ev.TARGET_SCAN, ev.VALID),
    (1.0, ev.SCAN, ev.TARGET_SCAN, ev.EXITED),  # a pass-out: counted in scan and pass-outs
    (1.0, ev.LEAVE, None, None),  # no column
    (1.5, ev.CHECKOUT, ev.TARGET_PI_CREATE, ev.OK),
    (2.0, ev.CONFIRM, ev.TARGET_PI_CONFIRM, ev.SUCCEEDED),
    (2.0, ev.VIEW, ev.TARGET_REST_EVENTS, None),
    (2.2, ev.VIEW, ev.TARGET_REST_TICKETS, None),
    (2.4, ev.VIEW, ev.TARGET_REVENUE, None),
    (2.6, ev.VIEW, "rest:orders", None),  # any other dashboard read
    (4.0, ev.SUBSCRIBE, ev.TARGET_REALTIME_TICKETS, None),
    (4.1, "write", "rest:orders", None),  # other
    (9.0, ev.WEBHOOK, ev.TARGET_WEBHOOK, ev.PROCESSED),
    (9.5, ev.WEBHOOK, ev.TARGET_WEBHOOK, ev.DUPLICATE),
    (9.9, ev.UNSUBSCRIBE, None, None),
]


def hand_trace(tmp_path: Path, fmt: str = "parquet") -> Path:
    path = tmp_path / f"hand.{fmt}"
    events = [ev_at(t, i, k, tg, x) for i, (t, k, tg, x) in enumerate(HAND)]
    write(path, events, **({"row_group_rows": 3} if fmt == "parquet" else {}))
    return path


def rows_of(info) -> dict[int, dict[str, int]]:
    return {
        r.start_us: dict(zip(TIMELINE_COLUMNS, r.counts, strict=True)) for r in info.timeline.rows
    }


def zero(**counts: int) -> dict[str, int]:
    return {c: counts.get(c.replace("-", "_"), 0) for c in TIMELINE_COLUMNS}


@pytest.mark.parametrize("fmt", ["parquet", "grt"])
def test_hand_built_trace_has_exact_bucket_counts(tmp_path: Path, fmt: str) -> None:
    info = summarize(hand_trace(tmp_path, fmt))
    tl = info.timeline
    assert tl.auto and tl.bucket_us == SECOND  # 9.9 s long: 1 s buckets
    assert rows_of(info) == {
        0: zero(arrive=2, scan=1),
        1 * SECOND: zero(scan=1, pass_outs=1, create=1),
        2 * SECOND: zero(confirm=1, dashboard=4),
        4 * SECOND: zero(realtime=1, other=1),
        9 * SECOND: zero(webhook=2),
    }  # seconds 3 and 5-8 had no traffic: no row
    assert [r.requests for r in tl.rows] == [1, 2, 5, 2, 2]
    assert sum(r.requests for r in tl.rows) == info.requests

    info = summarize(hand_trace(tmp_path, fmt), bucket_us=5 * SECOND)
    assert not info.timeline.auto and info.timeline.bucket_us == 5 * SECOND
    assert rows_of(info) == {
        0: zero(
            arrive=2, scan=2, pass_outs=1, create=1, confirm=1, dashboard=4, realtime=1, other=1
        ),
        5 * SECOND: zero(webhook=2),
    }
    info = summarize(hand_trace(tmp_path, fmt), bucket_us=500_000)
    assert [r.start_us for r in info.timeline.rows] == [
        0, 500_000, 1_000_000, 1_500_000, 2_000_000, 2_500_000, 4_000_000, 9_000_000, 9_500_000
    ]  # fmt: skip
    assert rows_of(info)[500_000] == zero(arrive=1, scan=1)


def test_hand_built_trace_in_text_and_json(tmp_path: Path) -> None:
    info = summarize(hand_trace(tmp_path))
    text = format_info(info)
    assert "timeline  per 1s bucket, automatic" in text
    row = next(line for line in text.splitlines() if line.startswith("+0:00:02"))
    # columns shown: all but none are zero here; confirm 1, dashboard 4, requests 5, the longest bar
    assert row.split()[1:10] == ["0", "0", "0", "0", "0", "1", "4", "0", "0"]
    assert row.split()[10] == "5" and row.endswith("█" * 20)
    d = json.loads(info_json(info))["timeline"]
    assert d["bucket_us"] == SECOND and d["bucket"] == "1s" and d["auto"] is True
    assert d["rows"][2] == {"start_us": 2 * SECOND, **zero(confirm=1, dashboard=4), "requests": 5}
    assert d["columns"][-1] == "requests"


def test_columns_without_traffic_are_left_out_of_the_table(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    write(path, [ev_at(i, i, ev.SCAN, ev.TARGET_SCAN, ev.VALID) for i in range(3)])
    text = format_info(summarize(path))
    header = next(line for line in text.splitlines() if line.startswith("at "))
    assert header.split() == ["at", "scan", "requests"]


@pytest.mark.parametrize(
    ("duration", "floor"),
    [
        (0, SECOND),
        (2 * MINUTE - 1, SECOND),
        (2 * MINUTE, 10 * SECOND),
        (20 * MINUTE - 1, 10 * SECOND),
        (20 * MINUTE, MINUTE),
        (3 * HOUR - 1, MINUTE),
        (3 * HOUR, 10 * MINUTE),
        (30 * DAY, 10 * MINUTE),
    ],
)
def test_auto_floor(duration: int, floor: int) -> None:
    assert auto_floor(duration) == floor


@pytest.mark.parametrize(
    ("step_s", "n", "width"),
    [
        (1, 60, SECOND),  # 60 rows of 1 s: fits
        (1, 90, 5 * SECOND),  # 90 rows would be too many: 5 s, 18 rows
        (10, 60, 10 * SECOND),  # 10 min at one event per 10 s: 10 s buckets, 60 rows
        (10, 61, 30 * SECOND),  # one more row than fits
        (60, 120, 5 * MINUTE),  # 2 h: 1 min floor, 120 rows: 5 min
        (60, 7 * 60 + 30, 10 * MINUTE),  # 7.5 h: 10 min, 45 rows
        (3600, 24 * 31, DAY),  # 31 days of hourly events: 62 half-days, so days
        (3600, 24 * 70, 2 * DAY),  # beyond the ladder: doubling
    ],
)
def test_automatic_bucket_choice(tmp_path: Path, step_s: int, n: int, width: int) -> None:
    path = tmp_path / "b.parquet"
    write(path, [ev_at(i * step_s, i, ev.SCAN, ev.TARGET_SCAN) for i in range(n)], row_group_rows=7)
    tl = summarize(path).timeline
    assert tl.bucket_us == width and len(tl.rows) <= MAX_ROWS
    assert sum(r.requests for r in tl.rows) == n


def test_sparse_long_trace_keeps_the_floor_not_more() -> None:
    # three bursts over 5 h: 10 min buckets (the floor), only 3 rows
    b = _TimelineBuilder(SECOND, auto=True)
    for start in (0, 2 * HOUR, 5 * HOUR):
        b.add(to_batch([ev_at(start / SECOND + i, i, ev.SCAN, ev.TARGET_SCAN) for i in range(5)]))
    tl = b.result()
    assert tl.bucket_us == 10 * MINUTE and [r.start_us for r in tl.rows] == [0, 2 * HOUR, 5 * HOUR]


LADDER_S = [1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200, 21600, 43200, 86400]


def naive_columns(e: Event) -> list[str]:
    cols = []
    if e.target is None:
        if e.kind == ev.ARRIVE:
            cols.append("arrive")
    elif e.target == ev.TARGET_SCAN:
        cols.append("scan")
    elif e.target == ev.TARGET_WEBHOOK:
        cols.append("webhook")
    elif e.target == ev.TARGET_PI_CREATE:
        cols.append("create")
    elif e.target == ev.TARGET_PI_CONFIRM:
        cols.append("confirm")
    elif e.target.startswith("realtime:"):
        cols.append("realtime")
    elif e.kind == ev.VIEW or e.target in (
        ev.TARGET_REST_EVENTS,
        ev.TARGET_REST_TICKETS,
        ev.TARGET_REVENUE,
    ):
        cols.append("dashboard")
    else:
        cols.append("other")
    if e.expect == ev.EXITED:
        cols.append("pass-outs")
    return cols


def naive_timeline(events: list[Event], width: int) -> dict[int, Counter]:
    rows: dict[int, Counter] = {}
    for e in events:
        for c in naive_columns(e):
            rows.setdefault(e.t_us // width * width, Counter())[c] += 1
    return rows


def naive_auto_width(events: list[Event]) -> int:
    duration = events[-1].t_us - events[0].t_us if events else 0
    floor = auto_floor(duration)
    w = floor
    widths = [s * SECOND for s in LADDER_S] + [DAY * 2**k for k in range(1, 40)]
    for w in widths:
        if w >= floor and len(naive_timeline(events, w)) <= MAX_ROWS:
            return w
    raise AssertionError("no width")


KINDS = [
    (ev.ARRIVE, None, None),
    (ev.LEAVE, None, None),
    (ev.SCAN, ev.TARGET_SCAN, ev.VALID),
    (ev.SCAN, ev.TARGET_SCAN, ev.EXITED),
    (ev.WEBHOOK, ev.TARGET_WEBHOOK, ev.PROCESSED),
    (ev.CHECKOUT, ev.TARGET_PI_CREATE, None),
    (ev.CONFIRM, ev.TARGET_PI_CONFIRM, ev.DECLINED),
    (ev.VIEW, ev.TARGET_REVENUE, None),
    (ev.VIEW, "rest:orders", None),
    ("write", "rest:orders", None),
    (ev.SUBSCRIBE, "realtime:orders", None),
    ("odd", None, ev.EXITED),  # a pass-out with no target still counts as one
]


@st.composite
def spread_traces(draw) -> list[Event]:
    start = draw(st.one_of(st.sampled_from([0, -DAY - 1]), st.integers(-(10**12), 10**12)))
    span = draw(st.sampled_from([10 * SECOND, 2 * MINUTE, 5 * MINUTE, HOUR, 8 * HOUR, 9 * DAY]))
    unit = draw(st.sampled_from([1, SECOND, 10 * SECOND, MINUTE]))  # coarse units share buckets
    offsets = sorted(unit * o for o in draw(st.lists(st.integers(0, span // unit), max_size=150)))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=len(offsets), max_size=len(offsets)))
    return [
        Event(start + o, i, k, "a", tg, b"", None, x)
        for i, (o, (k, tg, x)) in enumerate(zip(offsets, kinds, strict=True))
    ]


def as_rows(tl) -> dict[int, Counter]:
    return {
        r.start_us: Counter({c: n for c, n in zip(TIMELINE_COLUMNS, r.counts, strict=True) if n})
        for r in tl.rows
    }


@SETTINGS
@given(
    events=spread_traces(),
    rows=st.integers(1, 40),
    bucket=st.one_of(st.none(), st.sampled_from([1000, SECOND, 7 * SECOND, HOUR])),
)
def test_timeline_equals_a_naive_count_whatever_the_batching(
    tmp_path: Path, events, rows, bucket
) -> None:
    path = tmp_path / "x.parquet"
    write(path, events, row_group_rows=rows)
    tl = summarize(path, bucket_us=bucket).timeline
    width = naive_auto_width(events) if bucket is None else bucket
    assert tl.bucket_us == width
    assert as_rows(tl) == naive_timeline(events, width)
    if bucket is None:
        assert len(tl.rows) <= MAX_ROWS


@SETTINGS
@given(events=spread_traces())
def test_peak_minute_equals_a_brute_force_search(tmp_path: Path, events) -> None:
    path = tmp_path / "x.parquet"
    write(path, events, row_group_rows=9)
    info = summarize(path)

    def brute(evs: list[Event]) -> Peak | None:
        per = Counter(e.t_us // SECOND for e in evs)
        best = None
        for end in sorted(per):  # windows [end-59, end]; the best one ends on a busy second
            inside = [s for s in per if end - 59 <= s <= end]
            n = sum(per[s] for s in inside)
            if best is None or n > best.requests:
                best = Peak(n, min(inside))
        return best

    requests = [e for e in events if e.target is not None]
    assert info.peak_minute == brute(requests)
    assert info.peak_minute_by_target == {
        t: brute([e for e in requests if e.target == t]) for t in {e.target for e in requests}
    }
    if info.peak is not None:
        assert info.peak.requests <= info.peak_minute.requests


def test_peak_minute_is_sixty_whole_seconds(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    # at 0, 59, 60 s: any 60 s holds two of them; the first such window starts at 0
    write(path, [ev_at(t, i, ev.SCAN, ev.TARGET_SCAN) for i, t in enumerate([0, 59.9, 60, 200])])
    info = summarize(path)
    assert info.peak_minute == Peak(2, 0) == info.peak_minute_by_target[ev.TARGET_SCAN]
    d = json.loads(info_json(info))
    assert d["peak_rpm"] == {"requests": 2, "second": 0}
    assert d["peak_rpm_by_target"] == {ev.TARGET_SCAN: {"requests": 2, "second": 0}}
    assert "peak/min" in format_info(info)


def test_a_bucket_split_across_batches_is_one_row(tmp_path: Path) -> None:
    # 60 busy seconds, two events each, batches of 3: exactly MAX_ROWS rows of 1 s
    path = tmp_path / "s.parquet"
    events = [ev_at(i // 2, i, ev.SCAN, ev.TARGET_SCAN) for i in range(120)]
    write(path, events, row_group_rows=3)
    tl = summarize(path).timeline
    assert tl.bucket_us == SECOND and len(tl.rows) == MAX_ROWS == 60
    assert {r.requests for r in tl.rows} == {2}


def test_times_before_the_origin_rebin_exactly(tmp_path: Path) -> None:
    # one scan a second from -100 s to +100 s, read in batches of 10: widened twice on the way
    path = tmp_path / "n.parquet"
    write(
        path,
        [ev_at(t, t + 100, ev.SCAN, ev.TARGET_SCAN) for t in range(-100, 101)],
        row_group_rows=10,
    )
    tl = summarize(path).timeline
    assert tl.bucket_us == 10 * SECOND
    assert [(r.start_us // SECOND, r.requests) for r in tl.rows] == [
        (s, 1 if s == 100 else 10) for s in range(-100, 101, 10)
    ]


def test_timeline_memory_is_bounded_by_its_rows_not_the_events() -> None:
    # 400 batches over 4 days: the builder never holds more than MAX_ROWS rows
    b = _TimelineBuilder(SECOND, auto=True)
    held = 0
    for k in range(400):
        batch = [
            ev_at(k * 900 + i * 0.9, k * 1000 + i, ev.SCAN, ev.TARGET_SCAN) for i in range(1000)
        ]
        b.add(to_batch(batch))
        held = max(held, len(b.rows))
    assert held <= MAX_ROWS
    tl = b.result()
    assert sum(r.requests for r in tl.rows) == 400_000 and tl.bucket_us == 2 * HOUR


def test_summary_reads_columnar_batches_never_events(tmp_path: Path, monkeypatch) -> None:
    from traces.parquet import ParquetTraceReader

    path = hand_trace(tmp_path)

    def refuse(self):
        raise AssertionError("summarize iterated Event objects")

    monkeypatch.setattr(ParquetTraceReader, "__iter__", refuse)
    assert sum(r.requests for r in summarize(path).timeline.rows) == summarize(path).requests


@pytest.mark.parametrize(
    ("text", "us"),
    [("1s", SECOND), ("10s", 10 * SECOND), ("5m", 5 * MINUTE), ("5min", 5 * MINUTE),
     ("1h", HOUR), ("2d", 2 * DAY), ("250ms", 250_000), ("30", 30 * SECOND), (" 5M ", 5 * MINUTE)],
)  # fmt: skip
def test_parse_bucket(text: str, us: int) -> None:
    assert parse_bucket(text) == us


@pytest.mark.parametrize("text", ["", "0s", "5x", "-1m", "1.5m", "m", "5 minutes", "400d"])
def test_parse_bucket_refuses_naming_the_value(text: str) -> None:
    with pytest.raises(ValueError, match=f"--bucket {text!r}"):
        parse_bucket(text, "--bucket")


def test_bucket_label_and_bar() -> None:
    assert [bucket_label(w) for w in (SECOND, 90 * SECOND, 10 * MINUTE, 2 * HOUR, DAY, 250_000)] == [
        "1s", "90s", "10m", "2h", "1d", "250ms"
    ]  # fmt: skip
    assert bar(10, 10) == "█" * 20 and bar(5, 10) == "█" * 10 and bar(0, 10) == ""
    assert bar(1, 10_000) == "▏"  # any traffic shows
    assert bar(3, 16, width=2) == "▍"  # 3/16 of 2 cells = 3 eighths
