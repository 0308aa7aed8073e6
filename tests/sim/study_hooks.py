"""The study commands as gaterush.py wires them (its judge and plot hooks), for the study tests."""

from __future__ import annotations

import click

from gaterush import judge_predicted as judge
from gaterush import main
from gaterush import sweep_plot as plot

__all__ = ["cli", "judge", "plot"]


def cli() -> click.Group:
    """The gaterush group, with the study commands wired by gaterush.py."""
    return main
