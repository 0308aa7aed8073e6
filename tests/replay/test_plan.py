"""replay.plan.resolve: pure, deterministic, safe; the plan of every replay before anything is sent."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.engine import dry_run_text
from replay.plan import Environment, ReplayConfig, origins, resolve
from replay.safety import SafetyError, keys_from_env
from replay.shards import ReplayError
from traces.event import TARGET_SCAN, TARGET_WEBHOOK, Event, pack_payload
from traces.header import Inventory, TraceHeader, VenueEvent
from traces.io import open_writer

STRIPE_CREATE = "stripe:payment_intents.create"


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("plan") / "t.grt"
    evs = [
        Event(i * 250_000, i + 1, "scan", f"attendee:{i % 4}", TARGET_SCAN, pack_payload({}))
        for i in range(12)
    ]
    evs.append(Event(3_100_000, 100, "webhook", "stripe", TARGET_WEBHOOK, pack_payload({})))
    evs.append(Event(3_200_000, 101, "checkout", "buyer:1", STRIPE_CREATE, pack_payload({})))
    evs.append(Event(3_900_000, 102, "leave", "attendee:1", None, b""))
    header = TraceHeader(
        scenario={"name": "plan-test", "thresholds": {"http_req_failed": ["rate==0"]}},
        inventory=Inventory(events=(VenueEvent(1, "match", 100, 10, 5000),)),
    )
    with open_writer(path, header) as w:
        w.write_many(evs)
    return str(path)


# keys as users set them: test-mode Stripe keys, a whsec_ secret, a publishable key
KEY = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=8, max_size=24)
VARIABLES = st.fixed_dictionaries(
    {
        "SUPABASE_ANON_KEY": KEY.map(lambda k: "sb_publishable_" + k),
        "STRIPE_TEST_SK": KEY.map(lambda k: "sk_test_" + k),
        "STRIPE_WEBHOOK_SECRET": KEY.map(lambda k: "whsec_" + k),
        "SUPABASE_SERVICE_ROLE_KEY": KEY.map(lambda k: "sb_secret_" + k),
        "STRIPE_API_BASE": st.just("http://127.0.0.1:9/"),
    }
)
CONFIGS = st.builds(
    ReplayConfig,
    trace=st.just("t.grt"),
    out=st.sampled_from(["r.parquet", "r.grr", "shards/"]),
    target=st.sampled_from(["local", "http://127.0.0.1:9", "https://user:pw@p.example.co"]),
    speed=st.sampled_from([0.5, 1.0, 4.0]),
    workers=st.integers(1, 6),
    stripe=st.sampled_from(["standin", "real", "http://127.0.0.1:9"]),
    rate_caps=st.dictionaries(st.sampled_from([TARGET_SCAN, TARGET_WEBHOOK]), st.floats(1, 500)),
    run_id=st.sampled_from([None, "r-given"]),
)


def env_of(trace: str, variables: dict, run_id: str = "gr-fresh") -> Environment:
    return Environment(variables, trace, run_id)


@settings(max_examples=60, deadline=None)
@given(cfg=CONFIGS, variables=VARIABLES)
def test_the_same_config_and_environment_give_the_same_plan(trace: str, cfg, variables) -> None:
    a = resolve(cfg, env_of(trace, variables))
    b = resolve(cfg, env_of(trace, dict(variables)))
    assert a == b and repr(a) == repr(b)
    # each shard its share of every cap; the whole run's caps as given (and the defaults)
    assert set(a.opts.rate_caps) == set(a.caps)
    for t, c in a.caps.items():
        assert a.opts.rate_caps[t] * cfg.workers == pytest.approx(c)
    for t, c in cfg.rate_caps.items():
        assert a.caps[t] == c
    assert a.run_id == (cfg.run_id or "gr-fresh")
    assert a.sharded == (cfg.workers > 1 or a.local or cfg.out.endswith("/"))
    assert a.expected_requests == 14 and a.duration_s == pytest.approx(3.9 / cfg.speed)


@settings(max_examples=60, deadline=None)
@given(cfg=CONFIGS, variables=VARIABLES)
def test_no_key_value_in_the_plan_or_anything_it_writes(trace: str, cfg, variables) -> None:
    plan = resolve(cfg, env_of(trace, variables))
    keys = [v for k, v in variables.items() if "KEY" in k or "SK" in k or "SECRET" in k]
    ctx = plan.context(None if not plan.local else _standin())
    written = [
        repr(plan),
        str(plan),
        repr(plan.keys),
        repr(ctx.keys),
        json.dumps(plan.result_header(ctx)),
        dry_run_text(plan),
    ]
    assert not [k for k in keys if any(k in text for text in written)]
    assert "pw@" not in repr(plan) and "pw@" not in json.dumps(plan.result_header(ctx))


@pytest.mark.parametrize("var", ["STRIPE_TEST_SK", "STRIPE_WEBHOOK_SECRET", "STRIPE_OTHER"])
@pytest.mark.parametrize("prefix", ["sk_live_", "rk_live_", "SK_LIVE_"])
def test_a_live_stripe_key_is_refused(trace: str, var: str, prefix: str) -> None:
    cfg = ReplayConfig(trace=trace, out="r.grr", target="http://127.0.0.1:9")
    secret = prefix + "0123456789SECRETPART"
    with pytest.raises(SafetyError, match="live Stripe key") as err:
        resolve(cfg, env_of(trace, {"SUPABASE_ANON_KEY": "sb_publishable_x", var: secret}))
    assert "SECRETPART" not in str(err.value)


def test_resolve_opens_no_socket_starts_no_process_and_writes_nothing(
    trace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*a, **kw):
        raise AssertionError("resolve must not do this")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(Path(trace).parent)), os.listdir(tmp_path)
    for target in ("local", "http://127.0.0.1:9"):
        cfg = ReplayConfig(trace=trace, out="r.parquet", target=target, workers=2)
        resolve(cfg, env_of(trace, {"SUPABASE_ANON_KEY": "a", "STRIPE_WEBHOOK_SECRET": "whsec_x",
                                    "STRIPE_API_BASE": "http://127.0.0.1:9"}))  # fmt: skip
    assert (sorted(os.listdir(Path(trace).parent)), os.listdir(tmp_path)) == before


def test_what_resolve_decides(trace: str) -> None:
    variables = {"SUPABASE_URL": "https://p.example.co", "SUPABASE_ANON_KEY": "a",
                 "STRIPE_WEBHOOK_SECRET": "whsec_x", "STRIPE_API_BASE": "http://127.0.0.1:7/"}  # fmt: skip
    plan = resolve(ReplayConfig(trace=trace, out="r.grr", target="env"), env_of(trace, variables))
    assert plan.cfg.target == plan.supabase_url == "https://p.example.co" and not plan.local
    assert plan.stripe_mode == plan.stripe_url == "http://127.0.0.1:7/"  # $STRIPE_API_BASE
    assert plan.caps[TARGET_SCAN] == 1000.0 and not plan.sharded  # a remote target is capped
    assert plan.required_env == ("SUPABASE_ANON_KEY", "STRIPE_WEBHOOK_SECRET")
    ctx = plan.context()
    assert origins(ctx, plan.targets) == {"https://p.example.co": 0, "http://127.0.0.1:7": 0}
    assert plan.result_header(ctx)["thresholds"] == {"http_req_failed": ["rate==0"]}
    assert plan.result_header(ctx)["trace_duration_us"] == 3_900_000
    # the stand-in's URLs and keys replace the plan's when it runs locally; real Stripe keeps its own
    local = resolve(ReplayConfig(trace=trace, out="r.grr", stripe="real"),
                    env_of(trace, {"STRIPE_TEST_SK": "sk_test_mine"}))  # fmt: skip
    ctx = local.context(_standin())
    assert local.sharded and local.caps == {STRIPE_CREATE: 25.0}
    assert (ctx.supabase_url, ctx.keys.anon_key, ctx.keys.stripe_key) == (
        "http://127.0.0.1:5",
        "anon-standin",
        "sk_test_mine",
    )


@pytest.mark.parametrize("change,variables,match", [
    ({"target": "env"}, {}, "SUPABASE_URL is not set"),
    ({"target": "ftp://x"}, {}, "--target"),
    ({"workers": 0}, {}, "--workers"),
    ({"stripe": "elsewhere"}, {}, "--stripe"),
    ({"scheduler": "tcp://x"}, {}, "dask://"),
    ({"scheduler": "dask://h:1"}, {}, "local stand-in runs in this process"),
    ({"target": "http://127.0.0.1:9"}, {}, "SUPABASE_ANON_KEY"),
    ({"target": "http://127.0.0.1:9"}, {"SUPABASE_ANON_KEY": "a"}, "STRIPE_WEBHOOK_SECRET"),
    ({"target": "http://127.0.0.1:9"}, {"SUPABASE_ANON_KEY": "a", "STRIPE_WEBHOOK_SECRET": "w"}, "STRIPE_API_BASE"),
    ({"speed": 0.0}, {}, "speed"),
    ({"speed": 1e-300}, {}, r"--speed 1e-300: the trace's 3.9 s would take 3.9e\+300 s"),
])  # fmt: skip
def test_bad_options_are_refused_before_anything_runs(
    trace: str, change: dict, variables: dict, match: str
) -> None:
    cfg = dataclasses.replace(ReplayConfig(trace=trace, out="r.grr"), **change)
    with pytest.raises(ValueError, match=match):
        resolve(cfg, env_of(trace, variables))


def test_a_dry_run_needs_no_keys_and_no_standin(trace: str) -> None:
    remote = ReplayConfig(trace=trace, out="r.grr", target="http://127.0.0.1:9")
    plan = resolve(remote, env_of(trace, {}), dry_run=True)
    assert "requests      14" in dry_run_text(plan)
    no_standin = Environment({}, trace, "r", standin=False)
    assert resolve(ReplayConfig(trace=trace, out="r.grr"), no_standin, dry_run=True).local
    with pytest.raises(ReplayError, match="stand-in"):
        resolve(ReplayConfig(trace=trace, out="r.grr"), no_standin)


def test_one_function_reads_the_keys() -> None:
    from replay.shards import keys_here

    env = {"SUPABASE_ANON_KEY": "a", "STRIPE_TEST_SK": "sk_test_b",
           "STRIPE_WEBHOOK_SECRET": "whsec_c", "SUPABASE_SERVICE_ROLE_KEY": "d"}  # fmt: skip
    assert keys_here(env, "standin") == keys_from_env(env)


def _standin():
    @dataclasses.dataclass
    class StandIn:
        url: str = "http://127.0.0.1:5"
        anon_key: str = "anon-standin"
        webhook_secret: str = "whsec_standin"
        stripe_key: str = "sk_test_standin"
        service_key: str = "service-standin"

    return StandIn()
