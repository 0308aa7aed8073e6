"""Importers on files in the formats' published shapes: Apache common/combined log lines (Apache's
own documentation example), Supabase API log export rows, `stripe events list` output (Stripe's
API reference example); bad files get a clear error or a counted skip, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traces import event as ev
from traces.cli_transforms import register
from traces.event import TraceError
from traces.importers import import_file
from traces.importers.endpoints import Endpoint, endpoint, outcome, payload_for, scrub
from traces.importers.request import REQUEST
from traces.io import open_reader

DATA = Path(__file__).parent.parent / "data" / "import"
SECRETS = ("eyJhbGciOiJIUzI1NiJ9", "_secret_", "sk_test_", "whsec_")


def all_text(events) -> str:
    return "\n".join(f"{e.actor} {e.target} {e.data()!r}" for e in events)


def test_common_log_format_doc_example_and_our_endpoints() -> None:
    header, events, report = import_file("clf", DATA / "common.log")
    # Apache's documentation line (GET /apache_pb.gif) is a valid line but no gaterush target
    assert report.skipped["not a gaterush target"] == 1 and report.lines[
        "not a gaterush target"
    ] == [1]
    assert report.skipped["not a common/combined log line"] == 1 and report.lines[
        "not a common/combined log line"
    ] == [5]
    assert report.skipped["bad time"] == 1 and report.lines["bad time"] == [7]
    assert [e.target for e in events] == [
        ev.TARGET_SCAN,
        ev.TARGET_REST_EVENTS,
        ev.TARGET_SCAN,
        ev.TARGET_REST_TICKETS,
    ]
    assert [e.t_us for e in events] == [0, 1_000_000, 2_000_000, 3_000_000]
    assert [e.seq for e in events] == [0, 1, 2, 3]
    assert header.origin_unix_us == 971_211_337_000_000  # 10/Oct/2000:13:55:37 -0700
    assert events[0].actor == "ip:203.0.113.7" and events[0].kind == ev.SCAN
    view = events[1].data()
    sent = view.pop(REQUEST)
    assert view == {"query": {"select": "id,name,capacity", "id": "eq.1"}}  # the apikey JWT is gone
    assert sent["method"] == "GET" and sent["query"] == [
        ["select", "id,name,capacity"],
        ["id", "eq.1"],
    ]
    assert events[3].expect == "http_503" and events[1].expect == ev.OK
    assert not any(s in all_text(events) for s in SECRETS)


def test_combined_log_format_doc_example() -> None:
    _, events, report = import_file("clf", DATA / "combined.log")
    assert report.lines["not a gaterush target"] == [1]  # Apache's own example line
    assert [(e.kind, e.target, e.expect) for e in events] == [
        (ev.WEBHOOK, ev.TARGET_WEBHOOK, ev.PROCESSED),
        (ev.CHECKOUT, ev.TARGET_PI_CREATE, ev.OK),
        (ev.CONFIRM, ev.TARGET_PI_CONFIRM, ev.DECLINED),
    ]
    assert events[2].data()["payment_intent"] == "pi_3MtwBwLkdIwHu7ix28a3tqPa"


def test_stripe_events_list_from_the_api_reference() -> None:
    header, events, report = import_file("stripe-events", DATA / "stripe_events.json")
    assert report.skipped == {"event without an integer 'created' time": 1} and report.lines == {
        "event without an integer 'created' time": [3]
    }
    # Stripe lists newest first; the trace is oldest first, and the repeated id is a duplicate
    assert [e.data()["id"] for e in events] == [
        "evt_1NG8Du2eZvKYlo2CUI79vXWy",
        "evt_1NG8Du2eZvKYlo2CUI79vXWy",
        "evt_3NSn9mGFzsjrzPXD1ItGjCDj",
    ]
    assert [e.expect for e in events] == [ev.PROCESSED, ev.DUPLICATE, ev.PROCESSED]
    assert {(e.kind, e.actor, e.target) for e in events} == {
        (ev.WEBHOOK, "stripe", ev.TARGET_WEBHOOK)
    }
    assert events[-1].t_us == (1689795487 - 1686089970) * 1_000_000
    assert header.origin_unix_us == 1686089970 * 1_000_000
    assert "_secret_" not in all_text(events)  # client_secret fields are not kept
    succeeded = events[-1].data()
    assert succeeded["data"]["object"]["metadata"]["quantity"] == "2"


def test_supabase_export_json_and_csv_agree() -> None:
    _, from_json, rj = import_file("supabase", DATA / "supabase_api_logs.json")
    _, from_csv, rc = import_file("supabase", DATA / "supabase_api_logs.csv")
    assert [(e.target, e.actor) for e in from_json] == [
        (ev.TARGET_SCAN, "ip:203.0.113.7"),
        (ev.TARGET_REST_EVENTS, "ip:198.51.100.23"),
        (ev.TARGET_WEBHOOK, "ip:54.187.174.169"),
    ]
    assert rj.lines == {
        "missing or bad timestamp": [3],
        "no method and URL (event_message or request fields)": [4],
    }
    assert [(e.t_us, e.target, e.actor, e.payload) for e in from_csv] == [
        (e.t_us, e.target, e.actor, e.payload) for e in from_json[:2]
    ]
    assert rc.lines == {
        "missing or bad timestamp": [4],
        "no method and URL (event_message or request fields)": [5],
    }
    assert from_json[1].t_us == 1_285_000  # ISO time read as UTC: 13:50:37.5 after 13:50:36.215


@pytest.mark.parametrize("fmt", ["har", "clf", "supabase", "stripe-events"])
@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00\x01\x02binary\xff\xfejunk" * 10,
        b"\xff\xfe\xfd not utf8",
        b'{"log": {"entries": [{"request"',
        b"just some words\nand more\n",
    ],
    ids=["empty", "binary", "not-utf8", "truncated-json", "prose"],
)
def test_bad_files_are_clear_errors_or_counted_skips(
    tmp_path: Path, fmt: str, content: bytes
) -> None:
    path = tmp_path / "input.txt"
    path.write_bytes(content)
    try:
        _, events, report = import_file(fmt, path)
    except TraceError as e:
        assert str(path) in str(e)
    else:
        assert events == [] and (report.total_skipped > 0 or content == b"")


def test_truncated_stripe_list_is_an_error_naming_the_file(tmp_path: Path) -> None:
    whole = (DATA / "stripe_events.json").read_text()
    path = tmp_path / "cut.json"
    path.write_text(whole[: len(whole) // 2])
    with pytest.raises(TraceError, match="cut.json: not a Stripe events list"):
        import_file("stripe-events", path)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    lines=st.lists(
        st.text(
            alphabet=st.characters(exclude_characters="\x00", exclude_categories=("Cs",)),
            max_size=80,
        ),
        max_size=20,
    )
)
def test_clf_never_crashes_on_arbitrary_lines(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "fuzz.log"
    good = '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /rest/v1/events HTTP/1.1" 200 5'
    path.write_text("\n".join([good, *lines]), encoding="utf-8", errors="replace")
    _, events, report = import_file("clf", path)
    assert len(events) >= 1
    assert all(isinstance(n, int) for v in report.lines.values() for n in v)


# --- path -> target mapping, secrets ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "want"),
    [
        ("POST", "/rest/v1/rpc/scan_ticket_atomic", Endpoint(ev.SCAN, ev.TARGET_SCAN)),
        ("POST", "/rest/v1/rpc/event_revenue", Endpoint(ev.VIEW, ev.TARGET_REVENUE)),
        ("POST", "/rest/v1/rpc/other_fn", Endpoint("call", "rpc:other_fn")),
        ("GET", "/rest/v1/tickets", Endpoint(ev.VIEW, ev.TARGET_REST_TICKETS)),
        ("PATCH", "/rest/v1/tickets", Endpoint("write", "rest:tickets")),
        ("POST", "/functions/v1/stripe-webhook", Endpoint(ev.WEBHOOK, ev.TARGET_WEBHOOK)),
        ("POST", "/functions/v1/hello", Endpoint("invoke", "fn:hello")),
        ("POST", "/v1/payment_intents", Endpoint(ev.CHECKOUT, ev.TARGET_PI_CREATE)),
        ("POST", "/v1/payment_intents/pi_1/confirm", Endpoint(ev.CONFIRM, ev.TARGET_PI_CONFIRM)),
        ("GET", "/v1/payment_intents/pi_1", Endpoint("stripe", "stripe:payment_intents.retrieve")),
        ("GET", "/realtime/v1/websocket", Endpoint(ev.SUBSCRIBE, "realtime:websocket")),
        ("GET", "/proxy/prefix/rest/v1/events", Endpoint(ev.VIEW, ev.TARGET_REST_EVENTS)),
        ("GET", "/favicon.ico", None),
        ("GET", "/", None),
    ],
)
def test_endpoint_from_path(method: str, path: str, want: Endpoint | None) -> None:
    assert endpoint(method, path) == want


def test_scrub_drops_secret_fields_and_values() -> None:
    body = {
        "apikey": "anything",
        "nested": {"access_token": "x", "ok": "fine", "key": "sk_live_123"},
        "list": ["whsec_abc", "sb_secret_xyz", "eyJa.eyJb.c", "plain"],
        "client_secret": "pi_1_secret_2",
    }
    assert scrub(body) == {
        "nested": {"ok": "fine"},
        "list": ["[redacted]", "[redacted]", "[redacted]", "plain"],
    }


def test_rpc_arguments_lose_the_profile_prefix_and_outcomes_follow_the_body() -> None:
    ep = endpoint("POST", "/rest/v1/rpc/scan_ticket_atomic")
    args = {
        "p_ticket_code": "T1-0000001",
        "p_event_id": 1,
        "p_gate": "A",
        "p_lane": "2",
        "p_direction": "in",
    }
    assert payload_for(ep, "POST", "/rest/v1/rpc/scan_ticket_atomic", {}, args) == {
        "ticket_code": "T1-0000001",
        "event_id": 1,
        "gate": "A",
        "lane": "2",
        "direction": "in",
    }
    assert outcome(ep, 200, {"outcome": "already_scanned", "ticket": {}}) == ev.ALREADY_SCANNED
    hook = endpoint("POST", "/functions/v1/stripe-webhook")
    assert outcome(hook, 200, {"received": True, "outcome": "duplicate"}) == ev.DUPLICATE
    assert outcome(hook, 200, {"received": True, "outcome": "processed"}) == ev.PROCESSED
    assert outcome(hook, 400, {"error": "bad signature"}) == "http_400"


# --- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli() -> click.Group:
    @click.group()
    def main() -> None:
        pass

    register(main)
    return main


def test_cli_import_writes_a_trace_and_reports(cli: click.Group, tmp_path: Path) -> None:
    out = tmp_path / "hooks.grt"
    res = CliRunner().invoke(
        cli, ["trace", "import", "stripe-events", str(DATA / "stripe_events.json"), "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "imported 3 events" in res.output and "line 3" in res.output
    with open_reader(out) as r:
        assert r.header.source == "import:stripe-events"
        assert r.header.expected["webhooks_duplicate"] == 1
        assert r.header.expected["revenue_cents"] == 5000
        assert len(list(r)) == 3
    res = CliRunner().invoke(
        cli,
        [
            "trace",
            "import",
            "clf",
            str(DATA / "common.log"),
            "-o",
            str(tmp_path / "x.parquet"),
            "--json",
        ],
    )
    assert res.exit_code == 0
    report = json.loads(res.output.rsplit("\n", 2)[0])
    assert report["skipped"]["bad time"] == {"count": 1, "lines": [7]}


def test_cli_import_bad_input_exits_104_without_traceback(cli: click.Group, tmp_path: Path) -> None:
    junk = tmp_path / "junk.har"
    junk.write_bytes(b"\x00\x00\x00 binary")
    res = CliRunner().invoke(
        cli, ["trace", "import", "har", str(junk), "-o", str(tmp_path / "o.grt")]
    )
    assert res.exit_code == 104 and "junk.har" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o.grt").exists()
    res = CliRunner().invoke(
        cli, ["trace", "import", "har", str(junk), "-o", str(tmp_path / "o.txt")]
    )
    assert res.exit_code == 104 and ".parquet or .grt" in res.output
    res = CliRunner().invoke(
        cli, ["trace", "import", "nope", str(junk), "-o", str(tmp_path / "o.grt")]
    )
    assert res.exit_code == 2
