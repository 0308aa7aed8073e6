"""Exit codes every gaterush command shares (k6's where k6 has one).

It lives in traces/ because every package may import traces/ and none may import the CLI.
"""

from __future__ import annotations

import click

OK = 0
USAGE = 2  # click's own usage errors
THRESHOLDS_FAILED = 99  # as k6
INVALID_INPUT = 104  # as k6: invalid config or input


class InvalidInput(click.ClickException):
    """Bad config or input: print the message (naming what is wrong) and exit 104."""

    exit_code = INVALID_INPUT

    def show(self, file=None) -> None:  # noqa: D102 - click's signature
        click.echo(f"error: {self.format_message()}", err=True, file=file)
