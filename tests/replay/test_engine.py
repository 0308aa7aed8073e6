"""The engine: keys and run ids (the progress line: test_progress), and a run's rows in its log."""

from __future__ import annotations

from pathlib import Path

from judge.resultlog import read_results
from judge.rows import FLUSH_ROWS
from replay.engine import ReplayConfig, keys_from_env, new_run_id, run_replay
from tests.replay.loopback_server import LoopbackServer
from traces.event import TARGET_SCAN, Event, pack_payload
from traces.header import TraceHeader
from traces.io import open_writer


def test_keys_from_env_and_run_ids() -> None:
    k = keys_from_env(
        {
            "SUPABASE_ANON_KEY": "a",
            "STRIPE_TEST_SK": "sk_test_b",
            "STRIPE_WEBHOOK_SECRET": "whsec_c",
        }
    )
    assert k.values() == ["a", "sk_test_b", "whsec_c"] and "sk_test_b" not in repr(k)
    a, b = new_run_id(), new_run_id()
    assert a != b and a.startswith("gr-")


def test_every_row_reaches_the_log_once_in_batches_of_at_most_flush_rows(tmp_path: Path) -> None:
    # 3.5 batches' worth of scans in 0.4 s: each row reaches the log once, in batches of at most
    # FLUSH_ROWS (a step of one stays short; which batches a flush takes: test_slack)
    n = FLUSH_ROWS * 7 // 2
    trace = tmp_path / "t.grt"

    def scan(i: int) -> Event:
        p = pack_payload({"ticket_code": f"F{i}", "event_id": 1})
        return Event(i * 400_000 // n, 1 + i, "scan", f"a:{i}", TARGET_SCAN, p, None, "valid")

    with open_writer(trace, TraceHeader(scenario={"name": "flush"})) as w:
        w.write_many(scan(i) for i in range(n))
    with LoopbackServer(record=False) as server:
        cfg = ReplayConfig(trace=str(trace), out=str(tmp_path / "r.grr"), target=server.url,
                           progress=False)  # fmt: skip
        run_replay(cfg, {"SUPABASE_ANON_KEY": "sb_publishable_test"}, progress=None)
    header, table = read_results(tmp_path / "r.grr")
    assert header.complete
    assert sorted(table.column("seq").to_pylist()) == list(range(1, n + 1))
    assert max(len(b) for b in table.to_batches()) <= FLUSH_ROWS
