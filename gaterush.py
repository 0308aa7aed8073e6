"""gaterush: the click command group; each package contributes its commands.

This module is also where packages meet: replay/ and staging/ may not import each other or sim/,
so the hooks that join them (the local stand-in for `--target local`, scenario inventories for
`staging serve --seed-data`) are passed in here.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import msgpack
import numpy as np
import pyarrow as pa

import replay.cli
import replay.cli_record
import replay.cli_report
import replay.engine
import replay.metrics
import replay.report
import replay.resultlog
import replay.summary
import replay.thresholds
import replay.verify
import sim.cli
import sim.cli_study
import sim.predict
import sim.runner
import sim.scenario
import staging.cli
import staging.process
import traces.cli
import traces.cli_recorded
import traces.io
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
                replay.resultlog.ResultLogError, UnicodeError, EOFError)  # fmt: skip
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
def main(debug: bool) -> None:
    """Simulate event-day traffic, replay it at a target, and judge it against thresholds.

    \b
    Example:
      gaterush simulate event-day -o day.parquet
      gaterush replay day.parquet --target local
    """


def judge_predicted(table: pa.Table, mapping: dict[str, list[str]]) -> sim.predict.Judgement:
    """Predicted result rows judged by replay's metrics and thresholds, as a replay's would be."""
    verdicts = replay.thresholds.evaluate(
        replay.metrics.from_table(table), replay.thresholds.parse_mapping(mapping)
    )
    checks = tuple(sim.predict.Check(v.threshold.name, v.ok, v.observed) for v in verdicts)
    return sim.predict.Judgement(replay.thresholds.passed(verdicts), checks)


def sweep_plot(
    title: str, x: list[float], series: dict[str, list[float]], x_label: str, unit: str
) -> str:
    """replay.report's SVG line chart for a sweep page: one line per series, x in grid units."""
    palette = replay.report.PALETTE
    lines = [
        replay.report.Line(label, np.asarray(y, float), palette[i % len(palette)])
        for i, (label, y) in enumerate(series.items())
    ]
    return replay.report.line_chart(title, np.asarray(x, float), lines, unit, x_unit="")


traces.cli.register(main)
traces.cli_recorded.register(main)  # adds to the `trace` group: must come after it
sim.cli.register(main)
# module-level hooks: the process pool and Dask pickle them
sim.cli_study.register(
    main, judge=judge_predicted, read_results=replay.resultlog.read_results, plot=sweep_plot
)
staging.cli.register(main, inventory_for=sim.scenario.inventory_for)
replay.cli.register(main, start_local=start_local_standin)
replay.cli_report.register(main)
replay.cli_record.register(main)


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
        speed=1800.0,
    ),
)


@contextlib.contextmanager
def _standin_keeping_state(states: dict[str, Any], **kwargs: Any) -> Iterator[Any]:
    """The local stand-in for one replay; its end state is kept in `states` before it stops."""
    with start_local_standin(**kwargs) as standin:
        yield standin
        states["end_state"] = standin.end_state()


def _demo_step(step: DemoStep, out_dir: Path, seed: int) -> tuple[bool, bool, str]:
    """Simulate, replay, judge, verify and report one scenario: (thresholds held, end state ok, html)."""
    sc = sim.scenario.load(step.scenario, step.sets)
    trace = out_dir / f"{step.scenario}.parquet"
    results = out_dir / f"{step.scenario}.results.parquet"
    html = out_dir / f"{step.scenario}.html"
    sim.runner.simulate(sc, seed, trace)
    with traces.io.open_reader(trace) as reader:
        expected = reader.header.expected
    click.secho(f"\n━━ {step.scenario}  (replay at {step.speed:g}x) ━━", bold=True)
    states: dict[str, Any] = {}
    cfg = replay.engine.ReplayConfig(trace=str(trace), out=str(results), speed=step.speed)
    replay.engine.run_replay(
        cfg,
        env={},
        start_local=functools.partial(_standin_keeping_state, states),
        progress=sys.stderr,
    )
    loaded = replay.report.load([str(results)])
    metrics, verdicts = replay.report.judge_results(loaded)
    click.echo(replay.summary.render(metrics, verdicts), nl=False)
    replay.report.write_html(
        html,
        replay.report.render_html(
            metrics, verdicts, results=loaded, title=f"gaterush demo: {step.scenario}"
        ),
    )
    verification = replay.verify.compare(expected, states.get("end_state", {}))
    click.echo(verification.render())
    return replay.thresholds.passed(verdicts), verification.ok, str(html)


@main.command("demo")
@click.option("--out", "out_dir", default="gaterush-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the traces, result logs and HTML reports.")  # fmt: skip
@click.option("--seed", default=0, show_default=True, help="Simulation seed.")
def demo_cmd(out_dir: str, seed: int) -> None:
    """Run the whole loop on the embedded stand-in: simulate, replay, judge, verify, report.

    Simulates the load-test plan's four scenarios and a short event day, replays each against a
    fresh in-process stand-in, prints k6-style summaries with the plan's thresholds, checks the
    stand-in's end state against each trace's expected one, writes an HTML report per scenario,
    and exits 99 if a threshold failed or an end state differs (0 otherwise).

    \b
    Example:
      gaterush demo --out /tmp/demo && xdg-open /tmp/demo/event-day.html
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [(step.scenario, *_demo_step(step, out, seed)) for step in DEMO_STEPS]
    click.secho("\n━━ verdict ━━", bold=True)
    for name, held, verified, html in rows:
        mark = "✓" if held and verified else "✗"
        click.echo(f"  {mark} {name:<15} thresholds {'held' if held else 'FAILED':<7} "
                   f"end state {'matches' if verified else 'DIFFERS':<8} {html}")  # fmt: skip
    summary = {
        name: {"thresholds_held": held, "end_state_ok": ok, "html": h} for name, held, ok, h in rows
    }
    (out / "demo.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if not all(held and ok for _, held, ok, _ in rows):
        raise SystemExit(THRESHOLDS_FAILED)


if __name__ == "__main__":
    main(prog_name="gaterush")
