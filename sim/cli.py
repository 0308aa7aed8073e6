"""Commands that sim/ contributes to the gaterush CLI: `scenarios` and `simulate`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sim import runner, scenario
from sim.scenario import ScenarioError
from traces.event import TraceError
from traces.exitcodes import InvalidInput
from traces.limits import ALLOW_HUGE_ENV, allow_huge

LONG_RUN_EVENTS = 50_000  # show a progress bar when a scenario is at least about this big


@click.group("scenarios", invoke_without_command=True)
@click.pass_context
def scenarios_cmd(ctx: click.Context) -> None:
    """List the built-in scenarios, one line each.

    \b
    Example:
      gaterush scenarios
      gaterush scenarios show event-day > my-day.toml
    """
    if ctx.invoked_subcommand is None:
        names = scenario.builtin_names()
        width = max(len(n) for n in names)
        for name in names:
            sc = scenario.load(name)
            click.echo(f"{name:<{width}}  {sc.scenario.description}")


@scenarios_cmd.command("show")
@click.argument("name")
def show_cmd(name: str) -> None:
    """Print a built-in scenario's full TOML, to copy and edit.

    \b
    Example:
      gaterush scenarios show scanner-burst > burst.toml
    """
    try:
        click.echo(scenario.builtin_text(name), nl=False)
    except ScenarioError as e:
        raise InvalidInput(str(e)) from None


# Peak bytes per unit, measured on `simulate` (peak RSS over its ~150 MB baseline): a burst's
# attendees are all alive at once (~500 B each), lanes are SimPy resources, presold codes a set.
MEMORY_BASE = 150 << 20
MEMORY_PER = {
    "attendee": 600,
    "buyer": 1500,
    "webhook": 400,
    "viewer": 2000,
    "lane": 1000,
    "ticket": 16,
}
SHOW_MEMORY_ABOVE = 1 << 30  # print the estimate for runs above this


def memory_estimate(sc: scenario.Scenario) -> int:
    """A rough upper bound of a simulation's peak memory in bytes (to warn or refuse up front)."""
    n = {
        "attendee": 0 if sc.arrivals is None else sc.arrivals.attendees * sc.arrivals.waves,
        "buyer": 0 if sc.sales is None else sc.sales.buyers,
        "webhook": 0 if sc.webhook_burst is None else sc.webhook_burst.events,
        "viewer": 0 if sc.dashboard is None else sc.dashboard.viewers,
        "lane": 0 if sc.gate is None else sc.gate.lanes,
        "ticket": sc.event.presold + sc.event.other_presold,
    }
    return MEMORY_BASE + sum(MEMORY_PER[k] * v for k, v in n.items())


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(sc: scenario.Scenario) -> str | None:
    """The estimate to print before a big simulation; InvalidInput if it exceeds free memory."""
    need = memory_estimate(sc)
    if need < SHOW_MEMORY_ABOVE:
        return None
    have = available_memory()
    text = f"simulating {sc.name} needs about {need / 2**30:.1f} GB of memory"
    if have is not None and need > have and not allow_huge():
        raise InvalidInput(
            f"{text}, {have / 2**30:.1f} GB are available: make the scenario smaller "
            f"(or set {ALLOW_HUGE_ENV}=1 to try anyway)"
        )
    return text + (f" ({have / 2**30:.1f} GB available)" if have is not None else "")


def _size(sc: scenario.Scenario) -> int:
    """A rough count of the events a scenario makes (to decide on a progress bar)."""
    n = 0
    if sc.arrivals is not None:
        n += (
            3 * sc.arrivals.attendees * (sc.arrivals.waves if sc.arrivals.profile == "burst" else 1)
        )
    if sc.sales is not None:
        n += 5 * sc.sales.buyers
    if sc.webhook_burst is not None:
        n += sc.webhook_burst.events
    if sc.dashboard is not None:
        n += 10 * sc.dashboard.viewers
    return n


@click.command("simulate")
@click.argument("scenario_name", metavar="SCENARIO|FILE.toml")
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Trace file to write: .parquet or .grt.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same bytes)."
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a scenario value (TOML syntax), e.g. --set gate.lanes=12. Repeatable.",
)
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar on stderr (default: on long runs)."
)
def simulate_cmd(
    scenario_name: str, out: Path, seed: int, sets: tuple[str, ...], progress: bool | None
) -> None:
    """Simulate a scenario (a built-in name or a TOML file) into a trace file.

    \b
    Example:
      gaterush simulate event-day -o day.parquet --seed 7 --set gate.lanes=80
    """
    try:
        sc = scenario.load(scenario_name, sets)
    except ScenarioError as e:
        raise InvalidInput(str(e)) from None
    if out.suffix.lower() not in (".parquet", ".grt"):
        raise InvalidInput(f"{out}: a trace file ends in .parquet or .grt")
    if not out.parent.is_dir():
        raise InvalidInput(f"{out}: directory {str(out.parent)!r} does not exist")
    if not 0 <= seed < 2**63:
        raise InvalidInput(f"--seed: expected an integer from 0 to 2**63 - 1, got {seed}")
    estimate = check_memory(sc)
    if estimate:
        click.echo(estimate, err=True)
    show = (
        progress if progress is not None else (_size(sc) >= LONG_RUN_EVENTS and sys.stderr.isatty())
    )
    try:
        if show:
            with click.progressbar(
                length=1000, label=f"simulating {sc.name}", file=sys.stderr, show_eta=True
            ) as bar:
                done = [0]

                def tick(f: float) -> None:
                    step = int(f * 1000) - done[0]
                    if step > 0:
                        bar.update(step)
                        done[0] += step

                n = runner.simulate(sc, seed, out, tick)
        else:
            n = runner.simulate(sc, seed, out)
    except (TraceError, OSError) as e:
        raise InvalidInput(f"{out}: cannot write the trace: {e}") from None
    click.echo(f"wrote {out}: {n:,} events of scenario {sc.name!r}, seed {seed}", err=True)


def register(group: click.Group) -> None:
    """Add this package's commands to the gaterush group."""
    group.add_command(scenarios_cmd)
    group.add_command(simulate_cmd)
