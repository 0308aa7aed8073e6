"""`gaterush trace` commands that import and transform traces: import, slice, speed, amplify, merge,
filter, anonymize.

Each command streams: it reads its input(s) with traces.io, applies one function of
traces.transforms (or an importer of traces.importers) and writes the result, whose header the
writer completes from the events it wrote (so `trace info` of the output is always true).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import click

from traces import transforms as tf
from traces.event import Event, TraceError
from traces.exitcodes import InvalidInput
from traces.header import TraceHeader
from traces.importers import import_file, importers
from traces.io import open_reader, open_writer, trace_format
from traces.outputs import atomic, refuse_inputs

OUT = click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Trace to write (.parquet or .grt).",
)
IN = click.argument("src", type=click.Path(dir_okay=False, path_type=Path))


def _check_output(out: Path, *inputs: Path) -> None:
    try:
        trace_format(out)
    except TraceError as e:
        raise InvalidInput(str(e)) from None
    refuse_inputs(out, *inputs)


def _write(out: Path, header: TraceHeader, events: Iterator[Event] | list[Event]) -> TraceHeader:
    """Write events to `out`; it appears only when complete (a failure leaves no partial file)."""
    with atomic(out) as tmp, open_writer(tmp, header) as w:
        w.write_many(events)
    return w.header


def _not_empty(events: Iterator[Event] | list[Event], problem: str) -> Iterator[Event]:
    """The events; InvalidInput(problem) at the end if there were none (so nothing is written)."""
    n = 0
    for n, e in enumerate(events, 1):  # noqa: B007 - n is the count
        yield e
    if not n:
        raise InvalidInput(problem)


def _run(out: Path, inputs: list[Path], transform) -> TraceHeader:
    """Open the inputs, apply `transform(readers) -> (header, events)`, write; errors exit 104."""
    _check_output(out, *inputs)
    try:
        with ExitStack() as stack:
            readers = [stack.enter_context(open_reader(p)) for p in inputs]
            header, events = transform(readers)
            return _write(out, header, events)
    except (TraceError, ValueError) as e:
        raise InvalidInput(str(e)) from None


def _done(header: TraceHeader, out: Path) -> None:
    n = sum(header.counts.values())
    click.echo(f"wrote {out}: {n} events ({header.source})")


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return tf.parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.command("import")
@click.argument("fmt", metavar="FORMAT", type=click.Choice(sorted(importers())))
@IN
@OUT
@click.option("--json", "as_json", is_flag=True, help="Print the import report as JSON.")
@click.option(
    "--supabase-url",
    default=None,
    help="The Supabase project whose requests are targets (har, supabase; default: the file's most frequent Supabase host).",
)
def import_cmd(fmt: str, src: Path, out: Path, as_json: bool, supabase_url: str | None) -> None:
    """Import recorded traffic (HAR, Supabase API logs, common/combined logs, Stripe events).

    Lines that cannot be mapped are counted and listed with their line numbers.

    \b
    Example:
      gaterush trace import har session.har -o session.grt
      gaterush trace import stripe-events events.json -o hooks.parquet
    """
    _check_output(out, src)
    if src.is_file() and src.stat().st_size == 0:
        raise InvalidInput(f"{src}: the file is empty: nothing to import")
    try:
        header, events, report = import_file(fmt, src, supabase_url=supabase_url)
        _write(
            out,
            header,
            _not_empty(events, f"{src}: nothing to import: no {fmt} entry maps to an event"),
        )
    except (TraceError, ValueError) as e:
        raise InvalidInput(str(e)) from None
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.summary())
    click.echo(f"wrote {out}")


@click.command("slice")
@IN
@OUT
@click.option(
    "--from",
    "start",
    callback=_duration,
    help="Start of the window (e.g. 90s, 5m, 1h30m); default the start.",
)
@click.option(
    "--to", "end", callback=_duration, help="End of the window, excluded; default the end."
)
@click.option(
    "--keep-times",
    is_flag=True,
    help="Keep the original times instead of starting the slice at 0.",
)
def slice_cmd(src: Path, out: Path, start: int | None, end: int | None, keep_times: bool) -> None:
    """Keep the events between two times of the trace (relative to its origin).

    The slice starts at t=0 and its header origin moves to --from, unless --keep-times.

    \b
    Example:
      gaterush trace slice day.parquet --from 1h30m --to 2h -o gates.parquet
    """
    h = _run(
        out,
        [src],
        lambda rs: tf.slice_trace(rs[0].header, iter(rs[0]), start, end, rebase=not keep_times),
    )
    _done(h, out)


@click.command("speed")
@IN
@click.argument("factor")
@OUT
def speed_cmd(src: Path, factor: str, out: Path) -> None:
    """Scale time: FACTOR 2 plays the trace twice as fast, 0.5 half as fast.

    Times are divided by FACTOR and rounded half up to the microsecond.

    \b
    Example:
      gaterush trace speed day.parquet 3 -o day-3x.parquet
    """
    try:
        f = tf.parse_factor(factor)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="FACTOR") from None
    _done(_run(out, [src], lambda rs: tf.speed(rs[0].header, iter(rs[0]), f)), out)


@click.command("amplify")
@IN
@click.argument("n", type=click.IntRange(min=1))
@OUT
@click.option(
    "--jitter",
    default="30s",
    show_default=True,
    callback=_duration,
    help="Each clone's actors move by up to this much.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the jitter.")
def amplify_cmd(src: Path, n: int, out: Path, jitter: int, seed: int) -> None:
    """N times the crowd: every actor cloned with fresh ids and ticket codes, times jittered.

    The inventory in the header is scaled by N so the stand-in seeds enough tickets.

    \b
    Example:
      gaterush trace amplify onsale.parquet 3 --jitter 20s -o onsale-3x.parquet
    """
    _done(
        _run(
            out,
            [src],
            lambda rs: tf.amplify(rs[0].header, iter(rs[0]), n, jitter_us=jitter, seed=seed),
        ),
        out,
    )


@click.command("merge")
@click.argument("srcs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@OUT
@click.option(
    "--pieces",
    is_flag=True,
    help="The inputs are pieces of one trace (from slice): keep seq and actors, align on origins.",
)
def merge_cmd(srcs: tuple[Path, ...], out: Path, pieces: bool) -> None:
    """Merge traces into one, in time order, streaming.

    Different traces overlay from t=0 with seq renumbered and colliding actors kept apart
    (`#2`); --pieces puts slices of one trace back together.

    \b
    Example:
      gaterush trace merge gates.parquet hooks.parquet -o both.parquet
      gaterush trace merge a.grt b.grt c.grt --pieces -o whole.grt
    """

    def transform(readers):
        inputs = [(r.header, _reopener(r.path)) for r in readers]
        return tf.merge(inputs, pieces=pieces)

    _done(_run(out, list(srcs), transform), out)


@click.command("filter")
@IN
@OUT
@click.option("--kind", "kinds", multiple=True, help="Keep events of this kind (repeatable).")
@click.option(
    "--target",
    "targets",
    multiple=True,
    help="Keep events whose target matches this glob, '-' for none (repeatable).",
)
@click.option(
    "--actor",
    "actors",
    multiple=True,
    help="Keep events whose actor matches this glob (repeatable).",
)
@click.option("--invert", is_flag=True, help="Keep the events that do not match instead.")
def filter_cmd(src: Path, out: Path, kinds, targets, actors, invert: bool) -> None:
    """Keep the events matching every given option (any of its values).

    \b
    Example:
      gaterush trace filter day.parquet --target 'rpc:*' --actor 'attendee:*' -o scans.parquet
    """
    if not (kinds or targets or actors):
        raise click.UsageError("give at least one of --kind, --target, --actor")
    h = _run(
        out,
        [src],
        lambda rs: tf.filter_trace(
            rs[0].header,
            iter(rs[0]),
            kinds=kinds,
            targets=targets,
            actors=actors,
            invert=invert,
        ),
    )
    _done(h, out)


@click.command("anonymize")
@IN
@OUT
@click.option(
    "--key",
    envvar=tf.ANON_KEY_ENV,
    help=f"Secret key of the tokens (or ${tf.ANON_KEY_ENV}); never written anywhere.",
)
def anonymize_cmd(src: Path, out: Path, key: str | None) -> None:
    """Replace ticket codes, emails, names, card details and client ids by keyed tokens.

    The same value always gives the same token under the same key. Keep the key secret.

    \b
    Example:
      GATERUSH_ANON_KEY=... gaterush trace anonymize recorded.grt -o shareable.grt
    """
    if not key:
        raise InvalidInput(f"anonymize needs a key: --key or ${tf.ANON_KEY_ENV}")
    _done(_run(out, [src], lambda rs: tf.anonymize(rs[0].header, iter(rs[0]), key)), out)


COMMANDS = (import_cmd, slice_cmd, speed_cmd, amplify_cmd, merge_cmd, filter_cmd, anonymize_cmd)


def register(group: click.Group) -> None:
    """Add import, slice, speed, amplify, merge, filter and anonymize to the `trace` group."""
    trace = group.commands.get("trace")
    if not isinstance(trace, click.Group):
        trace = click.Group("trace", help="Inspect, convert, import and reshape traces.")
        group.add_command(trace)
    for command in COMMANDS:
        trace.add_command(command)


def _reopener(path: os.PathLike) -> tf.Source:
    """A Source that opens the file afresh each time (merge reads its inputs twice)."""

    def events() -> Iterator[Event]:
        with open_reader(path) as r:
            yield from r

    return events
