"""gaterush: the click command group; each package contributes its commands.

This module is also where packages meet: replay/ and staging/ may not import each other or sim/,
so the hooks that join them (the local stand-in for `--target local`, scenario inventories for
`staging serve --seed-data`) are passed in here.
"""

from __future__ import annotations

import functools

import click

import replay.cli
import replay.cli_record
import replay.cli_report
import sim.cli
import sim.scenario
import staging.cli
import staging.server
import traces.cli
import traces.cli_recorded

# Trace webhooks are replayed by gaterush itself (signed at send time), so the stand-in's own
# Stripe delivery stays off during a replay: the trace, not the stand-in, decides Stripe's timing.
start_local_standin = functools.partial(staging.server.standin_in_thread, deliver_webhooks=False)


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
traces.cli_recorded.register(main)  # adds to the `trace` group: must come after it
sim.cli.register(main)
staging.cli.register(main, inventory_for=sim.scenario.inventory_for)
replay.cli.register(main, start_local=start_local_standin)
replay.cli_report.register(main)
replay.cli_record.register(main)


if __name__ == "__main__":
    main(prog_name="gaterush")
