"""gaterush: the click command group; each package contributes its commands."""

from __future__ import annotations

import click

import replay.cli
import sim.cli
import staging.cli
import traces.cli


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="gaterush")
def main() -> None:
    """Simulate event-day traffic, replay it at a target, and judge it against thresholds.

    \b
    Example:
      gaterush simulate event-day -o day.parquet
      gaterush replay day.parquet --target local
    """


traces.cli.register(main)
sim.cli.register(main)
staging.cli.register(main)
replay.cli.register(main)


if __name__ == "__main__":
    main()
