"""The `gaterush trace` transform commands on real files: outputs, headers, exit codes."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from traces import event as ev
from traces.cli_transforms import register
from traces.event import Event, pack_payload
from traces.header import Inventory, TraceHeader, VenueEvent
from traces.io import open_reader, open_writer
from traces.projection import project

INV = Inventory(events=(VenueEvent(1, "Final", 100, 20, 2500),))


@pytest.fixture
def cli() -> click.Group:
    @click.group()
    def main() -> None:
        pass

    register(main)
    return main


@pytest.fixture
def day(tmp_path: Path) -> Path:
    events = []
    for i in range(40):
        scan = {
            "ticket_code": ev.ticket_code(1, i % 20),
            "event_id": 1,
            "gate": "A",
            "lane": i % 3,
            "direction": "in",
            "email": f"fan{i}@example.com",
        }
        events.append(
            Event(
                i * 10_000_000,
                i,
                ev.SCAN,
                f"attendee:{i % 20}",
                ev.TARGET_SCAN,
                pack_payload(scan),
                None,
                ev.VALID if i < 20 else ev.ALREADY_SCANNED,
            )
        )
    path = tmp_path / "day.parquet"
    with open_writer(path, TraceHeader(inventory=INV, origin_unix_us=10**15)) as w:
        w.write_many(events)
    return path


def read(path: Path) -> tuple[TraceHeader, list[Event]]:
    with open_reader(path) as r:
        return r.header, list(r)


def invoke(cli: click.Group, *args: str):
    return CliRunner().invoke(cli, ["trace", *map(str, args)])


def test_slice_pieces_merge_back(cli, day: Path, tmp_path: Path) -> None:
    a, b, whole = tmp_path / "a.grt", tmp_path / "b.parquet", tmp_path / "whole.grt"
    assert invoke(cli, "slice", day, "--to", "2m30s", "-o", a).exit_code == 0
    res = invoke(cli, "slice", day, "--from", "150s", "-o", b)
    assert res.exit_code == 0 and "wrote" in res.output
    hb, eb = read(b)
    assert eb[0].t_us == 0 and hb.origin_unix_us == 10**15 + 150_000_000
    assert invoke(cli, "merge", a, b, "--pieces", "-o", whole).exit_code == 0
    assert read(whole)[1] == read(day)[1]
    assert read(whole)[0].expected == read(day)[0].expected


def test_speed_amplify_filter_anonymize(cli, day: Path, tmp_path: Path) -> None:
    fast, big, only, anon = (tmp_path / n for n in ("fast.grt", "big.grt", "only.grt", "anon.grt"))
    assert invoke(cli, "speed", day, "4x", "-o", fast).exit_code == 0
    assert read(fast)[1][-1].t_us == 390_000_000 // 4
    assert invoke(cli, "amplify", day, "3", "--jitter", "5s", "-o", big).exit_code == 0
    hb, eb = read(big)
    h0, e0 = read(day)
    assert hb.counts == {"scan": 120} and hb.inventory.events[0].presold == 60
    assert hb.expected["admitted"] == 3 * h0.expected["admitted"] and hb.expected == {**project(eb)}
    assert (
        invoke(
            cli, "filter", day, "--actor", "attendee:1", "--actor", "attendee:2", "-o", only
        ).exit_code
        == 0
    )
    assert {e.actor for e in read(only)[1]} == {"attendee:1", "attendee:2"}
    res = CliRunner().invoke(
        cli,
        ["trace", "anonymize", str(day), "-o", str(anon)],
        env={"GATERUSH_ANON_KEY": "s3cret-key"},
    )
    assert res.exit_code == 0, res.output
    raw = anon.read_bytes()
    assert b"fan1@example.com" not in raw and b"s3cret-key" not in raw and b"attendee:1" not in raw


def test_bad_input_and_usage(cli, day: Path, tmp_path: Path) -> None:
    res = invoke(cli, "speed", day, "0", "-o", tmp_path / "x.grt")
    assert res.exit_code == 2 and "speed factor" in res.output
    res = invoke(cli, "slice", day, "--from", "5 parsecs", "-o", tmp_path / "x.grt")
    assert res.exit_code == 2 and "bad duration" in res.output
    res = invoke(cli, "slice", tmp_path / "missing.grt", "-o", tmp_path / "x.grt")
    assert res.exit_code == 104 and "missing.grt" in res.output and "Traceback" not in res.output
    res = invoke(cli, "slice", day, "-o", day)
    assert res.exit_code == 104 and "also an input" in res.output
    res = CliRunner().invoke(
        cli,
        ["trace", "anonymize", str(day), "-o", str(tmp_path / "x.grt")],
        env={"GATERUSH_ANON_KEY": ""},
    )
    assert res.exit_code == 104 and "key" in res.output
    res = invoke(cli, "filter", day, "-o", tmp_path / "x.grt")
    assert res.exit_code == 2
    bad = tmp_path / "junk.grt"
    bad.write_bytes(b"\x00junk" * 50)
    res = invoke(cli, "amplify", bad, "2", "-o", tmp_path / "y.grt")
    assert res.exit_code == 104 and "junk.grt" in res.output
    assert not (tmp_path / "y.grt").exists()
