"""Study commands: `whatif`, `sweep`, `calibrate`, `capacity` (predictions, no network).

Each parses its options, calls sim/ (whatif, sweep, calibrate, sizing) and formats the answer.
Predictions are judged by judge/ itself (sim.predict.judge_prediction), as a replay is.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import pyarrow as pa

from judge import thresholds as th
from judge.resultlog import read_results
from sim import calibrate as cal
from sim import scenario
from sim import sizing as capq
from sim import sweep as sw
from sim import whatif as wi
from sim.predict import with_thresholds, with_values
from sim.scenario import ScenarioError
from traces.clitypes import FiniteFloat
from traces.exitcodes import THRESHOLDS_FAILED, InvalidInput
from traces.limits import MAX_SECONDS
from traces.outputs import refuse_inputs, write_text


def threshold_mapping(specs: Sequence[str]) -> dict[str, list[str]]:
    """`--threshold METRIC[{tags}]=EXPR` texts as a k6 mapping (judged, hence fully checked, by the judge)."""
    try:
        return th.cli_mapping(specs)
    except th.ThresholdError as e:
        raise InvalidInput(str(e)) from None


@contextlib.contextmanager
def _invalid_input() -> Iterator[None]:
    """A ScenarioError (a bad key, value or threshold) as InvalidInput (exit 104)."""
    try:
        yield
    except ScenarioError as e:
        raise InvalidInput(str(e)) from None


def _check_thresholds(thresholds: Mapping[str, Sequence[str]]) -> None:
    if not thresholds:
        raise InvalidInput(
            "no thresholds to judge by: give --threshold METRIC=EXPR or a [thresholds] table in the scenario"
        )
    try:
        th.parse_mapping(thresholds)
    except th.ThresholdError as e:
        raise InvalidInput(str(e)) from None


def _study_data(
    name: str, sets: Sequence[str], backend: Path | None, thresholds: Sequence[str]
) -> dict[str, Any]:
    """The scenario (with --set, --backend, --threshold applied) as validated plain data."""
    with _invalid_input():
        data = scenario.load(name, list(sets)).to_dict()
        if backend is not None:
            data = cal.with_backend(data, cal.load_backend(backend))
        data = with_thresholds(data, threshold_mapping(thresholds) if thresholds else None)
        with_values(data, {})  # validates the whole result
    return data


def _seed(seed: int) -> int:
    if not 0 <= seed < 2**63:
        raise InvalidInput(f"--seed: expected an integer from 0 to 2**63 - 1, got {seed}")
    return seed


def _directory_exists(*paths: Path | None) -> None:
    for p in paths:
        if p is not None and not p.parent.is_dir():
            raise InvalidInput(f"{p}: directory {str(p.parent)!r} does not exist")


def _checks_text(j: th.Verdicts) -> list[str]:
    return [f"  {'✓' if v.ok else '✗'} {v.name}  (observed {v.observed:.6g})" for v in j.verdicts]


def _fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _status_line() -> Callable[[str], None]:
    """Write a one-line status on a terminal's stderr (nothing in a log); "" clears it."""
    tty = sys.stderr.isatty()

    def note(text: str) -> None:
        if tty:
            click.echo(f"\r\033[K{text}", err=True, nl=False)

    return note


@contextlib.contextmanager
def _dask(scheduler: str | None) -> Iterator[Any]:
    """A Dask client for `--scheduler` (None without one), closed at the end."""
    with _invalid_input():
        client = sw.dask_client(scheduler) if scheduler is not None else None
    try:
        yield client
    finally:
        if client is not None:
            client.close()


_common = [
    click.option(
        "--set",
        "sets",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a scenario value first (TOML syntax). Repeatable.",
    ),
    click.option(
        "--threshold",
        "thresholds",
        multiple=True,
        metavar="METRIC=EXPR",
        help="Judge by this threshold instead of the scenario's, e.g. 'http_req_duration{target:rpc:scan_ticket_atomic}=p(95)<200'. Repeatable.",
    ),
    click.option(
        "--backend",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        default=None,
        help="A [capacity] TOML (as `calibrate` writes) laid over the scenario's backend.",
    ),
    click.option(
        "--seed",
        type=int,
        default=0,
        show_default=True,
        help="Simulation seed (every case uses it).",
    ),
]


def _with_common(f: Callable) -> Callable:
    for opt in reversed(_common):
        f = opt(f)
    return f


# --- whatif -------------------------------------------------------------------------------------


@click.command("whatif")
@click.argument("scenario_name", metavar="SCENARIO|FILE.toml")
@click.option(
    "--vary",
    "varies",
    multiple=True,
    required=True,
    metavar="KEY=LOW..HIGH",
    help="A parameter to search over, e.g. arrivals.attendees=10000..200000. Repeatable.",
)
@_with_common
@click.option(
    "--max-examples",
    type=click.IntRange(1, 100_000),
    default=50,
    show_default=True,
    help="Cases hypothesis generates before giving up (shrinking a failure comes on top).",
)
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the failing case's full scenario TOML here (else it is printed).",
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=wi.DEFAULT_CACHE,
    show_default=True,
    help="Directory of hypothesis's example database (a found failure comes back first).",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="dask://HOST:PORT",
    help="Evaluate each case on a Dask distributed cluster (the search itself stays here).",
)
def whatif_cmd(
    scenario_name: str,
    varies: tuple[str, ...],
    sets: tuple[str, ...],
    thresholds: tuple[str, ...],
    backend: Path | None,
    seed: int,
    max_examples: int,
    out: Path | None,
    cache: Path,
    scheduler: str | None,
) -> None:
    """Search the parameters for the smallest case that breaks the thresholds (exit 99 if one does).

    \b
    Example:
      gaterush whatif event-day --vary arrivals.attendees=50000..300000 --vary gate.lanes=40..120 \\
        --threshold 'http_req_duration{target:rpc:scan_ticket_atomic}=p(95)<200' -o worst.toml
    """
    data = _study_data(scenario_name, sets, backend, thresholds)
    _check_thresholds(data.get("thresholds") or {})
    with _invalid_input():
        vs = wi.parse_varies(data, varies)
    _directory_exists(out)
    refuse_inputs(out, scenario_name, backend, cache, option="--output")
    name = data["scenario"]["name"]
    click.echo(
        f"whatif {name}: {'; '.join(map(str, vs))}; seed {_seed(seed)}; up to {max_examples} cases",
        err=True,
    )
    note = _status_line()

    def progress(case: wi.Case, shrinking: bool) -> None:
        vals = " ".join(f"{k}={_fmt(v)}" for k, v in case.values.items())
        state = "shrinking" if shrinking else "searching"
        note(f"{state}: {vals} {'held' if case.judgement.ok else 'FAILED'}")

    with _dask(scheduler) as client, _invalid_input():
        res = wi.search(data, vs, seed=seed, max_examples=max_examples, cache=cache,
                        progress=progress, evaluator=wi.evaluator(client))  # fmt: skip
    note("")
    _whatif_answer(res, name, out, seed, max_examples)


def _whatif_answer(
    res: wi.SearchResult, name: str, out: Path | None, seed: int, max_examples: int
) -> None:
    """Print what a search found (and write the failing scenario); exit 99 when a case failed."""
    effort = f"{res.tried} cases tried in {res.seconds:.1f} s"
    if res.failing is None or res.scenario is None:
        click.echo(
            f"no failing case: every threshold held in all {effort} (budget --max-examples {max_examples})"
        )
        return
    vals = ", ".join(f"{k}={_fmt(v)}" for k, v in res.failing.values.items())
    click.echo(f"FAILED: smallest failing case {vals}")
    click.echo(f"({effort}, {res.shrinking} of them shrinking it)")
    for line in _checks_text(res.failing.judgement):
        click.echo(line)
    replay_it = (
        f"gaterush simulate {out or 'case.toml'} -o case.parquet --seed {seed}"
        " && gaterush replay case.parquet --target local"
    )
    text = wi.scenario_toml(
        res.scenario,
        [
            f"whatif: the smallest case of {name!r} that breaks its thresholds: {vals}",
            f"simulate and replay it: {replay_it}",
        ],
    )
    if out is not None:
        write_text(out, text, "scenario")
        click.echo(f"scenario written to {out}: {replay_it}")
    else:
        click.echo("")
        click.echo(text, nl=False)
    sys.exit(THRESHOLDS_FAILED)


# --- sweep --------------------------------------------------------------------------------------


@click.command("sweep")
@click.argument("scenario_name", metavar="SCENARIO|FILE.toml")
@click.option(
    "--grid",
    "grids",
    multiple=True,
    required=True,
    metavar="KEY=v1,v2,...",
    help="A parameter and its values (or LOW..HIGH:STEP), e.g. gate.lanes=48,64,80. Repeatable: the grid is the product.",
)
@_with_common
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Parquet table to write: one row per point, parameters -> metrics.",
)
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write an HTML page with the plots (each metric against the first numeric --grid key).",
)
@click.option(
    "--x", "x_key", default=None, metavar="KEY", help="The --grid key on the plots' x axis."
)
@click.option(
    "--processes",
    type=click.IntRange(1, 1024),
    default=1,
    show_default=True,
    help="Local worker processes.",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="dask://HOST:PORT",
    help="Run the points on a Dask distributed cluster.",
)
def sweep_cmd(
    scenario_name: str,
    grids: tuple[str, ...],
    sets: tuple[str, ...],
    thresholds: tuple[str, ...],
    backend: Path | None,
    seed: int,
    out: Path,
    html_out: Path | None,
    x_key: str | None,
    processes: int,
    scheduler: str | None,
) -> None:
    """Predict every point of a parameter grid: a Parquet table and an HTML page of plots.

    \b
    Example:
      gaterush sweep event-day --grid gate.lanes=48,64,80,96 --grid arrivals.peak_min=5,15,25 \\
        -o lanes.parquet --html lanes.html --processes 2
    """
    data = _study_data(scenario_name, sets, backend, thresholds)
    judged = bool(data.get("thresholds"))
    if judged:
        _check_thresholds(data["thresholds"])
    axes = _sweep_axes(data, grids, scheduler, x_key)
    _directory_exists(out, html_out)
    if out.suffix.lower() not in sw.TABLE_SUFFIXES:
        raise InvalidInput(f"--output {out}: a sweep table ends in .parquet or .csv")
    refuse_inputs(out, scenario_name, backend, option="--output")
    refuse_inputs(html_out, scenario_name, backend, out, option="--html")
    n = len(sw.points(axes))
    where = scheduler or f"{processes} process{'es' if processes > 1 else ''}"
    click.echo(f"sweep {data['scenario']['name']}: {n} points on {where}", err=True)
    note = _status_line()
    with _invalid_input():
        table, seconds = sw.sweep(data, axes, judged=judged, seed=_seed(seed), processes=processes,
                                  scheduler=scheduler, progress=lambda d, t: note(f"{d}/{t} points"))  # fmt: skip
    note("")
    sw.write_parquet(table, out)
    msg = f"{n} points in {seconds:.1f} s -> {out}"
    if "ok" in table.column_names:
        msg += f" ({sum(table['ok'].to_pylist())} of {n} hold every threshold)"
    if html_out is not None:
        title = f"gaterush sweep: {data['scenario']['name']}"
        write_text(html_out, sw.render_html(table, axes, title=title, x_key=x_key), "HTML page")
        msg += f", {html_out}"
    click.echo(msg)


def _sweep_axes(
    data: Mapping[str, Any], grids: Sequence[str], scheduler: str | None, x_key: str | None
) -> tuple[sw.Axis, ...]:
    """The validated --grid axes (and --scheduler, --x)."""
    with _invalid_input():
        axes = sw.parse_grid(data, grids)
        if scheduler is not None:
            sw._scheduler_address(scheduler)
    if x_key is not None and x_key not in [a.key for a in axes]:
        raise InvalidInput(f"--x {x_key!r}: not a --grid key ({', '.join(a.key for a in axes)})")
    return axes


# --- calibrate ----------------------------------------------------------------------------------


@click.command("calibrate")
@click.argument("results", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Backend TOML to write: a [capacity] table scenarios and --backend accept.",
)
@click.option(
    "--target",
    "targets",
    multiple=True,
    metavar="TARGET",
    help="Fit only these targets. Repeatable.",
)
@click.option(
    "--check",
    "checks",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Another run's results: print the fitted model's prediction against its measurement. Repeatable.",
)
def calibrate_cmd(
    results: str, out: Path, targets: tuple[str, ...], checks: tuple[str, ...]
) -> None:
    """Fit the backend capacity model (workers, service time per endpoint) to a replay's results.

    \b
    Example:
      gaterush calibrate run.parquet -o backend.toml --check other-load.parquet
      gaterush whatif event-day --backend backend.toml --vary arrivals.attendees=50000..300000
    """
    _directory_exists(out)
    refuse_inputs(out, results, *checks, option="--output")
    try:
        fits = cal.calibrate(_read_results(results), targets)
    except ScenarioError as e:
        raise InvalidInput(f"{results}: {e}") from None
    write_text(out, cal.backend_toml(fits, results), "backend TOML")
    for f in fits:
        click.echo(cal.describe(f))
    click.echo(f"-> {out}")
    for path in checks:
        for target, meas, pred in cal.compare(_read_results(path), fits):
            err = (pred["p95"] - meas["p95"]) / meas["p95"] * 100 if meas["p95"] else float("nan")
            click.echo(
                f"{path}: {target}: measured p50 {meas['p50']:.3g} ms p95 {meas['p95']:.3g} ms; "
                f"predicted p50 {pred['p50']:.3g} ms p95 {pred['p95']:.3g} ms ({err:+.1f}% at p95)"
            )


def _read_results(path: str) -> pa.Table:
    try:
        return read_results(path)[1]
    except Exception as e:  # noqa: BLE001 - the reader's own error names what is wrong
        raise InvalidInput(f"{path}: {e}") from None


# --- capacity -----------------------------------------------------------------------------------


@click.command("capacity")
@click.argument("scenario_name", metavar="SCENARIO|FILE.toml")
@_with_common
@click.option(
    "--max-wait",
    type=FiniteFloat(min=0, max=MAX_SECONDS),
    default=600.0,
    show_default=True,
    metavar="SECONDS",
    help="The gate wait target for the lanes answer.",
)
@click.option(
    "--quantile",
    type=FiniteFloat(min=0, max=100),
    default=95.0,
    show_default=True,
    help="Which gate wait percentile must stay under --max-wait.",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(0.001, 1.0),
    default=0.02,
    show_default=True,
    help="Relative precision of the crowd multiplier.",
)
@click.option(
    "--max-multiplier",
    type=click.FloatRange(1.0, capq.MAX_MULTIPLIER),
    default=10.0,
    show_default=True,
    help="The largest crowd multiplier tried.",
)
def capacity_cmd(
    scenario_name: str,
    sets: tuple[str, ...],
    thresholds: tuple[str, ...],
    backend: Path | None,
    seed: int,
    max_wait: float,
    quantile: float,
    tolerance: float,
    max_multiplier: float,
) -> None:
    """Answer: the fewest lanes keeping the gate wait under a target, and the largest crowd the backend holds.

    Exit 99 when the scenario as given needs more lanes or breaks its thresholds.

    \b
    Example:
      gaterush capacity event-day --max-wait 300 --threshold 'http_req_duration{target:rpc:scan_ticket_atomic}=p(95)<200'
    """
    data = _study_data(scenario_name, sets, backend, thresholds)
    sc = with_values(data, {})
    _seed(seed)
    if sc.thresholds:
        _check_thresholds(data["thresholds"])
    elif sc.gate is None:
        raise InvalidInput("nothing to answer: the scenario has no [gate] and no thresholds")
    short = False
    if sc.gate is not None:
        short = _lanes_answer(sc, seed, max_wait, quantile)
    if sc.thresholds:
        short = _crowd_answer(sc, seed, tolerance, max_multiplier) or short
    if short:
        sys.exit(THRESHOLDS_FAILED)


def _lanes_answer(sc: scenario.Scenario, seed: int, max_wait: float, quantile: float) -> bool:
    """Print the fewest lanes; True when the scenario has too few."""
    note = _status_line()
    with _invalid_input():
        la = capq.fewest_lanes(sc, seed, max_wait, quantile,
                               progress=lambda n, w: note(f"{n} lanes: p({quantile:g}) gate wait {w:.0f} s"))  # fmt: skip
    tried = ", ".join(f"{n}: {w:.0f} s" for n, w in sorted(la.tried))
    if la.lanes is None:
        click.echo(
            f"lanes: no lane count up to {capq.MAX_LANES} keeps p({quantile:g}) gate wait <= {max_wait:g} s"
        )
    else:
        click.echo(
            f"lanes: {la.lanes} lanes keep the p({quantile:g}) gate wait at {la.wait_s:.0f} s <= {max_wait:g} s"
            f" (the scenario has {sc.gate.lanes})"
        )
    click.echo(f"  tried (lanes: p({quantile:g}) wait): {tried}")
    note("")
    return la.lanes is None or la.lanes > sc.gate.lanes


def _crowd_answer(sc: scenario.Scenario, seed: int, tolerance: float, high: float) -> bool:
    """Print the largest crowd the backend holds; True when it is less than the scenario's."""
    note = _status_line()
    ma = capq.largest_multiplier(sc, seed, tolerance=tolerance, high=high,
                                 progress=lambda m, j: note(f"{m:.3g}x the crowd: {'held' if j.ok else 'FAILED'}"))  # fmt: skip
    note("")
    short = False
    if ma.multiplier is None:
        click.echo(f"crowd: the thresholds fail even at {ma.failing_at:g}x the crowd")
        short = True
    elif ma.failing_at is None:
        click.echo(
            f"crowd: every threshold held up to {ma.multiplier:g}x the crowd (--max-multiplier)"
        )
    else:
        click.echo(
            f"crowd: the backend holds {ma.multiplier:.3g}x the crowd; at {ma.failing_at:.3g}x:"
        )
        for line in _checks_text(ma.failing):
            click.echo(line)
        short = ma.multiplier < 1
    tried = ", ".join(f"{m:.3g}x {'held' if ok else 'failed'}" for m, ok in sorted(ma.tried))
    click.echo(f"  tried: {tried}")
    return short


COMMANDS = (whatif_cmd, sweep_cmd, calibrate_cmd, capacity_cmd)


def register(group: click.Group) -> None:
    """Add `whatif`, `sweep`, `calibrate` and `capacity` to the gaterush group."""
    for command in COMMANDS:
        group.add_command(command)
