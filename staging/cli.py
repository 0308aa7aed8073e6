"""Commands that staging/ contributes to the gaterush CLI: `staging serve` and `staging state`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from staging.knobs import KnobError, Knobs, merge_knobs
from traces.event import TraceError
from traces.exitcodes import InvalidInput
from traces.header import Inventory

DEFAULT_PORT = 54321
DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
TRACE_SUFFIXES = (".parquet", ".grt")

InventoryFor = Callable[[str], Inventory]


def resolve_inventory(spec: str, inventory_for: InventoryFor | None) -> Inventory:
    """The Inventory named by --seed-data: a trace file's header inventory, or a scenario's (via the hook)."""
    path = Path(spec)
    if path.suffix.lower() in TRACE_SUFFIXES:
        from traces.io import open_reader

        try:
            with open_reader(path) as reader:
                return reader.header.inventory
        except TraceError as exc:
            raise InvalidInput(f"--seed-data {spec}: {exc}") from None
        except OSError as exc:
            raise InvalidInput(f"--seed-data {spec}: cannot read: {exc.strerror or exc}") from None
    if inventory_for is None:
        raise InvalidInput(
            f"--seed-data {spec}: not a trace file (.parquet or .grt), and scenario names are not "
            "available in this build (the simulator's inventory hook is not wired)"
        )
    try:
        return inventory_for(spec)
    except click.ClickException as exc:
        raise InvalidInput(f"--seed-data {spec}: {exc.format_message()}") from None
    except (ValueError, KeyError, OSError, TraceError) as exc:
        raise InvalidInput(f"--seed-data {spec}: {exc}") from None


def _pairs(values: tuple[str, ...], flag: str) -> list[tuple[str, str]]:
    out = []
    for v in values:
        name, sep, value = v.partition("=")
        if not sep or not name or not value:
            raise InvalidInput(
                f"{flag} {v!r}: expected ENDPOINT=VALUE, e.g. {flag} rpc:scan_ticket_atomic=20ms"
            )
        out.append((name.strip(), value.strip()))
    return out


def _number(v: str, flag: str) -> float | int:
    try:
        return int(v) if v.isdigit() else float(v)
    except ValueError:
        raise InvalidInput(f"{flag}: expected a number, got {v!r}") from None


def build_knobs(
    knobs_file: str | None,
    latency: tuple[str, ...],
    workers: tuple[str, ...],
    error_rate: tuple[str, ...],
    stall: tuple[str, ...],
    delivery: tuple[str, ...],
) -> Knobs:
    """Knobs from a TOML file, then the command-line flags on top; InvalidInput naming the bad one."""
    knobs = Knobs()
    try:
        if knobs_file:
            try:
                with open(knobs_file, "rb") as fh:
                    knobs = merge_knobs(knobs, tomllib.load(fh))
            except OSError as exc:
                raise InvalidInput(
                    f"--knobs {knobs_file}: cannot read: {exc.strerror or exc}"
                ) from None
            except tomllib.TOMLDecodeError as exc:
                raise InvalidInput(f"--knobs {knobs_file}: not valid TOML: {exc}") from None
            except UnicodeDecodeError:
                raise InvalidInput(
                    f"--knobs {knobs_file}: not valid TOML: not UTF-8 text"
                ) from None
        eps: dict[str, dict[str, Any]] = {}
        for name, v in _pairs(latency, "--latency"):
            eps.setdefault(name, {})["latency"] = v
        for name, v in _pairs(workers, "--workers"):
            eps.setdefault(name, {})["workers"] = _number(v, "--workers")
        for name, v in _pairs(error_rate, "--error-rate"):
            eps.setdefault(name, {})["error_rate"] = _number(v, "--error-rate")
        for name, v in _pairs(stall, "--stall"):
            rate, sep, dur = v.partition("@")
            if not sep:
                raise InvalidInput(f"--stall {name}={v}: expected RATE@DURATION, e.g. 0.01@2s")
            eps.setdefault(name, {}).update(stall_rate=_number(rate, "--stall"), stall=dur)
        deliv: dict[str, Any] = {}
        for name, v in _pairs(delivery, "--delivery"):
            deliv[name] = (
                _number(v, "--delivery") if name in ("duplicate_rate", "max_attempts") else v
            )
        patch: dict[str, Any] = {}
        if eps:
            patch["endpoints"] = eps
        if deliv:
            patch["delivery"] = deliv
        return merge_knobs(knobs, patch)
    except KnobError as exc:
        raise InvalidInput(str(exc)) from None


def _announce(standin: Any, seeded: Inventory | None, db: str) -> None:
    env = standin.env()
    lines = [f"gaterush stand-in serving at {standin.url}  (db: {db})"]
    if seeded is not None:
        tickets = sum(e.presold for e in seeded.events)
        lines.append(
            f"seeded {len(seeded.events)} event(s), {tickets} pre-sold ticket(s), "
            f"re-entry {'allowed' if seeded.allow_reentry else 'not allowed'}"
        )
    lines.append("export these to replay against it (local test keys of this stand-in only):")
    for k, v in env.items():
        if k == "STRIPE_WEBHOOK_SECRET" and standin.secret_adopted:
            lines.append(f"  # {k}: yours, taken from the environment (not shown)")
        else:
            lines.append(f"  export {k}={v}")
    lines.append(f"  publishable key (apikey header alone): {standin.publishable_key}")
    lines.append("Ctrl-C or SIGTERM stops it cleanly.")
    click.echo("\n".join(lines))
    sys.stdout.flush()


async def _serve(
    host: str, port: int, db: str, inventory: Inventory | None, knobs: Knobs, deliver_webhooks: bool
) -> None:
    from staging.server import start_standin

    try:
        standin = await start_standin(
            host=host,
            port=port,
            db=db,
            inventory=inventory,
            knobs=knobs,
            deliver_webhooks=deliver_webhooks,
        )
    except sqlite3.DatabaseError as exc:
        raise InvalidInput(f"--db {db}: not a SQLite database ({exc})") from None
    except OSError as exc:
        raise InvalidInput(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    _announce(standin, inventory, db)
    try:
        await stop.wait()
    finally:
        click.echo("stopping: finishing writes and closing the database ...")
        await standin.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    click.echo(f"stopped cleanly ({db})")


def _run(coro: Any) -> None:
    try:
        import uvloop  # optional: faster event loop when installed
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def _admin_request(url: str, method: str, path: str) -> Any:
    key = os.environ.get("SUPABASE_SERVICE_ROLE_KEY")
    if not key:
        raise InvalidInput(
            "set SUPABASE_SERVICE_ROLE_KEY (gaterush staging serve prints it) to use admin endpoints"
        )
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InvalidInput(f"--url {url!r}: expected http://host:port")
    req = urllib.request.Request(
        url.rstrip("/") + path,
        method=method,
        headers={"apikey": key, "Authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with contextlib.suppress(Exception):
            body = json.loads(exc.read())
            msg = body.get("message") or body.get("error") or body
            if exc.code == 404 and path.startswith("/admin/"):
                msg = f"{url} has no stand-in admin endpoint ({msg})"
            raise click.ClickException(f"{method} {path}: HTTP {exc.code}: {msg}") from None
        raise click.ClickException(f"{method} {path}: HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc.reason}") from None


@click.group("staging")
def staging() -> None:
    """The embedded stand-in target: Supabase-shaped endpoints and a Stripe subset on SQLite."""


# `--seed-data SCENARIO` resolves through sim/, which staging may not import: register() sets it
staging.inventory_for = None  # type: ignore[attr-defined]


@staging.command("serve")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to bind (keep it loopback)."
)
@click.option(
    "--port",
    default=DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port (0 picks a free one).",
)
@click.option(
    "--db",
    default=":memory:",
    show_default=True,
    help="SQLite file (kept across restarts) or :memory:.",
)
@click.option(
    "--seed-data",
    "seed_data",
    metavar="SCENARIO|TRACE",
    help="Seed events and pre-sold tickets: a scenario name or a trace file's header.",
)
@click.option(
    "--knobs",
    "knobs_file",
    metavar="FILE.toml",
    help="Knobs TOML (latency, workers, faults, delivery).",
)
@click.option(
    "--latency",
    multiple=True,
    metavar="EP=SPEC",
    help="Added latency, e.g. rpc:scan_ticket_atomic=exp:5ms (fixed, uniform, exp, normal, lognormal).",
)
@click.option(
    "--workers", multiple=True, metavar="EP=N", help="Capacity of an endpoint; excess waits."
)
@click.option("--error-rate", multiple=True, metavar="EP=P", help="Share of requests answered 500.")
@click.option(
    "--stall",
    multiple=True,
    metavar="EP=P@DUR",
    help="Share of requests stalled, e.g. fn:*=0.01@2s.",
)
@click.option(
    "--delivery",
    multiple=True,
    metavar="KEY=VALUE",
    help="Webhook delivery: delay=exp:50ms, duplicate_rate=0.02, max_attempts=5, retry_base=250ms.",
)
@click.option(
    "--no-deliver-webhooks",
    is_flag=True,
    help="The Stripe subset sends no webhooks (replay sends the trace's own).",
)
def serve(
    host: str,
    port: int,
    db: str,
    seed_data: str | None,
    knobs_file: str | None,
    latency: tuple[str, ...],
    workers: tuple[str, ...],
    error_rate: tuple[str, ...],
    stall: tuple[str, ...],
    delivery: tuple[str, ...],
    no_deliver_webhooks: bool,
) -> None:
    """Serve the stand-in until Ctrl-C or SIGTERM.

    \b
    Example:
      gaterush staging serve --db standin.sqlite --seed-data event-day --latency rpc:*=exp:5ms
    """
    knobs = build_knobs(knobs_file, latency, workers, error_rate, stall, delivery)
    inventory = resolve_inventory(seed_data, staging.inventory_for) if seed_data else None
    if db != ":memory:" and Path(db).is_dir():
        raise InvalidInput(f"--db {db}: is a directory; give a file path or :memory:")
    _run(_serve(host, port, db, inventory, knobs, not no_deliver_webhooks))


@staging.command("state")
@click.option(
    "--url",
    default=lambda: os.environ.get("SUPABASE_URL", DEFAULT_URL),
    show_default="$SUPABASE_URL or " + DEFAULT_URL,
    help="The stand-in's URL.",
)
@click.option("--run", "run_id", help="Only rows this run created.")
def state(url: str, run_id: str | None) -> None:
    """Print a stand-in's end state as JSON (the keys of a trace's expected projection).

    \b
    Example:
      SUPABASE_SERVICE_ROLE_KEY=... gaterush staging state --url http://127.0.0.1:54321
    """
    q = f"?run={urllib.parse.quote(run_id)}" if run_id else ""
    click.echo(
        json.dumps(_admin_request(url, "GET", "/admin/v1/state" + q), indent=2, sort_keys=True)
    )


def register(group: click.Group, inventory_for: InventoryFor | None = None) -> None:
    """Add `staging serve` and `staging state` to the gaterush group (`cleanup` is replay's).

    `inventory_for(name_or_path) -> Inventory` resolves `--seed-data SCENARIO` (sim/ provides it;
    staging may not import sim). Without it, --seed-data takes trace files only.
    """
    staging.inventory_for = inventory_for  # type: ignore[attr-defined]
    group.add_command(staging)
