"""Commands that replay/ contributes to the gaterush CLI: `replay` (staging/ owns `cleanup`)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from replay import cli_report
from replay.engine import (
    ReplayConfig,
    ReplayError,
    ReplayStopped,
    StartLocal,
    is_out_dir,
    run_replay,
)
from replay.safety import SafetyError
from replay.target_profiles import ProfileError
from traces.clitypes import FiniteFloat
from traces.event import TraceError
from traces.exitcodes import THRESHOLDS_FAILED, InvalidInput
from traces.outputs import refuse_inputs, write_text


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


def _threshold_mapping(thresholds: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for t in thresholds:
        out.setdefault(t.selector.name, []).append(t.expression.source)
    return out


def register(group: click.Group, start_local: StartLocal | None = None) -> None:
    """Add `replay` to the gaterush group; `start_local` starts the stand-in for --target local."""

    @group.command("replay")
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
    @cli_report.max_schedule_lag_option
    @click.option("--quiet", "-q", is_flag=True, help="No progress line and no summary.")
    def replay_cmd(trace: str, out: str, target: str, speed: float, max_in_flight: int, workers: int,
                   scheduler: str | None, stripe_mode: str, profile: str | None, rate_caps: tuple[str, ...], timeout: float,
                   transport: str, pacer: str, connections: int | None, run_id: str | None, specs: tuple[str, ...], files: tuple[str, ...],
                   summary_json: str | None, dry_run: bool, max_lag: float | None, quiet: bool) -> None:  # fmt: skip
        """Fire a trace at a target in real (or scaled) time and judge it; exit 99 if a threshold failed.

        \b
        Example:
          gaterush replay day.parquet --target local -o results.parquet
          SUPABASE_URL=... SUPABASE_ANON_KEY=... gaterush replay day.parquet --target env --speed 2
          gaterush replay day.parquet --target URL --scheduler dask://10.0.0.5:8786 --workers 8 -o out/
        """
        from judge import report as rep
        from judge import summary as summ
        from judge import thresholds as th

        if not out.endswith((".parquet", ".grr")) and not is_out_dir(out):
            raise InvalidInput(
                f"--out {out}: a result log ends in .parquet or .grr (or give a directory, DIR/)"
            )
        refuse_inputs(out, trace, profile, *files, option="--out")
        refuse_inputs(summary_json, trace, out, profile, *files, option="--summary-json")
        thresholds = cli_report.collect_thresholds(specs, files)
        cfg = ReplayConfig(
            trace=trace, out=out, target=target, speed=speed, max_in_flight=max_in_flight, workers=workers,
            stripe=stripe_mode, profile=profile, scheduler=scheduler, rate_caps=_rate_caps(rate_caps), timeout=timeout,
            transport=transport, pacer=pacer, connections=connections, run_id=run_id, progress=not quiet,
        )  # fmt: skip
        try:
            result = run_replay(
                cfg, os.environ, start_local, progress=sys.stderr,
                dry_run_out=sys.stdout if dry_run else None,
                thresholds=None if thresholds is None else _threshold_mapping(thresholds),
            )  # fmt: skip
        except ReplayStopped as e:
            click.echo(f"replay: {e}", err=True)
            raise SystemExit(128 + e.signum) from None
        except (SafetyError, ProfileError, TraceError, ValueError, ReplayError) as e:
            raise InvalidInput(str(e)) from None
        if result is None:
            return
        try:
            loaded = (rep.load([str(result.out)]) if result.table is None  # shard files: read them
                      else rep.in_memory(result.out, result.header, result.table()))  # fmt: skip
            judged = rep.judge_run(loaded, thresholds, max_lag)
        except (rep.ReportError, th.ThresholdError) as e:
            raise InvalidInput(str(e)) from None
        if not quiet:
            click.echo(f"run {result.header.run_id}: {result.rows} rows in {result.out}", err=True)
            click.echo(
                summ.render(judged.metrics, judged.verdicts, fidelity=judged.fidelity), nl=False
            )
        if summary_json:
            data = summ.to_json(
                judged.metrics, judged.verdicts, extra=rep.summary_extra(loaded),
                fidelity=judged.fidelity,
            )  # fmt: skip
            write_text(
                summary_json, json.dumps(data, indent=2, allow_nan=False) + "\n", "summary JSON"
            )
        if not judged.passed:
            raise SystemExit(THRESHOLDS_FAILED)
