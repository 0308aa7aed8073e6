"""Every command over a corpus of damaged and hostile files: each ends with exit 104 (or 2 for
usage), a one-line message naming the problem, no traceback, and every input byte-for-byte unchanged.

The corpus: empty files, junk, good files cut at several offsets, crafted trace headers (negative
presold, a string event id, a price of 1e308, version 99), crafted result logs (version 99, bad
field types, short rows), an unsorted trace, outputs that are the input (same path, symbolic and
hard link), and outputs that cannot be written (/dev/full through a symlink, a path under a file).
Commands run in-process through click's CliRunner.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import gaterush
from judge.resultlog import RESULT_FORMAT, ResultHeader, ResultRow, ResultWriter
from sim import runner, scenario
from traces.event import TARGET_SCAN, Event, pack_payload, ticket_code
from traces.header import Inventory, TraceHeader, VenueEvent
from traces.io import open_writer

CUTS = (1, 10, 100, 0.5, -10)  # bytes kept (a fraction: of the length; negative: from the end)


def _row(seq: int) -> ResultRow:
    return ResultRow(seq, TARGET_SCAN, "scan", f"attendee:{seq}", seq * 1000, seq * 1000 + 5,
                     seq * 1000 + 900, 200, None, 300, 80, "valid", "valid")  # fmt: skip


def _results(path: Path, rows: int = 40) -> Path:
    header = ResultHeader(run_id="gr-test", target_url="http://127.0.0.1:1", trace_path="t.parquet",
                          thresholds={"http_req_failed": ["rate==0"]})  # fmt: skip
    with ResultWriter(path, header) as w:
        for i in range(rows):
            w.add(_row(i))
    return path


def _grr(path: Path, header: dict, rows: list) -> Path:
    base = {"format": RESULT_FORMAT, "version": 1, "run_id": "r", "target_url": "http://x",
            "trace_path": "t"}  # fmt: skip
    data = msgpack.packb({**base, **header}) + b"".join(msgpack.packb(r) for r in rows)
    path.write_bytes(data)
    return path


def _trace_with(path: Path, header: TraceHeader) -> Path:
    p = {"ticket_code": ticket_code(1, 0), "event_id": 1, "gate": "A", "lane": "1",
         "direction": "in"}  # fmt: skip
    with open_writer(path, header) as w:
        w.write(Event(0, 1, "scan", "attendee:0", TARGET_SCAN, pack_payload(p), None, "valid"))
    return path


def _cut(src: Path, dst: Path, keep: float) -> Path:
    data = src.read_bytes()
    n = (
        int(len(data) * keep)
        if isinstance(keep, float)
        else (keep if keep > 0 else len(data) + keep)
    )
    dst.write_bytes(data[:n])
    return dst


def _venue(**over) -> Inventory:
    fields = {"id": 1, "name": "m", "capacity": 100, "presold": 10, "price_cents": 500, **over}
    return Inventory(events=(VenueEvent(**fields),))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("corpus")
    c: dict[str, Path] = {}
    sc = scenario.load("scanner-burst")
    for fmt in ("parquet", "grt"):
        good = c[f"good.{fmt}"] = d / f"good.{fmt}"
        runner.simulate(sc, 0, good)
        (d / f"empty.{fmt}").write_bytes(b"")
        c[f"empty.{fmt}"] = d / f"empty.{fmt}"
        c[f"junk.{fmt}"] = d / f"junk.{fmt}"
        c[f"junk.{fmt}"].write_bytes(random.Random(f"junk.{fmt}").randbytes(3000))
        for k in CUTS:
            name = f"cut{k}.{fmt}"
            c[name] = _cut(good, d / name, k)
        for name, header in {
            "presold-5": TraceHeader(inventory=_venue(presold=-5)),
            "eventidx": TraceHeader(inventory=_venue(id="x")),
            "price1e308": TraceHeader(inventory=_venue(price_cents=1e308)),
            "presold1e12": TraceHeader(inventory=_venue(presold=10**12, capacity=10**12)),
            "version99": TraceHeader(version=99),
            "seed-1": TraceHeader(seed=-1),
        }.items():
            c[f"{name}.{fmt}"] = _trace_with(d / f"{name}.{fmt}", header)
    good = pq.read_table(c["good.parquet"])
    meta = pq.ParquetFile(c["good.parquet"]).metadata.metadata
    order = list(range(good.num_rows))
    order[3], order[4] = order[4], order[3]
    c["unsorted.parquet"] = d / "unsorted.parquet"
    pq.write_table(good.take(pa.array(order)).replace_schema_metadata(meta), c["unsorted.parquet"])

    c["r.parquet"] = _results(d / "r.parquet")
    c["r.grr"] = _results(d / "r.grr")
    for fmt in ("parquet", "grr"):
        c[f"rempty.{fmt}"] = d / f"rempty.{fmt}"
        c[f"rempty.{fmt}"].write_bytes(b"")
        c[f"rjunk.{fmt}"] = d / f"rjunk.{fmt}"
        c[f"rjunk.{fmt}"].write_bytes(random.Random(f"rjunk.{fmt}").randbytes(2000))
        for k in (10, 0.5, -3):
            c[f"rcut{k}.{fmt}"] = _cut(c[f"r.{fmt}"], d / f"rcut{k}.{fmt}", k)
    row = list(_row(1))
    c["rversion99.grr"] = _grr(d / "rversion99.grr", {"version": 99}, [row])
    c["rspeedx.grr"] = _grr(d / "rspeedx.grr", {"speed": "x"}, [row])
    c["rrunid.grr"] = _grr(d / "rrunid.grr", {"run_id": 5}, [row])
    c["rthresh.grr"] = _grr(d / "rthresh.grr", {"thresholds": {"x": 5}}, [row])
    c["rrowtype.grr"] = _grr(d / "rrowtype.grr", {}, [[*row[:5], "soon", *row[6:]]])
    c["rrowshort.grr"] = _grr(d / "rrowshort.grr", {}, [row[:3]])
    c["rhuge.grr"] = _grr(d / "rhuge.grr", {}, [[*row[:5], 2**64 - 1, *row[6:]]])
    c["rnotmap.grr"] = d / "rnotmap.grr"
    c["rnotmap.grr"].write_bytes(msgpack.packb([1, 2, 3]))
    c["bin.toml"] = d / "bin.toml"
    c["bin.toml"].write_bytes(bytes(range(256)) * 4)
    c["file"] = d / "file"
    c["file"].write_text("a regular file\n")
    for suffix in ("grt", "parquet", "html", "json", "toml", "grr"):
        link = d / f"full.{suffix}"
        link.symlink_to("/dev/full")
    c["dir"] = d
    return c


@pytest.fixture(autouse=True)
def inputs_unchanged(corpus: dict[str, Path]) -> Iterator[None]:
    """Every corpus file is byte-for-byte the same after each command."""
    files = sorted(p for p in corpus["dir"].iterdir() if p.is_file() and not p.is_symlink())

    def digest() -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    before = digest()
    yield
    assert digest() == before


def run(corpus: dict[str, Path], *args: str, env: dict | None = None):
    """Invoke gaterush with corpus names ({name}) replaced by their paths."""
    d = corpus["dir"]
    argv = [a.format(d=d, **{k.replace(".", "_"): v for k, v in corpus.items()}) for a in args]
    return CliRunner().invoke(gaterush.main, argv, env=env or {}, catch_exceptions=True)


def assert_clean_failure(r, *names: str) -> None:
    """Exit 104 or 2, no traceback, and a message naming one of `names` (a file, key or option)."""
    out = r.output
    assert r.exit_code in (104, 2), (r.exit_code, out, r.exception)
    assert isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in out, out
    lines = [x for x in out.splitlines() if x.lower().startswith("error")]
    assert lines, out
    assert any(n in out for n in names), (names, out)


TRACES = ["empty", "junk", *(f"cut{k}" for k in CUTS), "presold-5", "eventidx", "price1e308",
          "presold1e12", "version99", "seed-1"]  # fmt: skip
TRACE_COMMANDS = {
    "info": ["trace", "info", "{src}"],
    "head": ["trace", "head", "{src}", "-n", "100000"],
    "convert": ["trace", "convert", "{src}", "{d}/out-convert.grt"],
    "slice": ["trace", "slice", "{src}", "-o", "{d}/out-slice.parquet", "--from", "1s"],
    "speed": ["trace", "speed", "{src}", "2", "-o", "{d}/out-speed.grt"],
    "amplify": ["trace", "amplify", "{src}", "2", "-o", "{d}/out-amp.grt"],
    "merge": ["trace", "merge", "{src}", "{good_grt}", "-o", "{d}/out-merge.grt"],
    "filter": ["trace", "filter", "{src}", "--kind", "scan", "-o", "{d}/out-filter.grt"],
    "anonymize": ["trace", "anonymize", "{src}", "--key", "k", "-o", "{d}/out-anon.grt"],
    "replay-dry": ["replay", "{src}", "--target", "http://127.0.0.1:9", "--dry-run"],
}


@pytest.mark.parametrize("fmt", ["parquet", "grt"])
@pytest.mark.parametrize("name", TRACES)
@pytest.mark.parametrize("cmd", list(TRACE_COMMANDS))
def test_trace_commands_over_damaged_traces(corpus, cmd: str, name: str, fmt: str) -> None:
    src = corpus[f"{name}.{fmt}"]
    args = [a.replace("{src}", str(src)) for a in TRACE_COMMANDS[cmd]]
    r = run(corpus, *args)
    if r.exit_code == 0:
        # a cut at the very end of a .grt can lose only the trailer: every event is still there
        assert name.startswith("cut") and fmt == "grt" and cmd != "info", r.output
        return
    assert_clean_failure(r, src.name)


@pytest.mark.parametrize("name", ["presold-5", "eventidx", "price1e308", "version99"])
def test_verify_reads_a_crafted_header_cleanly(corpus, name: str) -> None:
    r = run(corpus, "verify", str(corpus[f"{name}.parquet"]), "--target", "http://127.0.0.1:9")
    assert_clean_failure(r, f"{name}.parquet")


def test_replay_refuses_an_unsorted_trace(corpus) -> None:
    r = run(corpus, "trace", "info", "{unsorted_parquet}")
    assert_clean_failure(r, "not sorted")
    r = run(corpus, "replay", "{unsorted_parquet}", "--target", "http://127.0.0.1:9",
            "-o", "{d}/unsorted-out.grr", "--timeout", "2", "-q",
            env={"SUPABASE_ANON_KEY": "anon"})  # fmt: skip
    assert_clean_failure(r, "not sorted")


RESULTS = ["rempty.parquet", "rempty.grr", "rjunk.parquet", "rjunk.grr", "rcut10.parquet",
           "rcut0.5.parquet", "rcut-3.parquet", "rcut10.grr", "rversion99.grr", "rspeedx.grr",
           "rrunid.grr", "rthresh.grr", "rrowtype.grr", "rrowshort.grr", "rhuge.grr",
           "rnotmap.grr"]  # fmt: skip
RESULT_COMMANDS = {
    "report": ["report", "{src}"],
    "report-html": ["report", "{src}", "--html", "{d}/out-report.html", "-q"],
    "calibrate": ["calibrate", "{src}", "-o", "{d}/out-backend.toml"],
    "verify": ["verify", "{good_parquet}", "--target", "http://127.0.0.1:9", "--results", "{src}"],
}


@pytest.mark.parametrize("name", RESULTS)
@pytest.mark.parametrize("cmd", list(RESULT_COMMANDS))
def test_result_commands_over_damaged_result_logs(corpus, cmd: str, name: str) -> None:
    src = corpus[name]
    r = run(corpus, *[a.replace("{src}", str(src)) for a in RESULT_COMMANDS[cmd]])
    assert_clean_failure(r, name)


def test_a_cut_grr_is_read_up_to_the_cut(corpus) -> None:
    """The control: a .grr cut mid-row is a crashed run's log, still reportable (exit 0)."""
    r = run(corpus, "report", "{rcut-3_grr}")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("args,names", [
    (["replay", "{good_parquet}", "-o", "{good_parquet}"], ["also an input"]),
    (["replay", "{good_parquet}", "-o", "{d}/x.grr", "--summary-json", "{good_parquet}"], ["also an input"]),
    (["replay", "{good_parquet}", "-o", "{d}/x.grr", "--summary-json", "{d}/x.grr"], ["also an input"]),
    (["replay", "{good_parquet}", "-o", "{d}/x.grr", "--thresholds", "{d}/x.grr"], ["also an input"]),
    (["report", "{r_parquet}", "--html", "{r_parquet}"], ["also an input"]),
    (["report", "{r_parquet}", "--summary-json", "{r_parquet}"], ["also an input"]),
    (["report", "{r_grr}", "{r_parquet}", "--summary-json", "{r_grr}"], ["also an input"]),
    (["calibrate", "{r_parquet}", "-o", "{r_parquet}"], ["also an input"]),
    (["verify", "{good_parquet}", "--target", "local", "--json", "{good_parquet}"], ["also an input"]),
    (["trace", "convert", "{good_parquet}", "{d}/hard.parquet"], ["also an input"]),
    (["trace", "slice", "{good_grt}", "-o", "{d}/sym.grt"], ["also an input"]),
    (["trace", "import", "har", "{d}/file", "-o", "{d}/file"], ["file"]),
])  # fmt: skip
def test_an_output_that_is_an_input_is_refused(corpus, args: list[str], names: list[str]) -> None:
    hard, sym = corpus["dir"] / "hard.parquet", corpus["dir"] / "sym.grt"
    if not hard.exists():
        os.link(corpus["good.parquet"], hard)
        sym.symlink_to(corpus["good.grt"])
    r = run(corpus, *args)
    assert_clean_failure(r, *names)


@pytest.mark.parametrize("args,names", [
    (["simulate", "scanner-burst", "-o", "{d}/full.grt"], ["full.grt", "space"]),
    (["trace", "convert", "{good_parquet}", "{d}/full.grt"], ["full.grt", "space"]),
    (["trace", "slice", "{good_grt}", "-o", "{d}/full.parquet"], ["full.parquet", "space"]),
    (["trace", "amplify", "{good_grt}", "2", "-o", "{d}/full.grt"], ["full.grt", "space"]),
    (["report", "{r_parquet}", "--html", "{d}/full.html", "-q"], ["full.html"]),
    (["report", "{r_parquet}", "--summary-json", "{d}/full.json", "-q"], ["full.json"]),
    (["calibrate", "{r_parquet}", "-o", "{d}/full.toml"], ["full.toml", "space"]),
    (["sweep", "scanner-burst", "--grid", "gate.lanes=2,3", "-o", "{d}/full.parquet"], ["full.parquet", "space"]),
    (["simulate", "scanner-burst", "-o", "{d}/file/x.grt"], ["file"]),
    (["trace", "convert", "{good_parquet}", "{d}/file/x.grt"], ["file"]),
    (["report", "{r_parquet}", "--html", "{d}/file/x.html", "-q"], ["file"]),
    (["calibrate", "{r_parquet}", "-o", "{d}/nodir/x.toml"], ["nodir"]),
    (["sweep", "scanner-burst", "--grid", "gate.lanes=2", "-o", "{d}/x.txt"], ["x.txt"]),
])  # fmt: skip
def test_unwritable_and_full_outputs(corpus, args: list[str], names: list[str]) -> None:
    r = run(corpus, *args)
    assert_clean_failure(r, *names)
    assert not [p for p in corpus["dir"].iterdir() if ".partial-" in p.name]
    links = [corpus["dir"] / f"full.{s}" for s in ("grt", "parquet", "html", "json", "toml")]
    assert all(p.is_symlink() for p in links)  # a failed write never removes the user's link


@pytest.mark.parametrize("args,names", [
    (["trace", "head", "{good_grt}", "-n", "99999999999999999999"], ["--lines"]),
    (["replay", "{good_grt}", "--timeout", "nan", "--dry-run"], ["--timeout"]),
    (["replay", "{good_grt}", "--speed", "inf", "--dry-run"], ["speed"]),
    (["replay", "{good_grt}", "--thresholds", "{bin_toml}", "--dry-run"], ["bin.toml"]),
    (["report", "{r_parquet}", "--thresholds", "{bin_toml}"], ["bin.toml"]),
    (["report", "{r_parquet}", "--step", "nan"], ["--step"]),
    (["replay", "{good_grt}", "--profile", "{bin_toml}", "--dry-run"], ["bin.toml"]),
    (["simulate", "scanner-burst", "-o", "{d}/o.grt", "--set", "arrivals.attendees=1000000000"], ["arrivals.attendees"]),
    (["simulate", "scanner-burst", "-o", "{d}/o.grt", "--set", "gate.lanes=1000000000"], ["gate.lanes"]),
    (["simulate", "event-day", "-o", "{d}/o.grt", "--set", "event.presold=1000000000"], ["event.presold"]),
    (["simulate", "event-day", "-o", "{d}/o.grt", "--set", "arrivals.start_s=1e300"], ["arrivals.start_s"]),
    (["simulate", "scanner-burst", "-o", "{d}/o.grt", "--set", "arrivals.wave_gap_s=inf"], ["arrivals.wave_gap_s"]),
    (["simulate", "{bin_toml}", "-o", "{d}/o.grt"], ["bin.toml"]),
    (["replay", "{d}/missing.grt", "--dry-run"], ["missing.grt"]),
    (["report", "{d}/missing.grr"], ["missing.grr"]),
    (["report", "{d}"], ["corpus"]),
    (["trace", "info", "{d}"], ["corpus"]),
])  # fmt: skip
def test_hostile_values_and_options(corpus, args: list[str], names: list[str]) -> None:
    r = run(corpus, *args)
    assert_clean_failure(r, *names)


def test_debug_shows_the_traceback_and_the_default_does_not(corpus) -> None:
    r = run(corpus, "trace", "convert", "{good_parquet}", "{d}/full.grt")
    assert r.exit_code == 104 and "Traceback" not in r.output and "space" in r.output
    r = run(corpus, "--debug", "trace", "convert", "{good_parquet}", "{d}/full.grt")
    assert r.exit_code == 1 and isinstance(r.exception, OSError)


def test_an_internal_error_is_one_line_too(corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    import judge.report

    def boom(*a, **k):
        raise KeyError("surprise")

    monkeypatch.setattr(judge.report, "load", boom)
    r = run(corpus, "report", "{r_parquet}")
    assert r.exit_code == 1 and "internal error" in r.output and "--debug" in r.output
    assert "Traceback" not in r.output


def test_sweep_writes_csv_for_a_csv_name(corpus) -> None:
    out = corpus["dir"] / "sweep-out.csv"
    r = run(corpus, "sweep", "scanner-burst", "--grid", "gate.lanes=2,3", "-o", str(out))
    assert r.exit_code == 0, r.output
    lines = out.read_text().splitlines()
    assert lines[0].startswith('"gate.lanes",') and [x.split(",")[0] for x in lines[1:]] == [
        "2",
        "3",
    ]


@pytest.mark.parametrize("out", ["full.grr", "full.parquet"])
def test_replay_to_a_full_disk_names_the_result_log(corpus, out: str) -> None:
    r = run(corpus, "replay", "{good_grt}", "--target", "http://127.0.0.1:9", "-o", f"{{d}}/{out}",
            "-q", "--timeout", "1", env={"SUPABASE_ANON_KEY": "anon"})  # fmt: skip
    assert_clean_failure(r, out)
    assert (corpus["dir"] / out).is_symlink()  # the link is still a link, not replaced by a file
    (corpus["dir"] / f"{out}.grr").unlink(missing_ok=True)  # a .parquet run's rows are kept here
