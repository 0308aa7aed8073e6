"""verify: compare end states, say what differs; the CLI's exit codes; the PostgREST path vs the stand-in."""

from __future__ import annotations

import json
import time
import urllib.request

import click
import pytest
import stripe
from click.testing import CliRunner

from judge.resultlog import ResultHeader, ResultWriter
from replay import cli_verify
from replay import verify as ver
from traces.event import Event, pack_payload, ticket_code
from traces.header import Inventory, TraceHeader, VenueEvent
from traces.io import open_writer
from traces.projection import project

EXPECTED = {
    "orders": 2,
    "tickets_sold": 5,
    "revenue_cents": 25_000,
    "refunds": 0,
    "refunded_cents": 0,
    "admitted": 10,
    "reentries": 1,
    "exits": 1,
    "scans": {"valid": 11, "already_scanned": 2, "exited": 1},
    "webhooks_processed": 2,
    "webhooks_duplicate": 1,
    "by_event": {"1": {"admitted": 10, "orders": 2, "revenue_cents": 25_000, "tickets_sold": 5}},
    "views": 40,  # not compared: a replay's dashboard reads leave no state
}


def test_equal_states_verify() -> None:
    actual = {k: v for k, v in EXPECTED.items() if k != "views"}
    r = ver.compare(EXPECTED, actual)
    assert r.ok and r.differences == () and r.missing == ()
    assert "views" not in r.checked
    assert "✓ end state matches the trace" in r.render()


def test_differences_are_named_with_both_values_and_their_meaning() -> None:
    actual = json.loads(json.dumps(EXPECTED))
    actual["webhooks_processed"] = 3  # a duplicate processed again
    actual["admitted"] = 11
    actual["scans"]["valid"] = 12
    actual["by_event"]["1"]["revenue_cents"] = 37_500
    r = ver.compare(EXPECTED, actual)
    assert not r.ok
    by_key = {d.key: d for d in r.differences}
    assert set(by_key) == {
        "webhooks_processed",
        "admitted",
        "scans.valid",
        "by_event.1.revenue_cents",
    }
    assert str(by_key["webhooks_processed"]) == (
        "webhooks_processed: expected 2, target has 3 (+1): "
        "a duplicate delivery was processed again (not idempotent on event id)"
    )
    assert "a ticket admitted twice" in str(by_key["admitted"])
    assert str(by_key["by_event.1.revenue_cents"]).startswith(
        "by_event.1.revenue_cents: expected 25000, target has 37500 (+12500)"
    )
    text = r.render()
    assert "✗ end state differs in 4 figure(s)" in text


def test_outcomes_only_one_side_has_count_as_zero_on_the_other() -> None:
    actual = json.loads(json.dumps(EXPECTED))
    actual["scans"]["invalid"] = 3
    del actual["scans"]["exited"]
    keys = {d.key: (d.expected, d.actual) for d in ver.compare(EXPECTED, actual).differences}
    assert keys == {"scans.invalid": (0, 3), "scans.exited": (1, 0)}


def test_missing_figures_are_listed_not_judged_and_invariants_must_be_zero() -> None:
    actual = {"orders": 2, "tickets_sold": 5, "tickets_admitted_twice": 2}
    r = ver.compare(EXPECTED, actual)
    assert [d.key for d in r.differences] == ["tickets_admitted_twice"]
    assert "revenue_cents" in r.missing and "orders" in r.checked
    assert "not reported by the target" in r.render()
    nothing = ver.compare(EXPECTED, {})
    assert not nothing.ok and "nothing to compare" in nothing.render()


# --- the CLI ---------------------------------------------------------------------------------------


def webhook(
    seq: int, t_us: int, evt: str, pi: str, amount: int, quantity: int, expect: str
) -> Event:
    obj = {
        "id": pi,
        "object": "payment_intent",
        "amount": amount,
        "currency": "usd",
        "status": "succeeded",
        "metadata": {"event_id": "1", "quantity": str(quantity), "buyer": "b", "order_ref": pi},
    }
    body = {"id": evt, "object": "event", "type": "payment_intent.succeeded", "created": 1_700_000_000,
            "data": {"object": obj}, "livemode": False}  # fmt: skip
    return Event(
        t_us, seq, "webhook", "stripe", "fn:stripe-webhook", pack_payload(body), None, expect
    )


def scan(seq: int, t_us: int, code: str, expect: str) -> Event:
    payload = {"ticket_code": code, "event_id": 1, "gate": "A", "lane": "1", "direction": "in"}
    return Event(
        t_us,
        seq,
        "scan",
        f"attendee:{seq}",
        "rpc:scan_ticket_atomic",
        pack_payload(payload),
        None,
        expect,
    )


def trace_events() -> list[Event]:
    return [
        scan(0, 1000, ticket_code(1, 0), "valid"),
        scan(1, 2000, ticket_code(1, 1), "valid"),
        scan(2, 3000, ticket_code(1, 0), "already_scanned"),
        webhook(3, 4000, "evt_1", "pi_1", 10_000, 2, "processed"),
        webhook(4, 5000, "evt_1", "pi_1", 10_000, 2, "duplicate"),
        webhook(5, 6000, "evt_2", "pi_2", 5_000, 1, "processed"),
    ]


@pytest.fixture
def trace(tmp_path) -> str:
    path = str(tmp_path / "t.parquet")
    header = TraceHeader(inventory=Inventory((VenueEvent(1, "match", 100, 10, 5000),)))
    with open_writer(path, header) as w:
        w.write_many(trace_events())
    return path


def cli() -> click.Group:
    @click.group()
    def g() -> None:
        pass

    g.add_command(cli_verify.verify_cmd)
    return g


def local_results(path, end_state) -> str:
    """The result file of a `replay --target local` run whose stand-in ended in `end_state`."""
    h = ResultHeader(run_id="r-local", target_url="http://127.0.0.1:1", trace_path="t.grt")
    with ResultWriter(path, h) as w:
        w.close(end_us=1, end_state=end_state)
    return str(path)


def test_verify_cli_exit_codes(trace: str, tmp_path) -> None:
    expected = project(trace_events())
    assert expected["webhooks_processed"] == 2 and expected["admitted"] == 2
    same = local_results(tmp_path / "same.parquet", dict(expected))
    out = tmp_path / "v.json"
    r = CliRunner().invoke(
        cli(), ["verify", trace, "--target", "local", "--results", same, "--json", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "✓ end state matches" in r.output
    assert json.loads(out.read_text())["ok"] is True

    twice = local_results(tmp_path / "twice.grr", {**expected, "webhooks_processed": 3})
    r = CliRunner().invoke(cli(), ["verify", trace, "--target", "local", "--results", twice])
    assert r.exit_code == 99
    assert "webhooks_processed: expected 2, target has 3 (+1)" in r.output


def test_verify_cli_bad_input_exits_104(trace: str, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("SUPABASE_SERVICE_ROLE_KEY", raising=False)
    monkeypatch.delenv("SUPABASE_ANON_KEY", raising=False)
    g = cli()
    r = CliRunner().invoke(g, ["verify", str(tmp_path / "nope.parquet"), "--target", "local"])
    assert r.exit_code == 104 and "nope.parquet" in r.output and "Traceback" not in r.output
    monkeypatch.chdir(tmp_path)  # no results.parquet here: nothing to read the local end state from
    r = CliRunner().invoke(g, ["verify", trace, "--target", "local"])
    assert r.exit_code == 104 and "results.parquet" in r.output
    h = ResultHeader(run_id="r", target_url="http://127.0.0.1:1", trace_path="t.grt")
    with ResultWriter(tmp_path / "results.parquet", h):
        pass  # a run whose trailer kept no end state (not a --target local run)
    r = CliRunner().invoke(g, ["verify", trace, "--target", "local"])
    assert r.exit_code == 104 and "keeps no stand-in end state" in r.output
    r = CliRunner().invoke(g, ["verify", trace, "--target", "staging"])
    assert r.exit_code == 104 and "expected 'local' or an http(s) URL" in r.output
    r = CliRunner().invoke(g, ["verify", trace, "--target", "http://127.0.0.1:9", "--run", "r1"])
    assert r.exit_code == 104 and "SUPABASE_SERVICE_ROLE_KEY" in r.output
    monkeypatch.setenv("SUPABASE_ANON_KEY", "sb_publishable_secretvalue123")
    r = CliRunner().invoke(g, ["verify", trace, "--target", "http://127.0.0.1:9", "--run", "r1"])
    assert r.exit_code == 104 and "cannot read the end state of http://127.0.0.1:9" in r.output
    assert "secretvalue123" not in r.output  # the key never appears in a message


def test_an_empty_trace_expects_an_untouched_target(tmp_path) -> None:
    path = str(tmp_path / "empty.parquet")
    with open_writer(path, TraceHeader()):
        pass
    res = local_results(tmp_path / "r.parquet", project([]))
    r = CliRunner().invoke(cli(), ["verify", path, "--target", "local", "--results", res])
    assert r.exit_code == 0, r.output
    one = local_results(tmp_path / "one.parquet", {**project([]), "orders": 1})
    r = CliRunner().invoke(cli(), ["verify", path, "--target", "local", "--results", one])
    assert r.exit_code == 99 and "orders: expected 0, target has 1 (+1)" in r.output
    none = local_results(tmp_path / "none.parquet", {})
    r = CliRunner().invoke(cli(), ["verify", path, "--target", "local", "--results", none])
    assert r.exit_code == 99 and "nothing to compare" in r.output


# --- PostgREST against the stand-in ----------------------------------------------------------------


def _post(url: str, body: dict, headers: dict) -> dict:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json", **headers}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_rest_end_state_matches_the_standin_and_counts_only_the_run() -> None:
    from staging.server import standin_in_thread

    inv = Inventory((VenueEvent(1, "match", 100, 10, 5000),))
    with standin_in_thread(inventory=inv, deliver_webhooks=False) as s:
        auth = {"apikey": s.anon_key, "Authorization": f"Bearer {s.anon_key}"}
        rpc = f"{s.url}/rest/v1/rpc/scan_ticket_atomic"
        for run, codes in (("run-a", [0, 1, 0, 2]), ("run-b", [5])):
            for n in codes:
                args = {
                    "p_ticket_code": ticket_code(1, n),
                    "p_event_id": 1,
                    "p_gate": "A",
                    "p_lane": "1",
                }
                _post(rpc, args, {**auth, "X-Gaterush-Run": run})
        _post(rpc, {"p_ticket_code": "NOPE", "p_event_id": 1}, {**auth, "X-Gaterush-Run": "run-a"})
        for e in trace_events():
            if e.kind != "webhook":
                continue
            body = json.dumps(e.data()).encode()
            sig = stripe.WebhookSignature.generate_signature_header(
                body.decode(), s.webhook_secret, int(time.time())
            )
            req = urllib.request.Request(
                f"{s.url}/functions/v1/stripe-webhook", body,
                {"Content-Type": "application/json", "Stripe-Signature": sig, "X-Gaterush-Run": "run-a"},
            )  # fmt: skip
            urllib.request.urlopen(req, timeout=10).read()

        got = ver.rest_end_state(s.url, run_id="run-a", api_key=s.service_key)
        truth = s.end_state("run-a")
        shared = set(got) & set(truth)
        assert {
            "scans",
            "admitted",
            "orders",
            "revenue_cents",
            "tickets_sold",
            "reentries",
        } <= shared
        assert {k: got[k] for k in shared} == {k: truth[k] for k in shared}
        assert got["scans"] == {"already_scanned": 1, "invalid": 1, "valid": 3}
        assert (got["orders"], got["tickets_sold"], got["revenue_cents"]) == (2, 3, 15_000)
        assert got["tickets_admitted_twice"] == 0
        if "webhooks_processed" in got:  # only when the project exposes its webhook log
            assert (got["webhooks_processed"], got["webhooks_duplicate"]) == (2, 1)
        # the publishable (non-JWT) key reads the same, and another run's rows stay out
        assert ver.rest_end_state(s.url, run_id="run-b", api_key=s.publishable_key)["scans"] == {
            "valid": 1
        }
        with pytest.raises(ver.EndStateError, match="HTTP 401"):
            ver.rest_end_state(s.url, run_id="run-a", api_key="wrong")

        # a served stand-in answers its own end state (webhooks included) through its admin API
        assert ver.end_state_at(s.url, run_id="run-a", api_key=s.service_key) == truth
        assert truth["webhooks_processed"] == 2 and truth["webhooks_duplicate"] == 1


def test_verify_cli_against_a_served_standin(trace: str, monkeypatch) -> None:
    from staging.server import standin_in_thread

    inv = Inventory((VenueEvent(1, "match", 100, 10, 5000),))
    with standin_in_thread(inventory=inv, deliver_webhooks=False) as s:
        monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", s.service_key)
        # nothing was replayed: the target's end state differs from the trace's in what it says
        r = CliRunner().invoke(cli(), ["verify", trace, "--target", s.url, "--run", "run-x"])
        assert r.exit_code == 99, r.output
        assert (
            "webhooks_processed: expected 2, target has 0 (-2): webhook events were lost or rejected"
            in r.output
        )
        assert "admitted: expected 2, target has 0 (-2)" in r.output
        assert s.service_key not in r.output
