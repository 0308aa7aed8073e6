"""`gaterush trace ...`: output and exit codes (0 fine, 104 bad input, 2 usage)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from traces import cli
from traces.event import Event, pack_payload
from traces.exitcodes import INVALID_INPUT, USAGE
from traces.header import TraceHeader
from traces.io import open_reader, open_writer


@pytest.fixture
def run():
    group = click.Group("gaterush")
    cli.register(group)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(group, ["trace", *args], catch_exceptions=False)

    return invoke


@pytest.fixture
def trace(tmp_path: Path) -> tuple[Path, list[Event]]:
    events = [
        Event(
            i * 250_000,
            i,
            "scan",
            f"attendee:{i}",
            "rpc:scan_ticket_atomic",
            pack_payload({"ticket_code": f"T1-{i:07d}", "event_id": 1, "bytes": b"\x01"}),
            None,
            "valid",
        )
        for i in range(20)
    ]
    path = tmp_path / "day.parquet"
    with open_writer(path, TraceHeader(scenario={"name": "scanner-burst"}, seed=3)) as w:
        w.write_many(events)
    return path, events


def test_info_table_and_json(run, trace) -> None:
    path, _ = trace
    r = run("info", str(path))
    assert r.exit_code == 0, r.output
    assert "rpc:scan_ticket_atomic" in r.output and "scenario scanner-burst" in r.output
    r = run("info", str(path), "--json")
    assert r.exit_code == 0
    d = json.loads(r.output)
    assert d["events"] == 20 and d["peak_rps"] == {"requests": 4, "second": 0}
    assert d["expected"]["admitted"] == 20 and d["header_consistent"] is True


def test_head_prints_n_decoded_events(run, trace) -> None:
    path, events = trace
    r = run("head", str(path), "-n", "3")
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert len(lines) == 3
    assert lines[1].startswith(
        "+0:00:00.250 #1 scan attendee:1 -> rpc:scan_ticket_atomic expect=valid "
    )
    assert '"ticket_code":"T1-0000001"' in lines[1] and '"bytes":"0x01"' in lines[1]
    r = run("head", str(path), "-n", "2", "--json")
    rows = [json.loads(x) for x in r.output.splitlines()]
    assert rows[0]["seq"] == 0 and rows[0]["payload"]["ticket_code"] == "T1-0000000"


def test_convert_both_ways_is_lossless(run, trace, tmp_path) -> None:
    path, events = trace
    grt, back = tmp_path / "day.grt", tmp_path / "back.parquet"
    assert run("convert", str(path), str(grt)).exit_code == 0
    assert run("convert", str(grt), str(back)).exit_code == 0
    assert back.read_bytes() == path.read_bytes()
    with open_reader(grt) as r:
        assert list(r) == events


def test_convert_of_a_cut_file_fails_and_writes_nothing_unless_salvaged(
    run, trace, tmp_path
) -> None:
    path, events = trace
    grt = tmp_path / "day.grt"
    run("convert", str(path), str(grt))
    data = grt.read_bytes()
    grt.write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "out.parquet"
    r = run("convert", str(grt), str(out))
    assert r.exit_code == INVALID_INPUT
    assert "truncated at byte" in r.output and str(grt) in r.output
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))
    r = run("convert", str(grt), str(out), "--salvage")
    assert r.exit_code == 0, r.output
    with open_reader(out) as reader:
        got = list(reader)
    assert 0 < len(got) < len(events) and got == events[: len(got)]
    assert reader.header.counts == {"scan": len(got)}


@pytest.mark.parametrize("cmd", [("info",), ("head",), ("convert", "x.grt")])
@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.parquet", None, "no such file"),
        ("trace.csv", b"a,b\n", "a trace file ends in .parquet or .grt"),
        ("junk.grt", b"\xc1\xc1\xc1", "not a gaterush trace"),
        ("junk.parquet", b"PAR1 not really", "not a readable Parquet file"),
    ],
)
def test_bad_files_exit_104_naming_the_file_without_a_traceback(
    run, tmp_path, cmd, name, content, message
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    args = [cmd[0], str(path), *[str(tmp_path / a) for a in cmd[1:]]]
    r = run(*args)
    assert r.exit_code == INVALID_INPUT, r.output
    assert message in r.output and str(path) in r.output
    assert "Traceback" not in r.output


def test_info_of_a_cut_file_prints_what_it_read_then_exits_104(run, trace, tmp_path) -> None:
    path, _ = trace
    grt = tmp_path / "day.grt"
    run("convert", str(path), str(grt))
    grt.write_bytes(grt.read_bytes()[:-40])
    r = run("info", str(grt))
    assert r.exit_code == INVALID_INPUT
    assert "PROBLEM" in r.output and "error:" in r.output


def test_info_timeline_with_a_chosen_bucket(run, trace) -> None:
    path, _ = trace  # 20 scans, one every 0.25 s
    r = run("info", str(path), "--bucket", "2s")
    assert r.exit_code == 0, r.output
    assert "timeline  per 2s bucket, --bucket" in r.output
    rows = [line.split() for line in r.output.splitlines() if line.startswith("+0:00:0")]
    assert [(row[0], row[-2]) for row in rows if len(row) > 3] == [
        ("+0:00:00", "8"),
        ("+0:00:02", "8"),
        ("+0:00:04", "4"),
    ]
    d = json.loads(run("info", str(path), "--json", "--bucket", "2s").output)
    assert d["timeline"]["bucket_us"] == 2_000_000 and d["timeline"]["auto"] is False
    assert [(x["start_us"], x["scan"], x["requests"]) for x in d["timeline"]["rows"]] == [
        (0, 8, 8),
        (2_000_000, 8, 8),
        (4_000_000, 4, 4),
    ]
    assert d["peak_rpm"] == {"requests": 20, "second": 0}
    d = json.loads(run("info", str(path), "--json").output)
    assert d["timeline"]["bucket"] == "1s" and d["timeline"]["auto"] is True


@pytest.mark.parametrize("value", ["5x", "0s", "1.5m", "", "-5m", "999d"])
def test_info_bad_bucket_exits_104_naming_the_value(run, trace, value) -> None:
    path, _ = trace
    r = run("info", str(path), "--bucket", value)
    assert r.exit_code == INVALID_INPUT, r.output
    assert f"--bucket {value!r}" in r.output and "Traceback" not in r.output
    assert "timeline" not in r.output  # refused before reading the file


def test_info_refuses_a_bucket_giving_too_many_rows(run, trace, monkeypatch) -> None:
    monkeypatch.setattr("traces.info.MAX_ASKED_ROWS", 5)
    path, _ = trace  # 20 scans over 5 s: 5 rows of 1 s, 10 of 500 ms
    assert run("info", str(path), "--bucket", "1s").exit_code == 0
    r = run("info", str(path), "--bucket", "500ms")
    assert r.exit_code == INVALID_INPUT
    assert "--bucket '500ms'" in r.output and "more than 5 rows" in r.output


def test_usage_errors_exit_2(run, trace) -> None:
    path, _ = trace
    assert run("head", str(path), "-n", "-1").exit_code == USAGE
    assert run("convert", str(path)).exit_code == USAGE
    assert run("info").exit_code == USAGE


def test_convert_refuses_to_overwrite_its_input(run, trace) -> None:
    path, _ = trace
    r = run("convert", str(path), str(path))
    assert r.exit_code == INVALID_INPUT and "is also an input" in r.output


def test_every_command_has_help_with_an_example(run) -> None:
    for name in ("info", "head", "convert"):
        r = run(name, "--help")
        assert r.exit_code == 0 and "Example:" in r.output and "gaterush trace " + name in r.output
