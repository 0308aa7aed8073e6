"""Commands that staging/ contributes to the gaterush CLI."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Add this package's commands to the gaterush group."""
