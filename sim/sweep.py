"""Sweeps: a grid of scenario parameters, each point predicted and judged, as one table and one page.

Points are independent, so they run on a local process pool or, given a scheduler address, on a
Dask distributed cluster. Every point uses the same seed (common random numbers): a difference
between two points comes from the parameters, not from the dice.
"""

from __future__ import annotations

import html
import itertools
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from judge import report
from sim.predict import evaluate, lookup, with_values
from sim.scenario import ScenarioError
from sim.whatif import _number
from traces import cluster
from traces.outputs import atomic

Progress = Callable[[int, int], None]  # (points done, points in all)

MAX_POINTS = 100_000


@dataclass(frozen=True, slots=True)
class Axis:
    """One grid dimension: a dotted scenario key and the values it takes."""

    key: str
    values: tuple[Any, ...]


def _value(text: str, option: str) -> Any:
    t = text.strip()
    if not t:
        raise ScenarioError("", f"{option}: an empty value")
    try:
        return _number(t, option)
    except ScenarioError:
        return t.strip('"')


def _expand(spec: str, option: str) -> list[Any]:
    """`v1,v2,...` or `LOW..HIGH:STEP` (numbers) as a list of values."""
    if ".." in spec and "," not in spec:
        rng, _, step = spec.partition(":")
        lo_t, _, hi_t = rng.partition("..")
        lo, hi = _number(lo_t.strip(), option), _number(hi_t.strip(), option)
        st = _number(step.strip(), option) if step.strip() else 1
        if lo > hi:
            raise ScenarioError("", f"{option}: empty range (LOW {lo} > HIGH {hi})")
        if st <= 0:
            raise ScenarioError("", f"{option}: expected a STEP > 0, got {st}")
        n = int(math.floor((hi - lo) / st + 1e-9)) + 1
        if n > MAX_POINTS:
            raise ScenarioError("", f"{option}: {n} values is too many (at most {MAX_POINTS})")
        return [
            lo + i * st if isinstance(lo + st, int) else round(lo + i * st, 12) for i in range(n)
        ]
    return [_value(v, option) for v in spec.split(",")]


def parse_grid(
    data: Mapping[str, Any], specs: Sequence[str], option: str = "--grid"
) -> tuple[Axis, ...]:
    """Validated axes from `KEY=v1,v2,...` or `KEY=LOW..HIGH:STEP` texts; ScenarioError names a bad key or value."""
    axes: list[Axis] = []
    for spec in specs:
        key, sep, rest = spec.partition("=")
        key = key.strip()
        where = f"{option} {spec!r}"
        if not sep or not key or not rest.strip():
            raise ScenarioError(
                "",
                f"{where}: expected KEY=v1,v2,... or KEY=LOW..HIGH:STEP, e.g. gate.lanes=8,12,16",
            )
        if any(a.key == key for a in axes):
            raise ScenarioError(key, f"{option} given twice for this key")
        values = _expand(rest, where)
        typed = []
        for v in values:
            sc = with_values(
                data, {key: v}
            )  # ScenarioError names the key: unknown, wrong type, out of bounds
            got = lookup(sc.to_dict(), key)
            if isinstance(got, dict | list):
                raise ScenarioError(
                    key, f"{where}: this key holds a table or an array; sweep one of its values"
                )
            typed.append(got)
        if len(set(map(repr, typed))) != len(typed):
            raise ScenarioError(key, f"{where}: a value is repeated")
        axes.append(Axis(key, tuple(typed)))
    if not axes:
        raise ScenarioError("", f"give at least one {option} KEY=v1,v2,...")
    n = math.prod(len(a.values) for a in axes)
    if n > MAX_POINTS:
        raise ScenarioError("", f"{option}: the grid has {n} points, at most {MAX_POINTS}")
    return tuple(axes)


def points(axes: Sequence[Axis]) -> list[dict[str, Any]]:
    """Every combination of the axes' values (the last axis varies fastest)."""
    return [
        dict(zip((a.key for a in axes), combo, strict=True))
        for combo in itertools.product(*(a.values for a in axes))
    ]


def evaluate_point(
    data: Mapping[str, Any], values: Mapping[str, Any], seed: int, judged: bool = True
) -> dict[str, Any]:
    """One grid point as a table row: its parameters, headline figures, and each threshold (observed, held)."""
    figures, j = evaluate(with_values(data, values), seed, judged)
    row: dict[str, Any] = dict(values)
    row.update(figures)
    if j is not None:
        row["ok"] = j.ok
        for c in j.verdicts:
            row[c.name] = c.observed
            row[f"{c.name} held"] = c.ok
    return row


def _scheduler_address(scheduler: str) -> str:
    try:
        return cluster.scheduler_address(scheduler)
    except cluster.ClusterError as e:
        raise ScenarioError("", str(e)) from None


def dask_client(scheduler: str) -> Any:
    """A distributed.Client connected to `dask://HOST:PORT` (ScenarioError when it cannot be)."""
    try:
        return cluster.dask_client(scheduler)
    except cluster.ClusterError as e:
        raise ScenarioError("", str(e)) from None


def run_points(
    data: Mapping[str, Any],
    pts: Sequence[Mapping[str, Any]],
    *,
    judged: bool = True,
    seed: int = 0,
    processes: int = 1,
    scheduler: str | None = None,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Evaluate points (in order): in this process, on a process pool, or on a Dask cluster."""
    n = len(pts)
    rows: list[dict[str, Any] | None] = [None] * n
    tick = progress or (lambda done, total: None)
    if scheduler is not None:
        client = dask_client(scheduler)
        try:
            futures = client.map(
                evaluate_point, [data] * n, list(pts), [seed] * n, [judged] * n, pure=False
            )
            index = {f.key: i for i, f in enumerate(futures)}
            from distributed import as_completed as dask_completed  # noqa: PLC0415

            for done, f in enumerate(dask_completed(futures), 1):
                rows[index[f.key]] = f.result()
                tick(done, n)
        finally:
            client.close()
    elif processes <= 1 or n <= 1:
        for i, p in enumerate(pts):
            rows[i] = evaluate_point(data, p, seed, judged)
            tick(i + 1, n)
    else:
        with ProcessPoolExecutor(max_workers=min(processes, n)) as pool:
            futs = {
                pool.submit(evaluate_point, data, p, seed, judged): i for i, p in enumerate(pts)
            }
            for done, f in enumerate(as_completed(futs), 1):
                rows[futs[f]] = f.result()
                tick(done, n)
    return [r for r in rows if r is not None]


def to_table(
    rows: Sequence[Mapping[str, Any]], axes: Sequence[Axis], meta: Mapping[str, str] | None = None
) -> pa.Table:
    """One Arrow table: a column per parameter (in grid order), then the figures and thresholds."""
    names: list[str] = [a.key for a in axes]
    for r in rows:
        names.extend(k for k in r if k not in names)
    table = pa.table({k: pa.array([r.get(k) for r in rows]) for k in names})
    if meta:
        table = table.replace_schema_metadata(
            {f"gaterush.{k}".encode(): v.encode() for k, v in meta.items()}
        )
    return table


def sweep(
    data: Mapping[str, Any],
    axes: Sequence[Axis],
    *,
    judged: bool = True,
    seed: int = 0,
    processes: int = 1,
    scheduler: str | None = None,
    progress: Progress | None = None,
) -> tuple[pa.Table, float]:
    """Run the whole grid: (table of parameters -> metrics, wall seconds); `judged`: by the thresholds."""
    t0 = time.perf_counter()
    rows = run_points(
        data,
        points(axes),
        judged=judged,
        seed=seed,
        processes=processes,
        scheduler=scheduler,
        progress=progress,
    )
    seconds = time.perf_counter() - t0
    meta = {
        "scenario": str(lookup(data, "scenario.name")),
        "seed": str(seed),
        "grid": " ".join(f"{a.key}={','.join(map(str, a.values))}" for a in axes),
    }
    return to_table(rows, axes, meta), seconds


TABLE_SUFFIXES = (".parquet", ".csv")  # what write_parquet writes, by the output's suffix


def write_parquet(table: pa.Table, path: str | os.PathLike[str]) -> None:
    """Write the sweep table as Parquet, or CSV for a .csv path (appears only when complete)."""
    # through a file object: pyarrow removes a path it failed to write, even a link the user made
    with atomic(path) as tmp, open(tmp, "wb") as f:
        if Path(path).suffix.lower() == ".csv":
            pacsv.write_csv(table, f)
        else:
            pq.write_table(table, f)


# --- the page -----------------------------------------------------------------------------------

CSS = (
    "body{font:14px/1.45 -apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:24px;color:#222}"
    "h1{font-size:22px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}"
    "table{border-collapse:collapse} td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:right}"
    ".fail{color:#b00020;font-weight:600} .ok{color:#1b5e20}"
)


def plot_lines(
    title: str, x: Sequence[float], series: Mapping[str, Sequence[float]], x_label: str, unit: str
) -> str:
    """judge.report's SVG line chart for a sweep page: one line per series, x in grid units."""
    palette = report.PALETTE
    lines = [
        report.Line(label, np.asarray(y, float), palette[i % len(palette)])
        for i, (label, y) in enumerate(series.items())
    ]
    return report.line_chart(title, np.asarray(x, float), lines, unit, x_unit="")


def _plots(table: pa.Table, axes: Sequence[Axis], x_key: str) -> list[str]:
    cols = table.column_names
    rows = table.to_pylist()
    others = [a.key for a in axes if a.key != x_key]
    xs = sorted({r[x_key] for r in rows})
    groups: dict[str, dict[Any, dict]] = {}
    for r in rows:
        label = ", ".join(f"{k}={r[k]}" for k in others) or "all"
        groups.setdefault(label, {})[r[x_key]] = r
    wanted = [
        ("gate_wait_p95_s", "p95 gate wait (s)", ""),
        ("http_req_duration_p95_ms", "p95 request duration", "ms"),
    ]
    wanted += [(c, c, "") for c in cols if f"{c} held" in cols]
    out = []
    for col, title, unit in wanted:
        if col not in cols:
            continue
        series = {
            label: [
                float("nan") if (g.get(x) or {}).get(col) is None else float(g[x][col]) for x in xs
            ]
            for label, g in groups.items()
        }
        out.append(
            plot_lines(f"{title} against {x_key}", [float(x) for x in xs], series, x_key, unit)
        )
    return out


def render_html(
    table: pa.Table,
    axes: Sequence[Axis],
    *,
    title: str = "gaterush sweep",
    x_key: str | None = None,
    plots: bool = True,
) -> str:
    """A self-contained page: plots of each metric against one parameter (a line per other combination) and the table."""
    numeric = [a.key for a in axes if all(isinstance(v, int | float) for v in a.values)]
    x = x_key or (numeric[0] if numeric else None)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    rows = table.to_pylist()
    if "ok" in table.column_names:
        bad = sum(not r["ok"] for r in rows)
        parts.append(
            f'<p class="{"fail" if bad else "ok"}">{len(rows) - bad} of {len(rows)} points hold every threshold</p>'
        )
    if plots and x is not None:
        parts.append("<h2>Plots</h2>")
        parts.extend(_plots(table, axes, x))
    parts.append("<h2>Points</h2><table><tr>")
    cols = [c for c in table.column_names if not c.endswith(" held")]
    parts.extend(f"<th>{html.escape(c)}</th>" for c in cols)
    parts.append("</tr>")
    for r in rows:
        cells = []
        for c in cols:
            v = r[c]
            held = r.get(f"{c} held")
            cls = "" if held is None else (' class="ok"' if held else ' class="fail"')
            if c == "ok":
                cls = ' class="ok"' if v else ' class="fail"'
            text = f"{v:.4g}" if isinstance(v, float) else str(v)
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)
