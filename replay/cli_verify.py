"""The `gaterush verify` and `gaterush cleanup` commands (and, until it moves to judge/, `report`):
parse, call replay.verify / replay.cleanup / judge.report, format."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import click

from judge import report as rep
from judge import summary as summ
from judge import thresholds as th
from judge.resultlog import ResultHeader
from judge.thresholds import DEFAULT_MAX_SCHEDULE_LAG_MS as th_default
from replay import verify as ver
from replay.cleanup import cleanup_at
from traces.clitypes import FiniteFloat
from traces.event import TraceError
from traces.exitcodes import THRESHOLDS_FAILED, InvalidInput
from traces.io import open_reader
from traces.limits import MAX_SECONDS
from traces.outputs import refuse_inputs, write_text


def collect_thresholds(
    specs: Sequence[str], files: Sequence[str]
) -> tuple[th.Threshold, ...] | None:
    """Thresholds from `--threshold` values and `--thresholds` files (None when neither was given)."""
    if not specs and not files:
        return None
    out: list[th.Threshold] = []
    try:
        for f in files:
            try:
                out.extend(th.load_file(f))
            except (OSError, UnicodeError) as e:
                raise InvalidInput(
                    f"{f}: cannot read the thresholds: {getattr(e, 'strerror', None) or e}"
                ) from None
        for s in specs:
            out.append(th.parse_cli(s))
    except th.ThresholdError as e:
        raise InvalidInput(str(e)) from None
    return tuple(out)


max_schedule_lag_option = click.option(
    "--max-schedule-lag",
    "max_lag",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="MS",
    help="The replay's own fidelity limit: schedule_lag p(99) under this many ms "
    f"(default {th_default:g}; a schedule_lag threshold replaces it).",
)


def _write(path: str, text: str, what: str) -> None:
    write_text(path, text, what)


def register(group: click.Group) -> None:
    """Add `report` to the gaterush group."""

    @group.command("report")
    @click.argument("results", nargs=-1, required=True, type=click.Path())
    @click.option(
        "--html", "html_out", type=click.Path(dir_okay=False), help="Write the HTML report here."
    )
    @click.option(
        "--summary-json", type=click.Path(dir_okay=False), help="Write k6's summary JSON here."
    )
    @click.option(
        "--threshold",
        "specs",
        multiple=True,
        metavar="METRIC=EXPR",
        help="Judge with this threshold instead of the run's (repeatable), e.g. 'http_req_duration=p(95)<500'.",
    )
    @click.option(
        "--thresholds",
        "files",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="Judge with the thresholds of a TOML/JSON file instead of the run's.",
    )
    @click.option(
        "--step",
        type=FiniteFloat(min=0.001, max=MAX_SECONDS),
        help="Plot bucket width in seconds (default: automatic).",
    )
    @max_schedule_lag_option
    @click.option("--quiet", "-q", is_flag=True, help="Do not print the summary.")
    def report_cmd(
        results: tuple[str, ...],
        html_out: str | None,
        summary_json: str | None,
        specs: tuple[str, ...],
        files: tuple[str, ...],
        step: float | None,
        max_lag: float | None,
        quiet: bool,
    ) -> None:
        """Re-judge result files (several shards merge) and write the HTML report and summary JSON.

        \b
        Example:
          gaterush report results.parquet --html report.html
          gaterush report w0.grr w1.grr --threshold 'http_req_duration{target:rpc:scan_ticket_atomic}=p(95)<200'
        """
        refuse_inputs(html_out, *results, *files, option="--html")
        refuse_inputs(summary_json, *results, *files, html_out, option="--summary-json")
        thresholds = collect_thresholds(specs, files)
        try:
            loaded = rep.load(results)
            judged = rep.judge_run(loaded, thresholds, max_lag)
        except (rep.ReportError, th.ThresholdError) as e:
            raise InvalidInput(str(e)) from None
        metrics, verdicts, fidelity = judged.metrics, judged.verdicts, judged.fidelity
        if not quiet:
            click.echo(summ.render(metrics, verdicts, fidelity=fidelity), nl=False)
        if summary_json:
            data = summ.to_json(
                metrics, verdicts, extra=rep.summary_extra(loaded), fidelity=fidelity
            )
            _write(summary_json, json.dumps(data, indent=2, allow_nan=False) + "\n", "summary JSON")
        if html_out:
            page = rep.render_html(
                metrics, verdicts, results=loaded, step_s=step, fidelity=fidelity
            )
            _write(html_out, page, "HTML report")
            if not quiet:
                click.echo(f"report: {html_out}")
        if not judged.passed:
            raise SystemExit(THRESHOLDS_FAILED)


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
