"""`gaterush replay`: parse the options, call replay.engine's one run path, print the verdict.

The stand-in for `--target local` comes from staging/, which replay/ may not import: gaterush.py
puts its starter in the click context (``ctx.meta[START_LOCAL]``); without one, `--target local`
says the build does not provide it.
"""

from __future__ import annotations

import json
import os
import sys

import click

from judge import report as rep
from judge import summary as summ
from judge import thresholds as th
from replay import cli_verify
from replay.engine import (
    ReplayConfig,
    ReplayError,
    ReplayStopped,
    StartLocal,
    is_out_dir,
    replay_and_judge,
    run_replay,
)
from replay.safety import SafetyError
from replay.target_profiles import ProfileError
from traces.clitypes import FiniteFloat
from traces.event import TraceError
from traces.exitcodes import THRESHOLDS_FAILED, InvalidInput
from traces.outputs import refuse_inputs, write_text

START_LOCAL = "gaterush.start_local"  # ctx.meta key: what starts the stand-in for --target local


def _rate_caps(specs: tuple[str, ...]) -> dict[str, float]:
    caps: dict[str, float] = {}
    for s in specs:
        target, sep, rate = s.rpartition("=")
        try:
            value = float(rate)
        except ValueError:
            value = -1.0
        if not sep or not target or not value > 0:
            raise InvalidInput(
                f"--rate-cap {s!r}: expected TARGET=REQUESTS_PER_SECOND, e.g. rpc:scan_ticket_atomic=200"
            )
        caps[target] = value
    return caps


@click.command("replay")
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--out",
    default="results.parquet",
    show_default=True,
    help="Result log (.parquet, or .grr to stream); readable while the run goes. "
    "A directory (DIR/): each shard writes its own file there; `report DIR` merges them.",
)
@click.option(
    "--target",
    default="local",
    show_default=True,
    help="'local' starts the stand-in; 'env' is $SUPABASE_URL; or a Supabase project URL (keys from SUPABASE_ANON_KEY, ...).",
)
@click.option(
    "--speed",
    type=float,  # the engine refuses nan, inf and <= 0 (exit 104)
    default=1.0,
    show_default=True,
    help="Replay speed: 2 = twice as fast.",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Requests in flight at most; events beyond it are dropped and counted (dropped_events).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Shards (sender processes, or Dask tasks with --scheduler); actors are sharded across them.",
)
@click.option(
    "--scheduler",
    metavar="dask://HOST:PORT",
    help="Run the shards on this Dask cluster (pip install 'gaterush[dask]'); keys come from each worker's environment.",
)
@click.option(
    "--stripe",
    "stripe_mode",
    default="standin",
    show_default=True,
    help="Where Stripe API calls go: standin, real (test mode, capped at 25/s), or a URL.",
)
@click.option(
    "--profile",
    type=click.Path(dir_okay=False),
    help="Target profile TOML (paths, argument names).",
)
@click.option(
    "--rate-cap",
    "rate_caps",
    multiple=True,
    metavar="TARGET=N",
    help="Cap a target at N requests/s (repeatable); the excess is dropped and counted.",
)
@click.option(
    "--timeout",
    type=FiniteFloat(min=0.001, max=86_400),
    default=60.0,
    show_default=True,
    help="Seconds to wait for one response.",
)
@click.option(
    "--transport",
    type=click.Choice(["raw", "aiohttp"]),
    default="raw",
    show_default=True,
    help="HTTP client: raw keep-alive protocol (fastest) or aiohttp.",
)
@click.option(
    "--pacer",
    type=click.Choice(["auto", "timerfd", "loop"]),
    default="auto",
    show_default=True,
    help="How the sender waits for each deadline: timerfd sleeps (cheap, the default on Linux); "
    "loop spins a core (keeps its schedule when other processes crowd the CPU).",
)
@click.option(
    "--connections",
    type=click.IntRange(min=1),
    default=None,
    help="Cap on connections per host (default: one per request in flight); requests wait for one.",
)
@click.option("--run-id", help="Run id sent on every request (default: a fresh one).")
@click.option(
    "--threshold",
    "specs",
    multiple=True,
    metavar="METRIC=EXPR",
    help="Judge with this threshold instead of the trace's (repeatable).",
)
@click.option(
    "--thresholds",
    "files",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Judge with the thresholds of a TOML/JSON file instead of the trace's.",
)
@click.option(
    "--summary-json", type=click.Path(dir_okay=False), help="Write k6's summary JSON here."
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the plan (requests per target, peak rate, ...) and send nothing.",
)
@cli_verify.max_schedule_lag_option
@click.option("--quiet", "-q", is_flag=True, help="No progress line and no summary.")
@click.pass_context
def replay_cmd(ctx: click.Context, trace: str, out: str, target: str, speed: float, max_in_flight: int,
               workers: int, scheduler: str | None, stripe_mode: str, profile: str | None,
               rate_caps: tuple[str, ...], timeout: float, transport: str, pacer: str, connections: int | None,
               run_id: str | None, specs: tuple[str, ...], files: tuple[str, ...], summary_json: str | None,
               dry_run: bool, max_lag: float | None, quiet: bool) -> None:  # fmt: skip
    """Fire a trace at a target in real (or scaled) time and judge it; exit 99 if a threshold failed.

    \b
    Example:
      gaterush replay day.parquet --target local -o results.parquet
      SUPABASE_URL=... SUPABASE_ANON_KEY=... gaterush replay day.parquet --target env --speed 2
      gaterush replay day.parquet --target URL --scheduler dask://10.0.0.5:8786 --workers 8 -o out/
    """
    if not out.endswith((".parquet", ".grr")) and not is_out_dir(out):
        raise InvalidInput(
            f"--out {out}: a result log ends in .parquet or .grr (or give a directory, DIR/)"
        )
    refuse_inputs(out, trace, profile, *files, option="--out")
    refuse_inputs(summary_json, trace, out, profile, *files, option="--summary-json")
    thresholds = cli_verify.collect_thresholds(specs, files)
    cfg = ReplayConfig(
        trace=trace, out=out, target=target, speed=speed, max_in_flight=max_in_flight, workers=workers,
        stripe=stripe_mode, profile=profile, scheduler=scheduler, rate_caps=_rate_caps(rate_caps), timeout=timeout,
        transport=transport, pacer=pacer, connections=connections, run_id=run_id, progress=not quiet,
    )  # fmt: skip
    start_local: StartLocal | None = ctx.meta.get(START_LOCAL)
    try:
        if dry_run:
            run_replay(cfg, os.environ, start_local, dry_run_out=sys.stdout)
            return
        done = replay_and_judge(cfg, os.environ, start_local, sys.stderr, thresholds, max_lag)
    except ReplayStopped as e:
        click.echo(f"replay: {e}", err=True)
        raise SystemExit(128 + e.signum) from None
    except (SafetyError, ProfileError, TraceError, ValueError, ReplayError, rep.ReportError,
            th.ThresholdError) as e:  # fmt: skip
        raise InvalidInput(str(e)) from None
    judged = done.judged
    if not quiet:
        click.echo(
            f"run {done.result.header.run_id}: {done.result.rows} rows in {done.result.out}",
            err=True,
        )
        click.echo(summ.render(judged.metrics, judged.verdicts, fidelity=judged.fidelity), nl=False)
    if summary_json:
        data = summ.to_json(judged.metrics, judged.verdicts, extra=rep.summary_extra(done.loaded),
                            fidelity=judged.fidelity)  # fmt: skip
        write_text(summary_json, json.dumps(data, indent=2, allow_nan=False) + "\n", "summary JSON")
    if not judged.passed:
        raise SystemExit(THRESHOLDS_FAILED)
