"""gaterush: the click command group; each package contributes its commands.

This module is also where packages meet: replay/ and staging/ may not import each other or sim/,
so the hooks that join them (the local stand-in for `--target local`, scenario inventories for
`staging serve --seed-data`) are passed in here.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import msgpack
import pyarrow as pa

import judge.cli
import judge.fidelity
import judge.report
import judge.resultlog
import judge.summary
import replay.cli
import replay.cli_record
import replay.cli_verify
import replay.engine
import replay.verify
import sim.cli
import sim.cli_study
import sim.runner
import sim.scenario
import staging.cli
import staging.process
import traces.cli
import traces.cli_transforms
from traces.event import TraceError
from traces.exitcodes import THRESHOLDS_FAILED, InvalidInput

# Trace webhooks are replayed by gaterush itself (signed at send time), so the stand-in's own
# Stripe delivery stays off during a replay: the trace, not the stand-in, decides Stripe's timing.
# The stand-in runs in a child process so that it does not share the sender's interpreter lock.
start_local_standin = functools.partial(staging.process.standin_in_process, deliver_webhooks=False)


def failure_message(err: BaseException) -> str | None:
    """The one-line message of an expected failure (I/O, a damaged file, a bad value), else None."""
    if isinstance(err, OSError):
        where = err.filename if err.filename is not None else None
        what = err.strerror or str(err) or type(err).__name__
        return f"{where}: {what}" if where is not None else what
    if isinstance(err, MemoryError):
        return "out of memory: make the input or scenario smaller"
    if isinstance(err, RecursionError):
        return "input nested too deeply"
    expected = (pa.ArrowException, msgpack.UnpackException, ValueError, TraceError,
                judge.resultlog.ResultLogError, UnicodeError, EOFError)  # fmt: skip
    if isinstance(err, expected):
        text = " ".join(str(err).split()) or type(err).__name__
        return text if len(text) <= 500 else text[:497] + "..."
    return None


class BoundedGroup(click.Group):
    """The gaterush group: expected failures become one line and exit 104 (`--debug` shows the
    traceback); anything else is reported as an internal error, also without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            raise click.Abort() from None
        except Exception as err:
            if ctx.params.get("debug"):
                raise
            message = failure_message(err)
            if message is not None:
                raise InvalidInput(message) from None
            click.echo(
                f"error: internal error ({type(err).__name__}: {err}); "
                "run with --debug for the traceback",
                err=True,
            )
            raise SystemExit(1) from None


@click.group(
    cls=BoundedGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="gaterush")
@click.option("--debug", is_flag=True, help="Show the Python traceback of a failure.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Simulate event-day traffic, replay it at a target, and judge it against thresholds.

    \b
    Example:
      gaterush simulate event-day -o day.parquet
      gaterush replay day.parquet --target local
    """
    ctx.meta[replay.cli.START_LOCAL] = start_local_standin  # `replay --target local` starts it


traces.cli.register(main)
traces.cli_transforms.register(main)  # adds to the `trace` group: must come after it
sim.cli.register(main)
sim.cli_study.register(main)
main.add_command(replay.cli_verify.cleanup_cmd)
staging.cli.register(main, inventory_for=sim.scenario.inventory_for)
main.add_command(replay.cli.replay_cmd)
main.add_command(judge.cli.report_cmd)
main.add_command(replay.cli_verify.verify_cmd)
main.add_command(replay.cli_record.record_cmd)


@dataclass(frozen=True, slots=True)
class DemoStep:
    """One scenario of the demo: the built-in, the overrides that keep it short, the replay speed."""

    scenario: str
    sets: tuple[str, ...] = ()
    speed: float = 1.0


# The load-test plan's four scenarios at their own size, and a small event day played fast, so the
# whole loop (simulate, replay, judge, verify, report) fits in about a minute and a half.
DEMO_STEPS = (
    DemoStep("scanner-burst"),
    DemoStep("webhook-burst"),
    DemoStep("purchase-load", speed=6.0),
    DemoStep(
        "dashboard-load",
        sets=(
            'dashboard.stay={dist="fixed",mean=40.0}',
            "arrivals.duration_s=35",
            "arrivals.attendees=150",
            "sales.window_s=35",
            "sales.buyers=10",
        ),
        speed=4.0,
    ),
    DemoStep(
        "event-day",
        sets=(
            "event.capacity=3000",
            "event.presold=2800",
            "event.other_presold=100",
            "arrivals.attendees=2500",
            "gate.lanes=8",
            "sales.buyers=150",
            "webhook_burst.events=50",
            "dashboard.viewers=4",
        ),
        speed=600.0,
    ),
)


@dataclass(frozen=True, slots=True)
class DemoOutcome:
    """What one demo scenario showed: the judgement of its replay and of the end state."""

    scenario: str
    thresholds_held: bool
    faithful: bool
    end_state_ok: bool
    html: str
    speed: float = 1.0  # the replay speed the verdict comes from

    @property
    def ok(self) -> bool:
        """Everything held."""
        return self.thresholds_held and self.faithful and self.end_state_ok


DEMO_SLOWDOWNS = 2  # a step whose sender fell behind is replayed again at half speed, this often


def _demo_step(
    step: DemoStep, out_dir: Path, seed: int, knobs: Any, max_lag: float | None
) -> DemoOutcome:
    """Simulate, replay, judge, verify and report one scenario, as `replay` and `verify` do.

    A replay whose sender fell behind its schedule judges the machine, not the target: it is run
    again at half the speed (a fresh stand-in each time), so the demo settles on a speed this
    machine sustains and says so.
    """
    sc = sim.scenario.load(step.scenario, step.sets)
    trace = out_dir / f"{step.scenario}.parquet"
    sim.runner.simulate(sc, seed, trace)
    speed = step.speed
    for attempt in range(DEMO_SLOWDOWNS + 1):
        outcome, judged = _demo_replay(step.scenario, trace, speed, out_dir, knobs, max_lag)
        if outcome.faithful or attempt == DEMO_SLOWDOWNS:
            break
        click.echo(f"↻ {step.scenario}: the sender fell behind at {speed:g}x on this machine; "
                   f"replaying at {speed / 2:g}x")  # fmt: skip
        speed /= 2
    click.echo(_demo_line(outcome, judged))
    return outcome


def _demo_replay(
    scenario: str, trace: Path, speed: float, out_dir: Path, knobs: Any, max_lag: float | None
) -> tuple[DemoOutcome, Any]:
    """One replay of a demo trace at a fresh stand-in, on `replay`'s own run path (resolve, run,
    judge: replay.engine.replay_and_judge); reported and verified."""
    results = out_dir / f"{scenario}.results.parquet"
    html = out_dir / f"{scenario}.html"
    click.secho(f"\n━━ {scenario}  (replay at {speed:g}x) ━━", bold=True)
    cfg = replay.engine.ReplayConfig(trace=str(trace), out=str(results), speed=speed)
    done = replay.engine.replay_and_judge(
        cfg, env={}, start_local=functools.partial(start_local_standin, knobs=knobs),
        progress=sys.stderr, max_schedule_lag_ms=max_lag,
    )  # fmt: skip
    judged = done.judged
    click.echo(
        judge.summary.render(judged.metrics, judged.verdicts, fidelity=judged.fidelity), nl=False
    )
    judge.report.write_html(
        html,
        judge.report.render_html(
            judged.metrics,
            judged.verdicts,
            results=done.loaded,
            title=f"gaterush demo: {scenario}",
            fidelity=judged.fidelity,
        ),  # fmt: skip
    )
    # the stand-in's end state when the run ended, kept in the result file (as verify reads it)
    expected = done.plan.header.expected
    verification = replay.verify.compare(expected, done.loaded.headers[0].end_state or {})
    click.echo(verification.render())
    target = [v for v in judged.verdicts if not judge.fidelity.is_fidelity(v)]
    outcome = DemoOutcome(
        scenario, all(v.ok for v in target), judged.fidelity.ok, verification.ok, str(html), speed
    )
    return outcome, judged


def _demo_line(o: DemoOutcome, judged: Any) -> str:
    """One line saying what held in a scenario, and what did not with its figure."""
    target = [v for v in judged.verdicts if not judge.fidelity.is_fidelity(v)]
    failed = [
        f"{v.threshold.selector.name} '{v.threshold.expression.source}'" for v in target if not v.ok
    ]
    parts = [
        f"all {len(target)} thresholds held" if not failed else "thresholds FAILED: " + ", ".join(failed),
        f"replay faithful at {o.speed:g}x" if o.faithful else f"replay NOT faithful at {o.speed:g}x (see above)",
        "end state matches" if o.end_state_ok else "end state DIFFERS",
    ]  # fmt: skip
    return f"{'✓' if o.ok else '✗'} {o.scenario}: " + "; ".join(parts)


@main.command("demo")
@click.option("--out", "out_dir", default="gaterush-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the traces, result logs and HTML reports.")  # fmt: skip
@click.option("--seed", default=0, show_default=True, help="Simulation seed.")
@click.option("--knobs", "knobs_file", type=click.Path(dir_okay=False),
              help="Stand-in knobs TOML (latency, workers, faults), as `staging serve --knobs`.")  # fmt: skip
@click.option("--latency", multiple=True, metavar="EP=DIST",
              help="Added stand-in latency, e.g. 'rpc:*=300ms', as `staging serve --latency`.")  # fmt: skip
@replay.cli_verify.max_schedule_lag_option
def demo_cmd(
    out_dir: str, seed: int, knobs_file: str | None, latency: tuple[str, ...], max_lag: float | None
) -> None:
    """Run the whole loop on the embedded stand-in: simulate, replay, judge, verify, report.

    Simulates the load-test plan's four scenarios and a short event day, replays each against a
    fresh stand-in in a child process, prints k6-style summaries with the plan's thresholds and
    the replay's own fidelity, checks the stand-in's end state against each trace's expected one,
    writes an HTML report per scenario, and exits 99 if a threshold failed, the replay fell behind
    or an end state differs (0 otherwise). Give the stand-in latency to watch a verdict fail.

    \b
    Example:
      gaterush demo --out /tmp/demo && xdg-open /tmp/demo/event-day.html
      gaterush demo --latency 'rpc:*=300ms'     # the scan thresholds fail, and say why
    """
    knobs = staging.cli.build_knobs(knobs_file, latency, (), (), (), ())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [_demo_step(step, out, seed, knobs, max_lag) for step in DEMO_STEPS]
    click.secho("\n━━ verdict ━━", bold=True)
    for o in rows:
        click.echo(f"  {'✓' if o.ok else '✗'} {o.scenario:<15} "
                   f"thresholds {'held' if o.thresholds_held else 'FAILED':<7} "
                   f"replay {'faithful' if o.faithful else 'BEHIND':<9} "
                   f"end state {'matches' if o.end_state_ok else 'DIFFERS':<8} {o.html}")  # fmt: skip
    summary = {
        o.scenario: {
            "thresholds_held": o.thresholds_held,
            "replay_faithful": o.faithful,
            "end_state_ok": o.end_state_ok,
            "speed": o.speed,
            "html": o.html,
        }
        for o in rows
    }
    (out / "demo.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if not all(o.ok for o in rows):
        raise SystemExit(THRESHOLDS_FAILED)


if __name__ == "__main__":
    main(prog_name="gaterush")
