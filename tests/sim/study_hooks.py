"""The gaterush group as users run it, for the study command tests."""

from __future__ import annotations

import click

from gaterush import main

__all__ = ["cli"]


def cli() -> click.Group:
    """The gaterush group, with the study commands registered."""
    return main
