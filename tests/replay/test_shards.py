"""Replay shards on local processes: clocks, row batches, shard files, stops and parent deaths."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from gaterush import main as gaterush_cli
from judge.fidelity import clock_summary
from judge.resultlog import (
    COLUMNS,
    ResultHeader,
    ResultLogError,
    ResultRow,
    ResultWriter,
    read_results,
    result_files,
    rows_from_ipc,
    rows_to_ipc,
    shard_file,
)
from replay.clocksync import measure_offset
from replay.safety import SafetyError
from replay.shards import ReplayError, keys_here
from tests.replay.loopback_server import LoopbackServer
from traces import cluster
from traces.event import TARGET_SCAN, Event, pack_payload, ticket_code
from traces.header import Inventory, TraceHeader, VenueEvent
from traces.io import open_writer

ENV = {"SUPABASE_ANON_KEY": "sb_publishable_x"}
# timing is not what these tests judge (the machine is shared): no fidelity limit on schedule_lag
NO_LAG_LIMIT = ("--max-schedule-lag", "600000")


def scan_trace(path: Path, n: int, actors: int, gap_us: int) -> Path:
    """n scans with distinct ticket codes, event i by attendee:(i % actors), one every gap_us."""
    evs = [
        Event(
            i * gap_us,
            i + 1,
            "scan",
            f"attendee:{i % actors}",
            TARGET_SCAN,
            pack_payload(
                {
                    "ticket_code": ticket_code(1, i),
                    "event_id": 1,
                    "gate": "A",
                    "lane": "1",
                    "direction": "in",
                }
            ),
            None,
            "valid",
        )  # fmt: skip
        for i in range(n)
    ]
    inv = Inventory(events=(VenueEvent(1, "match", max(n, 1), 60, 5000),))
    with open_writer(path, TraceHeader(scenario={"name": "shards"}, inventory=inv)) as w:
        w.write_many(evs)
    return path


@pytest.fixture(scope="module")
def loop_server():
    with LoopbackServer() as s:
        yield s


# --- clocks -------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    offset=st.floats(-1e4, 1e4),
    delays=st.lists(st.tuples(st.floats(0, 0.5), st.floats(0, 0.5)), min_size=1, max_size=12),
)
def test_measured_offset_is_within_its_uncertainty(offset: float, delays: list) -> None:
    """Whatever the (asymmetric) delays, the true offset lies within ± half the best round trip."""
    clock = [1_000.0]
    it = iter(delays)
    pending: list[tuple[float, float]] = []

    def local() -> float:
        return clock[0]

    def probe() -> float:
        there, back = pending.pop()
        clock[0] += there
        remote = clock[0] + offset
        clock[0] += back
        return remote

    def timed_local() -> float:
        if not pending:
            pending.append(next(it, (0.0, 0.0)))
        return local()

    got = measure_offset(probe, rounds=len(delays), clock=timed_local)
    assert abs(got.offset_s - offset) <= got.uncertainty_s + 1e-6
    assert got.uncertainty_s == pytest.approx(min(a + b for a, b in delays) / 2, abs=1e-6)
    assert got.worst_delay_s == pytest.approx(max(a + b for a, b in delays), abs=1e-6)


def test_clock_summary_and_rounds() -> None:
    clocks = [{"offset_us": -300, "uncertainty_us": 40}, {"offset_us": 120, "uncertainty_us": 90}]
    assert clock_summary(clocks) == {
        "shards": 2,
        "max_abs_offset_ms": 0.3,
        "max_uncertainty_ms": 0.09,
    }
    assert clock_summary([])["shards"] == 0
    with pytest.raises(ValueError, match="rounds"):
        measure_offset(time.time, rounds=0)


# --- rows and shard files ---------------------------------------------------------------------

texts = st.none() | st.text(max_size=12)
result_rows = st.builds(
    ResultRow, st.integers(0, 2**62), st.text(max_size=20), st.text(max_size=8), st.text(max_size=12),
    *[st.integers(-(2**62), 2**62)] * 3, st.integers(0, 599), texts,
    *[st.integers(0, 2**40)] * 2, texts, texts, texts, texts,
)  # fmt: skip


@given(st.lists(result_rows, max_size=40))
def test_rows_round_trip_through_arrow_ipc(rows: list[ResultRow]) -> None:
    assert rows_from_ipc(rows_to_ipc(rows)) == rows
    assert len(COLUMNS) == len(ResultRow._fields)


def test_result_files_expand_a_directory_of_shards(tmp_path: Path) -> None:
    h = ResultHeader(run_id="r", target_url="http://127.0.0.1", trace_path="t.grt", workers=2)
    row = ResultRow(
        1, TARGET_SCAN, "scan", "attendee:1", 0, 1, 2, 200, None, 1, 1, "valid", "valid"
    )
    with ResultWriter(shard_file(tmp_path, 0, 2), h) as w:
        w.add(row)
    crashed = ResultWriter(shard_file(tmp_path, 1, 2), h)  # never closed: its .parquet.grr stays
    crashed.add(row._replace(seq=2))
    crashed.flush()
    (tmp_path / "notes.txt").write_text("not a shard")
    files = result_files([tmp_path])
    assert [f.name for f in files] == ["shard-000-of-002.parquet", "shard-001-of-002.parquet"]
    assert [read_results(f)[1].num_rows for f in files] == [1, 1]
    assert not read_results(files[1])[0].complete  # the crashed shard's rows are read all the same
    with pytest.raises(ResultLogError, match="no shard result files"):
        result_files([tmp_path / "empty"]) if (tmp_path / "empty").mkdir() is None else None


# --- keys on the worker, and the Dask extra ----------------------------------------------------


def test_worker_keys_come_from_its_environment_and_are_checked() -> None:
    assert keys_here(ENV, "standin", ("SUPABASE_ANON_KEY",)).anon_key == "sb_publishable_x"
    with pytest.raises(ReplayError, match="set SUPABASE_ANON_KEY in this worker's environment"):
        keys_here({}, "standin", ("SUPABASE_ANON_KEY",))
    with pytest.raises(SafetyError, match="live Stripe key"):
        keys_here({**ENV, "STRIPE_TEST_SK": "sk_live_abcdef"}, "standin")


def test_scheduler_without_dask_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # fmt: skip
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the extra were not installed
    with pytest.raises(cluster.ClusterError, match=r"pip install 'gaterush\[dask\]'"):
        cluster.dask_client("dask://127.0.0.1:1")
    t = scan_trace(tmp_path / "t.grt", 10, 2, 1000)
    r = CliRunner().invoke(gaterush_cli, ["replay", str(t), "--target", "http://127.0.0.1:9", "--scheduler",
                                          "dask://127.0.0.1:1", "--workers", "2", "-o", str(tmp_path / "r.grr")])  # fmt: skip
    assert r.exit_code == 104 and "gaterush[dask]" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "match"),
    [(["--scheduler", "tcp://x:1"], "expected dask://HOST:PORT"),
     (["--scheduler", "dask://127.0.0.1:1", "--target", "local"], "--target URL")],
)  # fmt: skip
def test_bad_scheduler_use_is_refused(tmp_path: Path, args: list[str], match: str) -> None:
    t = scan_trace(tmp_path / "t.grt", 10, 2, 1000)
    r = CliRunner().invoke(gaterush_cli, ["replay", str(t), "-o", str(tmp_path / "r.grr"), *args])
    assert r.exit_code == 104 and match in r.output and "Traceback" not in r.output


# --- local processes: the same shard runner ----------------------------------------------------


def test_local_workers_write_shard_files_that_report_merges(tmp_path: Path, loop_server: LoopbackServer) -> None:  # fmt: skip
    t = scan_trace(tmp_path / "t.grt", 400, 20, gap_us=1_000)
    out_dir = tmp_path / "out"
    r = CliRunner().invoke(gaterush_cli, ["replay", str(t), "--target", loop_server.url, "--workers", "2",
                                          "-o", f"{out_dir}/", "-q", *NO_LAG_LIMIT], env=ENV)  # fmt: skip
    assert r.exit_code == 0, r.output
    files = result_files([out_dir])
    assert len(files) == 2
    heads = [read_results(f)[0] for f in files]
    assert [h.shard for h in heads] == [0, 1] and len({h.start_unix_us for h in heads}) == 1
    # processes of one host: their wall clocks agree within the probe's uncertainty
    for h in heads:
        (c,) = h.clocks
        assert abs(c["offset_us"]) <= c["uncertainty_us"] + 1000
    js = tmp_path / "s.json"
    r = CliRunner().invoke(
        gaterush_cli, ["report", str(out_dir), "--summary-json", str(js), *NO_LAG_LIMIT]
    )
    assert r.exit_code == 0, r.output
    data = json.loads(js.read_text())
    assert data["metrics"]["http_reqs"]["values"]["count"] == 400
    assert data["gaterush"]["clock_summary"]["shards"] == 2


def _replay_process(trace: Path, url: str, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "gaterush", "replay", str(trace), "--target", url,
                             "--workers", "2", "-o", str(out), "-q"],
                            env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def _wait_for(server: LoopbackServer, n: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while len(server.stamps()) < n:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the replay never got going"
        time.sleep(0.05)


def test_sigkill_of_the_parent_stops_every_sender_within_a_second(tmp_path: Path, loop_server: LoopbackServer) -> None:  # fmt: skip
    t = scan_trace(tmp_path / "t.grt", 20_000, 50, gap_us=1_000)  # 20 s at 1,000/s: far from done
    loop_server.set_recording(True)
    p = _replay_process(t, loop_server.url, tmp_path / "r.grr")
    _wait_for(loop_server, 300, p)
    p.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    p.wait(30)
    time.sleep(2.5)
    stamps = loop_server.stamps()
    late = [ts - killed for ts, _ in stamps if ts > killed + 1.0]
    assert len(stamps) < 20_000 and not late, (
        f"{len(late)} requests after the kill, last {max(late, default=0):.2f} s"
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_sigint_stops_every_shard_and_keeps_their_rows(tmp_path: Path, loop_server: LoopbackServer,
                                                                   sig: signal.Signals) -> None:  # fmt: skip
    t = scan_trace(tmp_path / "t.grt", 20_000, 50, gap_us=1_000)
    out = tmp_path / "r.grr"
    loop_server.set_recording(True)
    p = _replay_process(t, loop_server.url, out)
    _wait_for(loop_server, 300, p)
    p.send_signal(sig)
    stopped = time.monotonic()
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + sig, err.decode()
    assert "stopped by" in err.decode() and "Traceback" not in err.decode()
    time.sleep(0.5)
    stamps = loop_server.stamps()
    assert all(ts <= stopped + 1.0 for ts, _ in stamps)  # no shard sent on
    header, table = read_results(out)
    assert header.complete and 0 < table.num_rows <= len(stamps)
    assert len(stamps) - table.num_rows <= 50  # only requests in flight at the stop lack a row


def held_replay(stage: str, mark: Path, args: list[str], env: dict[str, str],
                group: bool = False) -> subprocess.Popen[bytes]:  # fmt: skip
    """`gaterush replay ARGS` held at `stage` before its start (tests.replay.hold_start); `group`:
    in a process group of its own (as a shell's job, which Ctrl-C signals as a whole)."""
    return subprocess.Popen([sys.executable, "-m", "tests.replay.hold_start", stage, str(mark), "replay", *args],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=group)  # fmt: skip


def wait_held(p: subprocess.Popen[bytes], mark: Path) -> list[int]:
    """Wait until `p` is held (its mark written); the shard processes' pids."""
    deadline = time.monotonic() + 120
    while not mark.exists() or not mark.read_text():
        assert p.poll() is None, p.stderr.read().decode() if p.stderr else ""
        assert time.monotonic() < deadline, "the replay was never held"
        time.sleep(0.02)
    return json.loads(mark.read_text())["pids"]


def stopped_before_start(
    p: subprocess.Popen[bytes], sig: signal.Signals, out: str, group: bool = False
) -> str:
    """Signal a held replay (`group`: its whole process group, shards too); its stderr, once it
    ended as a stop (128+signal, one line, no rows)."""
    if group:
        os.killpg(p.pid, sig)
    else:
        p.send_signal(sig)
    try:
        err = p.communicate(timeout=60)[1].decode()
    except subprocess.TimeoutExpired:
        p.kill()
        raise
    assert p.returncode == 128 + sig, err
    assert f"replay: stopped by {sig.name}: 0 rows kept in {out}" in err, err
    assert "Traceback" not in err, err
    return err


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize(("stage", "sig", "out_name", "group"),
                         [("ready", signal.SIGTERM, "r.grr", False), ("ready", signal.SIGINT, "r.grr", False),
                          ("ready", signal.SIGINT, "r.grr", True), ("clocks", signal.SIGINT, "r.grr", False),
                          ("start", signal.SIGTERM, "r.grr", False), ("clocks", signal.SIGTERM, "out/", False)])  # fmt: skip
def test_a_stop_while_the_shards_start_is_a_stop_with_no_rows(tmp_path: Path, loop_server: LoopbackServer, stage: str,
                                                              sig: signal.Signals, out_name: str, group: bool) -> None:  # fmt: skip
    """SIGTERM/SIGINT before the agreed start (shards getting ready, clocks being measured, the start
    given but not yet come): exit 128+signal as a stop after the start, the same line, a complete
    result with no rows, no shard process left, no request sent. A Ctrl-C reaches the shards too
    (the process group), maybe while they import: still one line, no traceback."""
    t = scan_trace(tmp_path / "t.grt", 2_000, 20, gap_us=1_000)
    out_arg, mark = f"{tmp_path}/{out_name}", tmp_path / "held.json"
    out = Path(out_arg)
    loop_server.set_recording(True)
    p = held_replay(stage, mark, [str(t), "--target", loop_server.url, "--workers", "2", "-o", out_arg, "-q"],
                    ENV, group)  # fmt: skip
    pids = wait_held(p, mark)
    assert len(pids) == 2 and all(map(_alive, pids))
    stopped_before_start(p, sig, str(out), group)
    assert not [pid for pid in pids if _alive(pid)]  # every shard process was reaped
    assert loop_server.stamps() == []  # the start never came: nothing was sent
    files = result_files([out]) if out.is_dir() else [out]
    assert len(files) == (2 if out.is_dir() else 1)
    # the clocks measured before the stop are kept (a stop in shard 0's measurement lets it end)
    measured = {"ready": [], "clocks": [0], "start": [0, 1]}[stage]
    for i, f in enumerate(files):
        header, table = read_results(f)
        assert header.complete and table.num_rows == 0 and not header.lost
        assert header.shard == (i if out.is_dir() else None)
        mine = measured if not out.is_dir() else [k for k in measured if k == i]
        assert [c["shard"] for c in header.clocks] == mine
    r = CliRunner().invoke(gaterush_cli, ["report", str(out), *NO_LAG_LIMIT])  # still readable
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output


def _sigint_blocked(conn) -> None:
    conn.send(signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, set()))


def test_shards_spawned_hold_sigint_until_they_can_stop() -> None:
    """A process spawned as a shard starts with SIGINT blocked (a Ctrl-C to the process group
    while it imports is no KeyboardInterrupt: PipeLink.watch unblocks it); this thread's mask is
    as it was."""
    import multiprocessing

    from replay.processes import sigint_held

    mp = multiprocessing.get_context("spawn")
    before = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    parent, child = mp.Pipe()
    with sigint_held():
        p = mp.Process(target=_sigint_blocked, args=(child,))
        p.start()
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == before
    assert parent.poll(60) and parent.recv() is True
    p.join(30)


def test_rows_without_a_group_travel_with_a_null_group() -> None:
    """Measurement rows (realtime) have no `group` field: the batch gives them a null one."""
    row = (
        7,
        "realtime:tickets",
        "view",
        "viewer:1",
        0,
        1,
        2,
        200,
        None,
        0,
        0,
        "joined",
        None,
        "realtime_join",
    )
    assert rows_from_ipc(rows_to_ipc([row])) == [ResultRow(*row, None)]
