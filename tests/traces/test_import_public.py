"""Importers on files no one here wrote: a public project's HAR and published Supabase log rows."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from click.testing import CliRunner

from gaterush import main
from traces import event as ev
from traces.importers import import_file
from traces.importers.accesslog import parse_message
from traces.importers.request import REQUEST
from traces.io import open_reader

DATA = Path(__file__).resolve().parents[1] / "data" / "import"
# sitespeedio/pagexray test/files/case-sensitive-protocol.har (MIT; see pagexray/SOURCE.md)
PAGEXRAY = DATA / "pagexray" / "case-sensitive-protocol.har"


def test_a_real_browser_har_of_other_hosts_maps_nothing() -> None:
    """api.ascend.ai/v1/log is an analytics host, not Stripe; its preflight is no retrieve."""
    _, events, report = import_file("har", PAGEXRAY)
    assert events == []
    assert report.lines["CORS preflight (OPTIONS)"] == [5, 7]  # entry numbers, 1-based
    ascend = [r for r in report.skipped if "api.ascend.ai" in r]
    assert len(ascend) == 1 and report.lines[ascend[0]] == [6, 8]
    assert "no Supabase project host" in ascend[0]
    assert "(entry 5, 7)" in report.summary() and "line" not in report.summary()
    assert report.total_skipped == 10


def _entry(base: dict, method: str, url: str, body: str | None, status: int, answer: str) -> dict:
    e = copy.deepcopy(base)
    e["request"].update(method=method, url=url, headers=[
        {"name": "apikey", "value": "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.c2ln"},
        {"name": "Content-Type", "value": "application/json"},
        {"name": "Prefer", "value": "return=representation"},
    ])  # fmt: skip
    if body is not None:
        e["request"]["postData"] = {"mimeType": "application/json", "text": body}
    e["response"].update(status=status)
    e["response"]["content"] = {"mimeType": "application/json", "text": answer}
    return e


def test_a_har_with_a_supabase_project_keeps_only_its_host_and_stripe(tmp_path: Path) -> None:
    doc = json.loads(PAGEXRAY.read_text())
    base = doc["log"]["entries"][0]
    project = "https://abcdefghijklmnopqrst.supabase.co"
    doc["log"]["entries"] += [
        _entry(base, "POST", f"{project}/rest/v1/rpc/scan_ticket_atomic",
               '{"p_ticket_code":"T1-0000001","p_event_id":1}', 200, '{"outcome":"valid"}'),
        _entry(base, "OPTIONS", f"{project}/rest/v1/rpc/scan_ticket_atomic", None, 200, ""),
        _entry(base, "POST", "https://other-project.supabase.co/rest/v1/tickets", "{}", 201, "[]"),
        _entry(base, "POST", f"{project}/rest/v1/tickets", '{"code":"X"}', 400, "{}"),
    ]  # fmt: skip
    har = tmp_path / "mixed.har"
    har.write_text(json.dumps(doc))
    _, events, report = import_file("har", har)
    assert [(e.target, e.expect) for e in events] == [
        (ev.TARGET_SCAN, ev.VALID),
        ("rest:tickets", "http_400"),
    ]
    write = events[1].data()[REQUEST]
    assert write["method"] == "POST" and write["body"] == {"code": "X"}
    assert ["prefer", "return=representation"] in write["headers"]
    assert not any(k == "apikey" for k, _ in write["headers"])
    other = [r for r in report.skipped if "other-project.supabase.co" in r]
    assert report.lines[other[0]] == [13]
    assert report.lines["CORS preflight (OPTIONS)"] == [5, 7, 12]
    assert b"eyJhbGciOiJIUzI1NiJ9" not in b"".join(e.payload for e in events)
    # --supabase-url names the other project instead
    _, events, _ = import_file("har", har, supabase_url="https://other-project.supabase.co")
    assert [e.target for e in events] == ["rest:tickets"]


# Published edge_logs rows: the short form (quoted in issue 11, from a public GitHub file), the
# long form (abdullah0300/saas-acc-app, claude-instruction.md), and storage's form with the
# project ref first (a public GitHub file); event_message and timestamp as published.
SHORT = "POST | 400 | https://vazjljkzryzrsxragumb.supabase.co/rest/v1/event_logs | okhttp/4.12.0"
LONG = (
    "GET | 400 | 202.166.161.43 | 98e87fae3bb3907b | https://adsbnzqorfmgnneiopcr.supabase.co"
    "/rest/v1/data_protection_complaints?select=*&user_id=eq.b90c5f17-12a1-4d57-81d9-48301d762b68"
    "&order=submitted_at.desc | Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36"
)
STORAGE = (
    "ydbabipbxxleeiiysojv | POST | 400 | 10.118.86.54 | 96a1fad2f6ff2e5d-DFW | /object/chat-images"
    "/56a2c117-6486-4ca5-a57d-6c2e877e7083/images/chat_image_1754351663212.jpg | okhttp/4.12.0"
)


def test_every_published_event_message_form_parses() -> None:
    assert parse_message(SHORT) == {
        "method": "POST",
        "status": "400",
        "url": "https://vazjljkzryzrsxragumb.supabase.co/rest/v1/event_logs",
        "ip": "",
    }
    long = parse_message(LONG)
    assert long is not None and long["ip"] == "202.166.161.43" and long["method"] == "GET"
    assert long["url"].endswith("order=submitted_at.desc")
    storage = parse_message(STORAGE)
    assert storage is not None and storage["url"].startswith("/object/chat-images/")
    assert parse_message("not | a | message") is None


def test_supabase_log_rows_in_the_short_form_import(tmp_path: Path) -> None:
    rows = [
        {"event_message": SHORT, "timestamp": 1773756557442000},
        {"event_message": STORAGE, "timestamp": 1754351665277000},
        {"event_message": LONG, "timestamp": 1773756558000000},
    ]
    path = tmp_path / "logs.json"
    path.write_text(json.dumps(rows))
    _, events, report = import_file(
        "supabase", path, supabase_url="https://vazjljkzryzrsxragumb.supabase.co"
    )
    assert [(e.target, e.expect) for e in events] == [("rest:event_logs", "http_400")]
    skipped = " ".join(report.skipped)
    assert "adsbnzqorfmgnneiopcr.supabase.co" in skipped and "not a gaterush target" in skipped


def test_cli_import_takes_the_supabase_url(tmp_path: Path) -> None:
    rows = [
        {"event_message": SHORT, "timestamp": 1773756557442000},
        {"event_message": LONG, "timestamp": 1773756558000000},
    ]
    src, out = tmp_path / "logs.json", tmp_path / "t.grt"
    src.write_text(json.dumps(rows))
    res = CliRunner().invoke(
        main,
        ["trace", "import", "supabase", str(src), "-o", str(out),
         "--supabase-url", "https://vazjljkzryzrsxragumb.supabase.co"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "host adsbnzqorfmgnneiopcr.supabase.co is not a target" in res.output
    with open_reader(out) as r:
        assert [e.target for e in r] == ["rest:event_logs"]
