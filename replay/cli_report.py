"""The `gaterush report` and `gaterush verify` commands: parse, call replay.report / replay.verify, format."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import click

from replay import report as rep
from replay import summary as summ
from replay import thresholds as th
from replay import verify as ver
from traces.event import TraceError
from traces.exitcodes import THRESHOLDS_FAILED, InvalidInput
from traces.io import open_reader


def collect_thresholds(
    specs: Sequence[str], files: Sequence[str]
) -> tuple[th.Threshold, ...] | None:
    """Thresholds from `--threshold` values and `--thresholds` files (None when neither was given)."""
    if not specs and not files:
        return None
    out: list[th.Threshold] = []
    try:
        for f in files:
            out.extend(th.load_file(f))
        for s in specs:
            out.append(th.parse_cli(s))
    except th.ThresholdError as e:
        raise InvalidInput(str(e)) from None
    return tuple(out)


def _write(path: str, text: str, what: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise InvalidInput(f"{path}: cannot write the {what}: {e.strerror or e}") from None


def register(group: click.Group, end_state_of: ver.EndStateOf | None = None) -> None:
    """Add `report` and `verify` to the gaterush group.

    `end_state_of(url, keys)` returns a target's end state (traces.projection keys) or None when it
    does not know the target; the stand-in's is wired by gaterush.py. Without it (or on None),
    `verify` reads a Supabase project through PostgREST.
    """

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
        type=click.FloatRange(min=0.001),
        help="Plot bucket width in seconds (default: automatic).",
    )
    @click.option("--quiet", "-q", is_flag=True, help="Do not print the summary.")
    def report_cmd(
        results: tuple[str, ...],
        html_out: str | None,
        summary_json: str | None,
        specs: tuple[str, ...],
        files: tuple[str, ...],
        step: float | None,
        quiet: bool,
    ) -> None:
        """Re-judge result files (several shards merge) and write the HTML report and summary JSON.

        \b
        Example:
          gaterush report results.parquet --html report.html
          gaterush report w0.grr w1.grr --threshold 'http_req_duration{target:rpc:scan_ticket_atomic}=p(95)<200'
        """
        thresholds = collect_thresholds(specs, files)
        try:
            loaded = rep.load(results)
            metrics, verdicts = rep.judge_results(loaded, thresholds)
        except (rep.ReportError, th.ThresholdError) as e:
            raise InvalidInput(str(e)) from None
        if not quiet:
            click.echo(summ.render(metrics, verdicts), nl=False)
        if summary_json:
            data = summ.to_json(metrics, verdicts, extra=rep.summary_extra(loaded))
            _write(summary_json, json.dumps(data, indent=2, allow_nan=False) + "\n", "summary JSON")
        if html_out:
            page = rep.render_html(metrics, verdicts, results=loaded, step_s=step)
            _write(html_out, page, "HTML report")
            if not quiet:
                click.echo(f"report: {html_out}")
        if not th.passed(verdicts):
            raise SystemExit(THRESHOLDS_FAILED)

    @group.command("verify")
    @click.argument("trace", type=click.Path(dir_okay=False))
    @click.option(
        "--target", required=True, help="The target replayed: 'local' or a Supabase project URL."
    )
    @click.option("--run", "run_id", help="Run id whose rows to count (default: from --results).")
    @click.option(
        "--results",
        "results_path",
        type=click.Path(dir_okay=False),
        help="A result file of the run (for its run id).",
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

        \b
        Example:
          gaterush verify day.parquet --target local
          gaterush verify day.parquet --target https://abc.supabase.co --results results.parquet
        """
        expected = expected_of(trace)
        if results_path and not run_id:
            try:
                run_id = rep.load([results_path]).headers[0].run_id
            except rep.ReportError as e:
                raise InvalidInput(str(e)) from None
        actual = end_state(target, run_id, end_state_of)
        result = ver.compare(expected, actual)
        click.echo(result.render(), nl=False)
        if json_out:
            _write(json_out, json.dumps(result.to_json(), indent=2) + "\n", "verification JSON")
        if not result.ok:
            raise SystemExit(THRESHOLDS_FAILED)


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


def end_state(target: str, run_id: str | None, end_state_of: ver.EndStateOf | None) -> dict:
    """The target's end state: the wired callable first, else a served stand-in's admin API, else
    PostgREST reads of the run's rows (a Supabase project)."""
    if end_state_of is not None:
        got = end_state_of(target, ver.KEYS)
        if got is not None:
            return dict(got)
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
