"""The hooks gaterush.py passes to sim.cli_study.register, built here from replay/ for the study tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import click
import numpy as np
import pyarrow as pa

from replay import metrics, report, thresholds
from replay.resultlog import read_results
from sim import cli_study
from sim.predict import Check, Judgement


def judge(table: pa.Table, mapping: Mapping[str, Sequence[str]]) -> Judgement:
    """Predicted rows judged by replay's metrics and thresholds (what gaterush.py wires)."""
    verdicts = thresholds.evaluate(metrics.from_table(table), thresholds.parse_mapping(mapping))
    return Judgement(
        thresholds.passed(verdicts),
        tuple(Check(v.threshold.name, v.ok, v.observed) for v in verdicts),
    )


def plot(
    title: str, x: Sequence[float], series: Mapping[str, Sequence[float]], x_label: str, unit: str
) -> str:
    """replay.report's SVG line chart, one line per series."""
    lines = [
        report.Line(label, np.asarray(y, float), report.PALETTE[i % len(report.PALETTE)])
        for i, (label, y) in enumerate(series.items())
    ]
    return report.line_chart(title, np.asarray(x, float), lines, unit)


def cli() -> click.Group:
    """A gaterush-like group with the study commands wired as gaterush.py wires them."""

    @click.group()
    def group() -> None:
        """gaterush (study commands only)."""

    cli_study.register(group, judge=judge, read_results=read_results, plot=plot)
    return group
