"""`gaterush cleanup` at a Supabase project: PostgREST deletes of the run's rows, children first."""

from __future__ import annotations

import http.server
import threading
import urllib.parse
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from replay import cli_verify
from replay.cleanup import CLEANUP_ORDER

SERVICE_KEY = "sb_secret_test_cleanup_key"


class FakeProject(http.server.BaseHTTPRequestHandler):
    """A PostgREST face: no stand-in admin endpoint; rows per table; webhook_events not exposed."""

    rows = {"scans": 7, "tickets": 3, "orders": 2}
    seen: list[tuple[str, str, dict[str, list[str]], dict[str, str]]] = []

    def _answer(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        FakeProject.seen.append(
            (
                self.command,
                url.path,
                urllib.parse.parse_qs(url.query),
                {k.lower(): v for k, v in self.headers.items()},
            )  # fmt: skip
        )
        table = url.path.removeprefix("/rest/v1/")
        if url.path.startswith("/admin/") or table not in self.rows:
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"code":"PGRST205","message":"not found"}')
            return
        self.send_response(204 if self.command == "DELETE" else 200)
        self.send_header("Content-Range", f"*/{self.rows[table]}")
        self.end_headers()

    do_DELETE = do_HEAD = _answer  # noqa: N815 - http.server's names

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def project() -> Iterator[str]:
    FakeProject.seen = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeProject)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


def cli() -> click.Group:
    @click.group()
    def g() -> None:
        pass

    g.add_command(cli_verify.cleanup_cmd)
    return g


def test_cleanup_deletes_the_runs_rows_through_postgrest(
    project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", SERVICE_KEY)
    r = CliRunner().invoke(cli(), ["cleanup", "--run", "run-42", "--target", project])
    assert r.exit_code == 0, r.output
    assert "run run-42: deleted 12 row(s): scans 7, tickets 3, orders 2" in r.output
    assert "not exposed, skipped: webhook_events" in r.output
    deletes = [(p, q, h) for m, p, q, h in FakeProject.seen if m == "DELETE"]
    # the stand-in admin endpoint first (a 404 here), then each table, children before parents
    assert [p for p, _, _ in deletes] == ["/admin/v1/runs/run-42"] + [
        f"/rest/v1/{t}" for t in CLEANUP_ORDER
    ]
    for _, q, h in deletes[1:]:
        assert q == {"run_id": ["eq.run-42"]}  # only this run's rows
        assert h["apikey"] == SERVICE_KEY and "count=exact" in h["prefer"]
    assert SERVICE_KEY not in r.output


def test_cleanup_dry_run_counts_and_deletes_nothing(
    project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", SERVICE_KEY)
    r = CliRunner().invoke(cli(), ["cleanup", "--run", "run-42", "--target", project, "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "would delete 12 row(s)" in r.output
    assert {m for m, *_ in FakeProject.seen} == {"HEAD"}


def test_cleanup_needs_the_service_role_key_and_hides_credentials(
    project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SUPABASE_SERVICE_ROLE_KEY", raising=False)
    r = CliRunner().invoke(cli(), ["cleanup", "--run", "x", "--target", project])
    assert r.exit_code == 104 and "SUPABASE_SERVICE_ROLE_KEY" in r.output
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", SERVICE_KEY)
    # a target nobody listens on: the error names it without its userinfo or query
    r = CliRunner().invoke(
        cli(), ["cleanup", "--run", "x", "--target", "http://user:hunter2@127.0.0.1:9/?apikey=k"]
    )
    assert r.exit_code == 104
    assert "hunter2" not in r.output and "apikey" not in r.output
