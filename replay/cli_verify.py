"""The `gaterush verify` and `gaterush cleanup` commands: parse, call replay.verify / replay.cleanup,
format."""

from __future__ import annotations

import json
import os

import click

from judge import report as rep
from judge.cli import collect_thresholds, max_schedule_lag_option  # noqa: F401 - replay.cli's
from judge.resultlog import ResultHeader
from replay import verify as ver
from replay.cleanup import cleanup_at
from traces.event import TraceError
from traces.exitcodes import THRESHOLDS_FAILED, InvalidInput
from traces.io import open_reader
from traces.outputs import refuse_inputs, write_text


def _write(path: str, text: str, what: str) -> None:
    write_text(path, text, what)


@click.command("verify")
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option(
    "--target", required=True, help="The target replayed: 'local' or a Supabase project URL."
)
@click.option("--run", "run_id", help="Run id whose rows to count (default: from --results).")
@click.option(
    "--results",
    "results_path",
    type=click.Path(dir_okay=False),
    help="A result file of the run: its run id, and for --target local the stand-in's end "
    "state it kept (default: results.parquet, replay's default output).",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False),
    help="Write the comparison as JSON here.",
)
def verify_cmd(
    trace: str, target: str, run_id: str | None, results_path: str | None, json_out: str | None
) -> None:
    """Compare the target's end state with the trace's expected end state; exit 99 if they differ.

    With --target local, the end state is the one the stand-in of a `replay --target local`
    had when the run ended (kept in its result file); with a URL, a running stand-in's admin
    API or a Supabase project's rows of the run, read through PostgREST.

    \b
    Example:
      gaterush replay day.parquet --target local -o results.parquet
      gaterush verify day.parquet --target local --results results.parquet
      gaterush verify day.parquet --target https://abc.supabase.co --results results.parquet
    """
    refuse_inputs(json_out, trace, results_path, option="--json")
    expected = expected_of(trace)
    header = None
    if results_path or target == "local":
        path = results_path or "results.parquet"
        try:
            header = rep.load([path]).headers[0]
        except rep.ReportError as e:
            raise InvalidInput(f"--results: {e}") from None
        run_id = run_id or header.run_id
    actual = end_state(target, run_id, header)
    result = ver.compare(expected, actual)
    click.echo(result.render(), nl=False)
    if json_out:
        _write(json_out, json.dumps(result.to_json(), indent=2) + "\n", "verification JSON")
    if not result.ok:
        raise SystemExit(THRESHOLDS_FAILED)


@click.command("cleanup")
@click.option("--run", "run_id", required=True, help="The run id whose rows to delete.")
@click.option(
    "--target",
    "--url",
    "url",
    default=lambda: os.environ.get("SUPABASE_URL", "http://127.0.0.1:54321"),
    show_default="$SUPABASE_URL or http://127.0.0.1:54321",
    help="The target replayed: a stand-in's or a Supabase project's URL.",
)
@click.option("--dry-run", is_flag=True, help="Count the rows that would go; delete nothing.")
def cleanup_cmd(run_id: str, url: str, dry_run: bool) -> None:
    """Delete every row a run created (scans, webhook events, tickets, orders) at its target.

    A stand-in does it through its admin endpoint; a Supabase project through PostgREST, on
    the rows whose run_id is the run's, with $SUPABASE_SERVICE_ROLE_KEY (the anon key may not
    delete). Stripe test-mode objects are not touched.

    \b
    Example:
      SUPABASE_SERVICE_ROLE_KEY=... gaterush cleanup --run r-20260613-1200 --target https://abc.supabase.co
      gaterush cleanup --run r-20260613-1200 --target https://abc.supabase.co --dry-run
    """
    key = os.environ.get("SUPABASE_SERVICE_ROLE_KEY", "").strip()
    if not key:
        raise InvalidInput(
            "set SUPABASE_SERVICE_ROLE_KEY (the project's service-role key, or the one "
            "`gaterush staging serve` prints) to delete a run's rows"
        )
    try:
        done = cleanup_at(url, run_id=run_id, api_key=key, dry_run=dry_run)
    except ver.EndStateError as e:
        raise InvalidInput(f"cleanup at {ver.public(url)}: {e}") from None
    click.echo(done.render(run_id))


def expected_of(trace: str) -> dict:
    """The expected end state in a trace's header (InvalidInput if unreadable or absent)."""
    try:
        with open_reader(trace) as reader:
            expected = dict(reader.header.expected or {})
    except (TraceError, OSError, ValueError) as e:
        raise InvalidInput(f"{trace}: cannot read the trace: {e}") from None
    if not expected:
        raise InvalidInput(f"{trace}: the trace header has no expected end state to verify against")
    return expected


def end_state(target: str, run_id: str | None, header: ResultHeader | None) -> dict:
    """The target's end state: for 'local' the one the run's result header kept, else a served
    stand-in's admin API, else PostgREST reads of the run's rows (a Supabase project)."""
    if target == "local":
        if header is None or header.end_state is None:
            raise InvalidInput(
                "--target local: the result file keeps no stand-in end state (it was not a "
                "`replay --target local` run, or an older gaterush wrote it); give the result file "
                "of a local run with --results, or --target URL of a running stand-in"
            )
        return dict(header.end_state)
    if not target.startswith(("http://", "https://")):
        raise InvalidInput(
            f"--target {target!r}: expected 'local' or an http(s) URL of a Supabase project"
        )
    key = os.environ.get("SUPABASE_SERVICE_ROLE_KEY") or os.environ.get("SUPABASE_ANON_KEY")
    if not key:
        raise InvalidInput(
            "set SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_ANON_KEY) to read the target's end state"
        )
    try:
        return ver.end_state_at(target, run_id=run_id, api_key=key)
    except ver.EndStateError as e:
        raise InvalidInput(f"cannot read the end state of {target}: {e}") from None
