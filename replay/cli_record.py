"""`gaterush record`: the recording proxy's command (replay/record.py)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

from replay.builders import public_url
from replay.record import Recorder
from traces.event import TraceError
from traces.exitcodes import InvalidInput


def _listen(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"expected HOST:PORT like 127.0.0.1:8080, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


@click.command("record")
@click.option(
    "--listen",
    default="127.0.0.1:8787",
    show_default=True,
    callback=_listen,
    help="Address to listen on (HOST:PORT; port 0 picks one).",
)
@click.option(
    "--upstream",
    required=True,
    help="Where requests go: the Supabase project URL or the stand-in (http(s)://...).",
)
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The .grt trace to write.",
)
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds to wait for the upstream per request.",
)
@click.option(
    "--append",
    is_flag=True,
    help="Resume an existing .grt (a recording that was cut) instead of refusing it.",
)
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def record_cmd(
    listen: tuple[str, int],
    upstream: str,
    out: Path,
    timeout: float,
    append: bool,
    force: bool,
) -> None:
    """Record traffic: a reverse proxy that forwards to --upstream and appends each request to a trace.

    Point clients (or `gaterush replay --target`) at the printed URL; stop with Ctrl-C. Keys and
    signatures in headers are never written; a kill loses at most the requests in flight. An
    existing output is refused unless --append (resume it) or --force (replace it).

    \b
    Example:
      gaterush record --listen 127.0.0.1:8787 --upstream http://127.0.0.1:54321 -o day.grt
    """
    try:
        rec = Recorder(upstream, out, timeout=timeout, append=append, force=force)
    except (ValueError, TraceError) as e:
        raise InvalidInput(str(e)) from None
    try:
        asyncio.run(_serve(rec, *listen))
    except (OSError, TraceError) as e:
        raise InvalidInput(f"record: {e}") from None
    s = rec.stats
    click.echo(
        f"wrote {out}: {s.written} events; {s.not_targets} requests were not targets; {s.upstream_errors} upstream errors",
        err=True,
    )


async def _serve(rec: Recorder, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    url = await rec.start(host, port)
    click.echo(
        f"recording {url} -> {public_url(rec.upstream)} into {rec.out} (Ctrl-C to stop)", err=True
    )
    try:
        await stop.wait()
    finally:
        await rec.stop()
