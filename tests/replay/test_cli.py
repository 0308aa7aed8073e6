"""`gaterush replay` end to end: stand-in runs, exit codes, secrets, live keys, dry run, workers."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from judge.resultlog import read_results
from replay import cli as replay_cli
from staging.knobs import Knobs, merge_knobs
from staging.server import standin_in_thread
from tests.replay.loopback_server import LoopbackServer
from traces.event import TARGET_SCAN, TARGET_WEBHOOK, Event, pack_payload, ticket_code
from traces.header import Inventory, TraceHeader, VenueEvent
from traces.io import open_writer

INVENTORY = Inventory(events=(VenueEvent(1, "match", 500, 60, 5000),))


def write_trace(
    path: Path, n_scans: int = 30, actors: int = 30, webhooks: bool = True, gap_us: int = 5_000
) -> Path:
    evs: list[Event] = []
    for i in range(n_scans):
        p = {
            "ticket_code": ticket_code(1, i % 50),
            "event_id": 1,
            "gate": "A",
            "lane": "1",
            "direction": "in",
        }
        evs.append(Event(i * gap_us, i + 1, "scan", f"attendee:{i % actors}", TARGET_SCAN, pack_payload(p), None,
                         "valid" if i < 50 else "already_scanned"))  # fmt: skip
    if webhooks:
        obj = {"id": "evt_t1", "object": "event", "type": "payment_intent.succeeded", "created": 1, "livemode": False,
               "data": {"object": {"id": "pi_t1", "object": "payment_intent", "amount": 5000, "currency": "usd",
                                   "status": "succeeded", "metadata": {"event_id": 1, "quantity": 1, "buyer": "b", "order_ref": "o"}}}}  # fmt: skip
        evs.append(
            Event(
                10_000,
                10_001,
                "webhook",
                "stripe",
                TARGET_WEBHOOK,
                pack_payload(obj),
                None,
                "processed",
            )
        )
    evs.sort(key=lambda e: (e.t_us, e.seq))
    header = TraceHeader(
        scenario={"name": "cli-test", "thresholds": {"http_req_failed": ["rate==0"]}},
        inventory=INVENTORY,
    )
    with open_writer(path, header) as w:
        w.write_many(evs)
    return path


class Captured:
    """A start_local that remembers the stand-in's secrets (to grep outputs for them)."""

    def __init__(self, knobs: Knobs | None = None) -> None:
        self.knobs = knobs
        self.secrets: list[str] = []

    @contextlib.contextmanager
    def __call__(self, **kw) -> Iterator:
        with standin_in_thread(knobs=self.knobs, **kw) as s:
            self.secrets = [s.anon_key, s.webhook_secret, s.stripe_key, s.service_key]
            yield s


def cli(start_local=None) -> click.Group:
    @click.group()
    @click.pass_context
    def g(ctx: click.Context) -> None:
        ctx.meta[replay_cli.START_LOCAL] = start_local

    g.add_command(replay_cli.replay_cmd)
    return g


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_trace(tmp_path_factory.mktemp("tr") / "t.grt")


# These tests judge the target and the plumbing, not how well a shared 2-core machine keeps the
# sender's schedule: the fidelity limit is relaxed for them (test_fidelity_* hold it).
LENIENT = ("--max-schedule-lag", "2000")


def test_local_run_passes_and_leaks_no_secret(trace: Path, tmp_path: Path) -> None:
    local = Captured()
    out, summary = tmp_path / "r.parquet", tmp_path / "s.json"
    r = CliRunner().invoke(cli(local), ["replay", str(trace), "-o", str(out), "--summary-json", str(summary),
                                        "--threshold", "http_req_duration=p(95)<5000",
                                        *LENIENT])  # fmt: skip
    assert r.exit_code == 0, r.output
    header, table = read_results(out)
    assert header.complete and header.scenario == "cli-test" and table.num_rows >= 31
    rows = [x for x in table.to_pylist() if x["metric"] is None]
    assert all(x["status"] == 200 for x in rows)
    assert {x["outcome"] for x in rows if x["target"] == TARGET_WEBHOOK} == {"processed"}
    assert all(x["outcome"] == x["expect"] for x in rows if x["target"] == TARGET_SCAN)
    assert json.loads(summary.read_text())["metrics"]["http_reqs"]["values"]["count"] == len(rows)
    outputs = [out.read_bytes(), summary.read_bytes(), r.output.encode()]
    assert local.secrets and all(s.encode() not in o for s in local.secrets for o in outputs)


def test_added_latency_above_threshold_exits_99(trace: Path, tmp_path: Path) -> None:
    slow = Captured(merge_knobs(Knobs(), {"endpoints": {TARGET_SCAN: {"latency": "60ms"}}}))
    th = f"http_req_duration{{target:{TARGET_SCAN}}}=p(95)<50"
    r = CliRunner().invoke(
        cli(slow), ["replay", str(trace), "-o", str(tmp_path / "slow.grr"), "--threshold", th]
    )
    assert r.exit_code == 99, r.output
    fast = CliRunner().invoke(
        cli(Captured()),
        ["replay", str(trace), "-o", str(tmp_path / "fast.grr"), "--threshold", th, *LENIENT],
    )
    assert fast.exit_code == 0, fast.output


@pytest.fixture(scope="module")
def loop_server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as s:
        yield s


@pytest.mark.parametrize("var", ["STRIPE_TEST_SK", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_KEY"])
@pytest.mark.parametrize("prefix", ["sk_live_", "rk_live_"])
def test_live_keys_refused_before_anything_is_sent(trace: Path, tmp_path: Path, loop_server: LoopbackServer,
                                                   var: str, prefix: str) -> None:  # fmt: skip
    key = prefix + "0123456789abcdefSECRETPART"
    before = len(loop_server.stamps())
    r = CliRunner().invoke(cli(), ["replay", str(trace), "--target", loop_server.url, "-o", str(tmp_path / "x.grr")],
                           env={var: key, "STRIPE_WEBHOOK_SECRET": "whsec_x"} if var != "STRIPE_WEBHOOK_SECRET" else {var: key})  # fmt: skip
    assert r.exit_code == 104 and "live Stripe key" in r.output and "nothing was sent" in r.output
    assert "SECRETPART" not in r.output
    assert len(loop_server.stamps()) == before and not (tmp_path / "x.grr").exists()


def test_dry_run_prints_the_plan_and_sends_nothing(
    trace: Path, tmp_path: Path, loop_server: LoopbackServer
) -> None:
    before = len(loop_server.stamps())
    r = CliRunner().invoke(
        cli(), ["replay", str(trace), "--target", loop_server.url, "--dry-run", "--speed", "2"]
    )
    assert r.exit_code == 0, r.output
    for word in (
        "nothing sent",
        TARGET_SCAN,
        TARGET_WEBHOOK,
        "peak rate",
        "duration",
        "Stripe calls",
    ):
        assert word in r.output
    assert "requests      31" in r.output
    assert len(loop_server.stamps()) == before


@pytest.mark.parametrize("args,match", [
    (["--rate-cap", "nonsense"], "--rate-cap"),
    (["-o", "out.csv"], ".parquet or .grr"),
    (["--stripe", "real"], "STRIPE_TEST_SK"),
    (["--stripe", "elsewhere"], "--stripe"),
    (["--target", "ftp://x"], "--target"),
    (["--target", "env"], "SUPABASE_URL is not set"),
    (["--speed", "0"], "speed"),
    (["--speed", "1e-12"], "more than 30 days"),
    (["--threshold", "http_req_duration=p(95)<<"], "p(95)"),
])  # fmt: skip
def test_bad_input_exits_104(
    trace: Path, loop_server: LoopbackServer, args: list[str], match: str
) -> None:
    base = ["replay", str(trace), "--target", loop_server.url, "--dry-run"]
    r = CliRunner().invoke(
        cli(), base + args, env={"STRIPE_TEST_SK": "", "STRIPE_WEBHOOK_SECRET": "whsec_x"}
    )
    assert r.exit_code == 104 and match in r.output and "Traceback" not in r.output, r.output


def test_missing_trace_and_missing_standin(tmp_path: Path, trace: Path) -> None:
    r = CliRunner().invoke(cli(), ["replay", str(tmp_path / "nope.grt"), "--dry-run"])
    assert r.exit_code == 104 and "nope.grt" in r.output
    r = CliRunner().invoke(cli(None), ["replay", str(trace), "-o", str(tmp_path / "y.grr")])
    assert r.exit_code == 104 and "stand-in" in r.output


@pytest.mark.parametrize("pacer", ["loop", "timerfd"])
def test_the_pacer_is_the_users_choice(
    tmp_path: Path, loop_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch, pacer: str
) -> None:
    from replay import scheduler

    chosen = []
    real = scheduler.make_pacer

    def spy(name, *a, **kw):
        chosen.append(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(scheduler, "make_pacer", spy)
    t = write_trace(tmp_path / "p.grt", n_scans=50, actors=5, webhooks=False, gap_us=2_000)
    out = tmp_path / "p.grr"
    r = CliRunner().invoke(cli(), ["replay", str(t), "--target", loop_server.url, "-o", str(out),
                                   "--pacer", pacer, "-q", *LENIENT],
                           env={"SUPABASE_ANON_KEY": "sb_publishable_x"})  # fmt: skip
    assert r.exit_code == 0, r.output
    assert chosen == [pacer] and read_results(out)[1].num_rows == 50
    r = CliRunner().invoke(cli(), ["replay", str(t), "--pacer", "spin", "--dry-run"])
    assert r.exit_code == 2 and "--pacer" in r.output


def test_workers_shard_actors_and_keep_their_order(
    tmp_path: Path, loop_server: LoopbackServer
) -> None:
    t = write_trace(tmp_path / "w.grt", n_scans=400, actors=7, webhooks=False, gap_us=1_000)
    out = tmp_path / "w.grr"
    r = CliRunner().invoke(cli(), ["replay", str(t), "--target", loop_server.url, "-o", str(out), "--workers", "2", "-q", *LENIENT],
                           env={"SUPABASE_ANON_KEY": "sb_publishable_x"})  # fmt: skip
    assert r.exit_code == 0, r.output
    header, table = read_results(out)
    rows = table.to_pylist()
    assert header.workers == 2 and len(rows) == 400 and all(x["status"] == 200 for x in rows)
    by_actor: dict[str, list] = {}
    for x in sorted(rows, key=lambda x: x["seq"]):
        by_actor.setdefault(x["actor"], []).append(x["sent_us"])
    assert len(by_actor) == 7 and all(s == sorted(s) for s in by_actor.values())


@pytest.mark.parametrize("workers", ["1", "2"])
def test_realtime_update_latency_for_every_write_and_viewer(tmp_path: Path, workers: str) -> None:
    t = tmp_path / "rt.grt"
    evs = [
        Event(
            0,
            1,
            "subscribe",
            "viewer:1",
            "realtime:tickets",
            pack_payload({"table": "tickets", "filter": "event_id=eq.1"}),
        )
    ]
    for i in range(12):
        p = {
            "ticket_code": ticket_code(1, i),
            "event_id": 1,
            "gate": "A",
            "lane": "1",
            "direction": "in",
        }
        evs.append(
            Event(
                # writes 2 s in: the viewer has joined by then even on a loaded machine (this
                # test is about every write reaching every viewer, not how fast a join is)
                2_000_000 + i * 10_000,
                2 + i,
                "scan",
                f"attendee:{i}",
                TARGET_SCAN,
                pack_payload(p),
                None,
                "valid",
            )
        )
    evs.append(
        Event(2_600_000, 99, "unsubscribe", "viewer:1", "realtime:tickets", pack_payload({}))
    )
    with open_writer(t, TraceHeader(scenario={"name": "rt"}, inventory=INVENTORY)) as w:
        w.write_many(evs)
    out = tmp_path / "rt.grr"
    r = CliRunner().invoke(
        cli(Captured()), ["replay", str(t), "-o", str(out), "--workers", workers, "-q", *LENIENT]
    )
    assert r.exit_code == 0, r.output
    rows = read_results(out)[1].to_pylist()
    joins = [x for x in rows if x["metric"] == "realtime_join"]
    lat = [x for x in rows if x["metric"] == "realtime_update_latency"]
    assert len(joins) == 1 and joins[0]["status"] == 200
    assert sorted(x["seq"] for x in lat) == list(range(2, 14))  # one message per admitted ticket
    assert all(x["actor"] == "viewer:1" and x["done_us"] >= x["sent_us"] for x in lat)
    scans = {x["seq"]: x for x in rows if x["metric"] is None}
    assert all(
        x["sent_us"] == scans[x["seq"]]["done_us"] for x in lat
    )  # timed from the write's completion


def test_target_env_reads_supabase_url(trace: Path, loop_server: LoopbackServer) -> None:
    r = CliRunner().invoke(
        cli(),
        ["replay", str(trace), "--target", "env", "--dry-run"],
        env={"SUPABASE_URL": loop_server.url},
    )
    assert r.exit_code == 0 and f"target {loop_server.url}" in r.output, r.output


@pytest.mark.parametrize("env,match", [
    ({"SUPABASE_ANON_KEY": "", "STRIPE_WEBHOOK_SECRET": "whsec_x"}, "SUPABASE_ANON_KEY"),
    ({"SUPABASE_ANON_KEY": "sb_publishable_x", "STRIPE_WEBHOOK_SECRET": ""}, "STRIPE_WEBHOOK_SECRET"),
])  # fmt: skip
def test_missing_keys_for_a_url_target(
    trace: Path, tmp_path: Path, loop_server: LoopbackServer, env: dict, match: str
) -> None:
    before = len(loop_server.stamps())
    r = CliRunner().invoke(
        cli(),
        ["replay", str(trace), "--target", loop_server.url, "-o", str(tmp_path / "k.grr")],
        env=env,
    )
    assert r.exit_code == 104 and match in r.output, r.output
    assert len(loop_server.stamps()) == before
