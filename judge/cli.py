"""The `gaterush report` command, and the threshold options the commands that judge share."""

from __future__ import annotations

import json
from collections.abc import Sequence

import click

from judge import report as rep
from judge import summary as summ
from judge import thresholds as th
from traces.clitypes import FiniteFloat
from traces.exitcodes import THRESHOLDS_FAILED, InvalidInput
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
        out.extend(th.parse_cli(s) for s in specs)
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
    f"(default {th.DEFAULT_MAX_SCHEDULE_LAG_MS:g}; a schedule_lag threshold replaces it).",
)


def summary_json(judged: rep.Judgement, results: rep.Results) -> str:
    """The summary JSON text of a judged run (k6's handleSummary shape), as --summary-json writes it."""
    data = summ.to_json(
        judged.metrics, judged.verdicts, extra=rep.summary_extra(results), fidelity=judged.fidelity
    )
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


@click.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option(
    "--html", "html_out", type=click.Path(dir_okay=False), help="Write the HTML report here."
)
@click.option(
    "--summary-json",
    "json_out",
    type=click.Path(dir_okay=False),
    help="Write k6's summary JSON here.",
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
    json_out: str | None,
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
    refuse_inputs(json_out, *results, *files, html_out, option="--summary-json")
    thresholds = collect_thresholds(specs, files)
    try:
        loaded = rep.load(results)
        judged = rep.judge_run(loaded, thresholds, max_lag)
    except (rep.ReportError, th.ThresholdError) as e:
        raise InvalidInput(str(e)) from None
    if not quiet:
        click.echo(summ.render(judged.metrics, judged.verdicts, fidelity=judged.fidelity), nl=False)
    if json_out:
        write_text(json_out, summary_json(judged, loaded), "summary JSON")
    if html_out:
        page = rep.render_html(judged.metrics, judged.verdicts, results=loaded, step_s=step,
                               fidelity=judged.fidelity)  # fmt: skip
        write_text(html_out, page, "HTML report")
        if not quiet:
            click.echo(f"report: {html_out}")
    if not judged.passed:
        raise SystemExit(THRESHOLDS_FAILED)
