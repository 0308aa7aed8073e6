"""Starting and stopping the stand-in: `await start_standin(...)` on a running loop, or
`with standin_in_thread(...)` from synchronous code (CLI demo, tests of other packages)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from staging.app import StandInApp
from staging.db import Database
from staging.endstate import end_state
from staging.keys import Keys
from staging.knobs import Knobs
from staging.postgrest import Catalog
from staging.schema import REST_TABLES, create_schema, load_or_store_keys, seed_inventory
from traces.header import Inventory

WEBHOOK_SECRET_ENV = "STRIPE_WEBHOOK_SECRET"


@dataclass
class StandIn:
    """A running stand-in: its URL and keys, its end state, and `await stop()`."""

    url: str
    keys: Keys
    db_path: str
    app: StandInApp
    _runner: web.AppRunner = field(repr=False)
    _tmpdir: str | None = field(default=None, repr=False)
    secret_adopted: bool = False  # the webhook secret is the user's $STRIPE_WEBHOOK_SECRET
    _stopped: bool = field(default=False, repr=False)

    @property
    def anon_key(self) -> str:
        """The legacy JWT anon key (Bearer + apikey)."""
        return self.keys.anon_key

    @property
    def publishable_key(self) -> str:
        """The sb_publishable_ key (apikey header alone)."""
        return self.keys.publishable_key

    @property
    def service_key(self) -> str:
        """The legacy JWT service_role key (admin endpoints, cleanup)."""
        return self.keys.service_key

    @property
    def webhook_secret(self) -> str:
        """The whsec_ secret the stripe-webhook function verifies against."""
        return self.keys.webhook_secret

    @property
    def stripe_key(self) -> str:
        """The sk_test_ key the Stripe subset accepts."""
        return self.keys.stripe_key

    @property
    def stripe_base(self) -> str:
        """Base address for the official stripe client (StripeClient(base_addresses={"api": ...}))."""
        return self.url

    @property
    def knobs(self) -> Knobs:
        """The knobs in force."""
        return self.app.knobs

    def set_knobs(self, knobs: Knobs) -> None:
        """Replace the knobs at run time (call on the stand-in's loop)."""
        self.app.knobs = knobs

    def env(self) -> dict[str, str]:
        """The environment a replay needs to target this stand-in."""
        return {
            "SUPABASE_URL": self.url,
            "SUPABASE_ANON_KEY": self.anon_key,
            "SUPABASE_SERVICE_ROLE_KEY": self.service_key,
            "STRIPE_TEST_SK": self.stripe_key,
            "STRIPE_API_BASE": self.url,
            WEBHOOK_SECRET_ENV: self.webhook_secret,
        }

    async def end_state(self, run_id: str | None = None) -> dict[str, Any]:
        """The end state with traces.projection's keys (see staging.endstate.end_state)."""
        return await self.app.db.read(end_state, run_id)

    run_stats = end_state

    def stats(self) -> dict[str, Any]:
        """The server's own counters."""
        return self.app.stats()

    async def webhooks_idle(self, timeout: float | None = None) -> bool:
        """Wait until the Stripe subset has no webhook delivery pending; False on timeout."""
        if self.app.deliverer is None:
            return True
        return await self.app.deliverer.idle(timeout)

    async def stop(self) -> None:
        """Stop serving, finish queued writes, checkpoint and close the database."""
        if self._stopped:
            return
        self._stopped = True
        await self._runner.cleanup()
        if self.app.deliverer is not None:
            await self.app.deliverer.close()
        await asyncio.get_running_loop().run_in_executor(None, self.app.db.close)
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)


async def start_standin(
    host: str = "127.0.0.1",
    port: int = 0,
    db: str = ":memory:",
    inventory: Inventory | None = None,
    knobs: Knobs | None = None,
    webhook_secret: str | None = None,
    deliver_webhooks: bool = True,
    keys: Keys | None = None,
    idle_timeout: float = 60.0,
) -> StandIn:
    """Start a stand-in on the running loop; `port=0` picks a free port (see `.url`).

    `db=":memory:"` keeps the data in a temporary file removed at stop (WAL needs a file).
    A database file keeps its keys, so a restart on it serves the same keys. `webhook_secret`
    defaults to $STRIPE_WEBHOOK_SECRET, then to the stored or a generated one. A connection that
    sends no complete request (or a websocket that sends nothing) for `idle_timeout` seconds is
    closed, and a body not received within it is answered 408.
    """
    tmpdir = None
    if db == ":memory:":
        tmpdir = tempfile.mkdtemp(prefix="gaterush-standin-")
        path = os.path.join(tmpdir, "standin.sqlite")
    else:
        path = db
    adopted = not webhook_secret and bool(os.environ.get(WEBHOOK_SECRET_ENV))
    secret = webhook_secret or os.environ.get(WEBHOOK_SECRET_ENV) or None
    database = Database(path)
    try:
        conn = database.writer_connection
        create_schema(conn)
        the_keys = load_or_store_keys(conn, keys, secret)
        if inventory is not None:
            seed_inventory(conn, inventory)
        catalog = Catalog.read(conn, REST_TABLES)
    except BaseException:
        database.close()
        raise
    loop = asyncio.get_running_loop()
    database.start(loop)
    app = StandInApp(
        database,
        the_keys,
        knobs or Knobs(),
        catalog,
        deliver_webhooks=deliver_webhooks,
        idle_timeout=idle_timeout,
    )
    runner = web.AppRunner(
        app.build(),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=5.0,
        keepalive_timeout=idle_timeout,
    )
    await runner.setup()
    site = web.TCPSite(
        runner, host, port, backlog=4096
    )  # replay may open thousands of connections at once
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        database.close()
        raise
    sock = site._server.sockets[0]  # type: ignore[union-attr]
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    url = f"http://{shown}:{bound_port}"
    app.attach_deliverer(f"{url}/functions/v1/stripe-webhook")
    return StandIn(
        url=url,
        keys=the_keys,
        db_path=path,
        app=app,
        _runner=runner,
        _tmpdir=tmpdir,
        secret_adopted=adopted,
    )


class ThreadedStandIn:
    """A stand-in running on its own event loop in a thread; synchronous methods for callers."""

    def __init__(self, standin: StandIn, loop: asyncio.AbstractEventLoop) -> None:
        self.standin = standin
        self.loop = loop

    def __getattr__(self, name: str) -> Any:
        return getattr(self.standin, name)

    def _call(self, coro: Any, timeout: float | None = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def end_state(self, run_id: str | None = None) -> dict[str, Any]:
        """The end state (blocking)."""
        return self._call(self.standin.end_state(run_id))

    run_stats = end_state

    def webhooks_idle(self, timeout: float | None = 30.0) -> bool:
        """Wait until no webhook delivery is pending (blocking)."""
        return self._call(
            self.standin.webhooks_idle(timeout), None if timeout is None else timeout + 5
        )

    def set_knobs(self, knobs: Knobs) -> None:
        """Replace the knobs at run time."""
        self.loop.call_soon_threadsafe(self.standin.set_knobs, knobs)


@contextlib.contextmanager
def standin_in_thread(**kwargs: Any) -> Iterator[ThreadedStandIn]:
    """Run a stand-in (start_standin's arguments) on a private loop in a thread for the `with` block."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    thread = threading.Thread(
        target=lambda: (asyncio.set_event_loop(loop), ready.set(), loop.run_forever()),
        name="gaterush-standin",
        daemon=True,
    )
    thread.start()
    ready.wait()
    try:
        standin = asyncio.run_coroutine_threadsafe(start_standin(**kwargs), loop).result(60)
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        raise
    try:
        yield ThreadedStandIn(standin, loop)
    finally:
        asyncio.run_coroutine_threadsafe(standin.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
