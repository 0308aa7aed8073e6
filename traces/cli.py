"""Commands that traces/ contributes to the gaterush CLI: the `trace` group."""

from __future__ import annotations

import sys

import click

from traces.event import TraceError
from traces.exitcodes import InvalidInput

FILE = click.Path(dir_okay=True, path_type=str)


@click.group("trace")
def trace() -> None:
    """Inspect and convert trace files (.parquet or .grt).

    \b
    Example:
      gaterush trace info day.parquet
      gaterush trace head day.parquet -n 20
      gaterush trace convert day.parquet day.grt
    """


@trace.command("info")
@click.argument("file", type=FILE)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the summary as JSON (for scripts and CI)."
)
@click.option(
    "--bucket",
    metavar="WIDTH",
    default=None,
    help="Timeline bucket width: 500ms, 10s, 5m, 1h, 1d. Default: from the trace's length "
    "(1s under 2 min, 10s under 20 min, 1m under 3 h, else 10m), widened to at most 60 rows.",
)
def info_cmd(file: str, as_json: bool, bucket: str | None) -> None:
    """Summarise a trace: duration, events per kind and target, peak rates per second and per
    minute, a timeline of requests per time bucket, expected end state.

    Also checks the events are sorted and that the header still equals a fold over them. A file
    cut short is summarised up to the cut, then the command exits 104.

    \b
    Example:
      gaterush trace info day.parquet
      gaterush trace info day.parquet --bucket 5m
      gaterush trace info day.grt --json | jq .peak_rps
    """
    from traces.info import format_info, info_json, parse_bucket, summarize

    try:
        bucket_us = None if bucket is None else parse_bucket(bucket, "--bucket")
    except ValueError as err:
        raise InvalidInput(str(err)) from None
    try:
        info = summarize(file, bucket_us)
    except TraceError as err:
        raise InvalidInput(str(err)) from None
    except ValueError as err:  # the bucket asked for gives too many rows
        raise InvalidInput(f"--bucket {bucket!r}: {err}") from None
    click.echo(info_json(info) if as_json else format_info(info))
    if info.problem:
        raise InvalidInput(info.problem)


@trace.command("head")
@click.argument("file", type=FILE)
@click.option(
    "-n",
    "--lines",
    "n",
    type=click.IntRange(min=0, max=sys.maxsize),
    default=10,
    show_default=True,
    help="How many events.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (JSON Lines).")
def head_cmd(file: str, n: int, as_json: bool) -> None:
    """Print the first N events, one per line, with the payload decoded.

    \b
    Example:
      gaterush trace head day.parquet -n 20
      gaterush trace head day.grt -n 5 --json
    """
    from traces.listing import event_json, format_event, head

    fmt = event_json if as_json else format_event
    try:
        for e in head(file, n):
            click.echo(fmt(e))
    except TraceError as err:
        raise InvalidInput(str(err)) from None


@trace.command("convert")
@click.argument("src", metavar="IN", type=FILE)
@click.argument("dst", metavar="OUT", type=FILE)
@click.option(
    "--salvage",
    is_flag=True,
    help="If IN is cut short or corrupt, keep every complete event before the damage (exit 0).",
)
def convert_cmd(src: str, dst: str, salvage: bool) -> None:
    """Convert a trace between .parquet and .grt (formats from the suffixes), losslessly.

    Streams in bounded memory; OUT appears only when complete. The header's counts and expected
    end state are recomputed from the events.

    \b
    Example:
      gaterush trace convert day.parquet day.grt
      gaterush trace convert crashed-recording.grt saved.parquet --salvage
    """
    from traces.convert import convert

    try:
        done = convert(src, dst, salvage=salvage)
    except TraceError as err:
        raise InvalidInput(str(err)) from None
    click.echo(f"wrote {dst}: {done.events:,} events")
    if done.problem:
        click.echo(
            f"warning: {done.problem}; kept the {done.events:,} complete events before it", err=True
        )


def register(group: click.Group) -> None:
    """Add this package's commands to the gaterush group."""
    group.add_command(trace)
