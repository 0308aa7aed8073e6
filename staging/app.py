"""The stand-in's aiohttp application: routes, auth, errors as JSON, knobs; the logic lives in
staging.scans, staging.webhooks, staging.postgrest, staging.realtime and staging.stripe_api."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sqlite3
import time
from collections import OrderedDict
from typing import Any

from aiohttp import WSMsgType, web

from staging.db import Database
from staging.delivery import Deliverer
from staging.endstate import delete_run_job, end_state
from staging.errors import ApiError, FunctionError, PostgrestError, StripeApiError
from staging.keys import AuthError, Gatekeeper, Keys
from staging.knobs import INERT, KnobError, Knobs, merge_knobs
from staging.postgrest import content_range, count_sql, parse_query, to_sql
from staging.realtime import Connection, Hub
from staging.scans import parse_scan_args, scan_job
from staging.stripe_api import (
    CONFIRM_PARAMS,
    confirm_job,
    create_job,
    decode_form,
    public,
    refund_job,
    retrieve,
    validate_create,
)
from staging.throttle import Throttle
from staging.webhooks import answer, event_run_id, verify_event, webhook_job
from traces.event import TARGET_REVENUE, TARGET_SCAN, TARGET_WEBHOOK

log = logging.getLogger("gaterush.staging")

MAX_BODY = 1024 * 1024  # bytes; larger bodies get 413
RUN_HEADER = "X-Gaterush-Run"
BOOL_COLUMNS = frozenset({"inside", "allow_reentry", "reentry"})
JSON_TYPE = "application/json"
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response (compact, UTF-8)."""
    return web.Response(
        body=_dumps(obj).encode(), status=status, content_type=JSON_TYPE, headers=headers
    )


def _error_body(path: str, status: int, message: str) -> dict[str, Any]:
    if path.startswith("/v1/"):
        return {"error": {"type": "invalid_request_error", "message": message}}
    if path.startswith("/functions/"):
        return {"error": message}
    return {"code": f"HTTP{status}", "message": message, "details": None, "hint": None}


@web.middleware
async def errors_as_json(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error leaves as JSON in the shape of the service it imitates; never a traceback."""
    try:
        return await handler(request)
    except (ApiError, AuthError) as exc:
        return json_response(exc.body, exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 413:
            msg = f"request body too large: the limit is {MAX_BODY} bytes"
        elif exc.status == 404:
            msg = f"no route for {request.method} {request.path}"
            if request.path.startswith("/v1/"):
                msg = f"Unrecognized request URL ({request.method}: {request.path})."
        elif exc.status == 405:
            msg = f"method {request.method} not allowed on {request.path}"
        else:
            msg = exc.reason
        return json_response(_error_body(request.path, exc.status, msg), exc.status)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_response(
            _error_body(request.path, 500, "internal error in the stand-in (see its log)"), 500
        )


def _run_id(request: web.Request) -> str | None:
    run = request.headers.get(RUN_HEADER)
    if run is None:
        return None
    if not run or len(run) > 200 or not run.isprintable():
        raise PostgrestError(400, "GR400", f"{RUN_HEADER} must be 1..200 printable characters")
    return run


class StandInApp:
    """The stand-in's state (database, keys, knobs, realtime hub, webhook deliverer) and its handlers."""

    def __init__(
        self,
        db: Database,
        keys: Keys,
        knobs: Knobs,
        columns: dict[str, tuple[str, ...]],
        *,
        deliver_webhooks: bool = True,
    ) -> None:
        self.db = db
        self.keys = keys
        self.knobs = knobs
        self.columns = columns
        self.gate = Gatekeeper(keys)
        self.rng = random.Random(knobs.seed)
        self.hub = Hub()
        self.throttle = Throttle(lambda: self.knobs, self.rng)
        self.deliver_webhooks = deliver_webhooks
        self.deliverer: Deliverer | None = None
        self.websockets: set[web.WebSocketResponse] = set()
        self._idempotent: OrderedDict[tuple[str, str], tuple[int, Any]] = OrderedDict()
        self.requests = 0
        self.started = time.time()
        db.on_commit = self.hub.publish

    def attach_deliverer(self, url: str) -> None:
        """Start delivering the Stripe subset's webhooks to `url` (the stand-in's own edge function)."""
        if self.deliver_webhooks:
            self.deliverer = Deliverer(
                url, self.keys.webhook_secret, lambda: self.knobs.delivery, self.rng
            )

    def build(self) -> web.Application:
        """The aiohttp application with every route."""
        app = web.Application(middlewares=[errors_as_json], client_max_size=MAX_BODY)
        r = app.router
        r.add_post("/rest/v1/rpc/{fn}", self.rpc)
        r.add_get("/rest/v1/rpc/{fn}", self.rpc_get)
        r.add_get("/rest/v1/{table}", self.rest_get)
        r.add_post("/functions/v1/{name}", self.function)
        r.add_get("/realtime/v1/websocket", self.realtime)
        r.add_post("/v1/payment_intents", self.pi_create)
        r.add_get("/v1/payment_intents/{id}", self.pi_retrieve)
        r.add_post("/v1/payment_intents/{id}/confirm", self.pi_confirm)
        r.add_post("/v1/refunds", self.refund_create)
        r.add_get("/admin/v1/health", self.health)
        r.add_get("/admin/v1/state", self.admin_state)
        r.add_get("/admin/v1/stats", self.admin_stats)
        r.add_get("/admin/v1/knobs", self.admin_knobs_get)
        r.add_post("/admin/v1/knobs", self.admin_knobs_set)
        r.add_delete("/admin/v1/runs/{run}", self.admin_delete_run)
        app.on_shutdown.append(self._close_websockets)
        return app

    # --- helpers -------------------------------------------------------------------------------

    def _auth(self, request: web.Request) -> str:
        h = request.headers
        return self.gate.check(
            h.get("apikey") or request.query.get("apikey"), h.get("Authorization")
        )

    def _admin(self, request: web.Request) -> None:
        h = request.headers
        self.gate.check_admin(
            h.get("apikey") or request.query.get("apikey"), h.get("Authorization")
        )

    @staticmethod
    async def _json(request: web.Request) -> Any:
        raw = await request.read()
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PostgrestError(400, "PGRST102", "Empty or invalid json", str(exc)) from None

    # --- Supabase: RPCs, tables, edge function, realtime ------------------------------------

    async def rpc(self, request: web.Request) -> web.Response:
        """POST /rest/v1/rpc/{fn}: scan_ticket_atomic, event_revenue."""
        self.requests += 1
        self._auth(request)
        fn = request.match_info["fn"]
        if fn == "scan_ticket_atomic":
            args = parse_scan_args(await self._json(request))
            run = _run_id(request)
            if self.knobs.for_endpoint(TARGET_SCAN) is INERT:
                result = await self.db.write(scan_job, args, run, self.hub.tables)
            else:
                result = await self.throttle.run(
                    TARGET_SCAN, lambda: self.db.write(scan_job, args, run, self.hub.tables)
                )
            return json_response(result)
        if fn == "event_revenue":
            return await self._revenue(await self._json(request))
        raise _unknown_rpc(fn)

    async def rpc_get(self, request: web.Request) -> web.Response:
        """GET /rest/v1/rpc/{fn}: the STABLE functions (event_revenue) with query arguments."""
        self.requests += 1
        self._auth(request)
        fn = request.match_info["fn"]
        if fn == "event_revenue":
            return await self._revenue(dict(request.query))
        if fn == "scan_ticket_atomic":
            raise PostgrestError(
                405,
                "PGRST101",
                "Cannot use the GET method on RPC to call a volatile function",
                None,
                "use POST for scan_ticket_atomic",
            )
        raise _unknown_rpc(fn)

    async def _revenue(self, body: Any) -> web.Response:
        if not isinstance(body, dict) or set(body) != {"p_event_id"}:
            given = ", ".join(sorted(body)) if isinstance(body, dict) else ""
            raise PostgrestError(
                404,
                "PGRST202",
                f"Could not find the function public.event_revenue({given}) in the schema cache",
                "expected exactly one argument: p_event_id integer",
                None,
            )
        eid = body["p_event_id"]
        if isinstance(eid, bool) or not (
            isinstance(eid, int) or (isinstance(eid, str) and eid.lstrip("-").isdigit())
        ):
            raise PostgrestError(
                400,
                "22P02",
                f"invalid input syntax for type integer: {eid!r}",
                "argument p_event_id must be an integer",
            )

        def q(conn: sqlite3.Connection) -> Any:
            row = conn.execute(
                "SELECT * FROM event_revenue WHERE event_id = ?", (int(eid),)
            ).fetchone()
            return dict(row) if row else None

        return json_response(await self.throttle.run(TARGET_REVENUE, lambda: self.db.read(q)))

    async def rest_get(self, request: web.Request) -> web.Response:
        """GET /rest/v1/{table} with PostgREST's select, filters, order, limit/offset, count=exact."""
        self.requests += 1
        self._auth(request)
        table = request.match_info["table"]
        cols = self.columns.get(table)
        if cols is None:
            raise PostgrestError(
                404,
                "PGRST205",
                f"Could not find the table 'public.{table}' in the schema cache",
                None,
                f"tables: {', '.join(self.columns)}",
            )
        q = parse_query(table, request.query.items(), cols)
        want_count = "count=exact" in request.headers.get("Prefer", "")

        def select(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], int | None]:
            sql, args = to_sql(q)
            conn.execute("BEGIN")
            try:
                rows = [dict(r) for r in conn.execute(sql, args)]
                total = conn.execute(*count_sql(q)).fetchone()[0] if want_count else None
            finally:
                conn.execute("COMMIT")
            bools = BOOL_COLUMNS.intersection(q.columns)
            if bools:
                for r in rows:
                    for b in bools:
                        if r[b] is not None:
                            r[b] = bool(r[b])
            return rows, total

        rows, total = await self.throttle.run(f"rest:{table}", lambda: self.db.read(select))
        return json_response(
            rows, headers={"Content-Range": content_range(q.offset, len(rows), total)}
        )

    async def function(self, request: web.Request) -> web.Response:
        """POST /functions/v1/{name}: the stripe-webhook edge function (verify_jwt off: Stripe signs instead)."""
        self.requests += 1
        name = request.match_info["name"]
        if name != "stripe-webhook":
            return json_response(
                {"code": "NOT_FOUND", "message": "Requested function was not found"}, 404
            )
        return await self.throttle.run(TARGET_WEBHOOK, lambda: self._webhook(request))

    async def _webhook(self, request: web.Request) -> web.Response:
        body = await request.read()
        event = verify_event(
            body, request.headers.get("Stripe-Signature"), self.keys.webhook_secret
        )
        run = _run_id(request) or event_run_id(event)
        outcome = await self.db.write(webhook_job, event, run, self.hub.tables)
        return web.Response(body=answer(outcome), content_type=JSON_TYPE)

    async def realtime(self, request: web.Request) -> web.StreamResponse:
        """GET /realtime/v1/websocket?apikey=...&vsn=1.0.0: Phoenix channels with postgres_changes."""
        self.gate.check(request.query.get("apikey") or request.headers.get("apikey"), None)
        vsn = request.query.get("vsn", "1.0.0")
        if vsn not in ("1.0.0", "2.0.0"):
            raise PostgrestError(
                400,
                "GR400",
                f"vsn={vsn} is not supported",
                None,
                "the stand-in speaks vsn=1.0.0 (JSON objects) and 2.0.0 (JSON arrays)",
            )
        ws = web.WebSocketResponse(max_msg_size=MAX_BODY, autoping=True)
        await ws.prepare(request)
        self.websockets.add(ws)
        self.hub.connections += 1
        conn = Connection(self.hub, self._token_ok, vsn)

        async def sender() -> None:
            while True:
                text = await conn.out.get()
                if text is None:
                    await ws.close(code=1008, message=b"too slow: message queue full")
                    return
                await ws.send_str(text)

        task = asyncio.get_running_loop().create_task(sender())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    for reply in conn.handle(msg.data):
                        conn.send(reply)
                elif msg.type == WSMsgType.BINARY:
                    conn.send(
                        json.dumps(
                            {
                                "topic": "phoenix",
                                "event": "phx_reply",
                                "ref": None,
                                "join_ref": None,
                                "payload": {
                                    "status": "error",
                                    "response": {
                                        "reason": "binary frames are not supported: send vsn 1.0.0 JSON text"
                                    },
                                },
                            }
                        )
                    )
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            conn.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            self.websockets.discard(ws)
            self.hub.connections -= 1
        return ws

    def _token_ok(self, token: str) -> bool:
        return (
            token in (self.keys.publishable_key, self.keys.secret_key)
            or self.gate.jwt_role(token) is not None
        )

    async def _close_websockets(self, app: web.Application) -> None:
        for ws in list(self.websockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"server shutdown")

    # --- Stripe subset -------------------------------------------------------------------------

    async def _form(self, request: web.Request) -> dict[str, Any]:
        post = await request.post()
        return decode_form((k, v) for k, v in post.items() if isinstance(v, str))

    def _idem_get(self, request: web.Request) -> tuple[tuple[str, str] | None, web.Response | None]:
        key = request.headers.get("Idempotency-Key")
        if not key:
            return None, None
        k = (request.path, key)
        hit = self._idempotent.get(k)
        if hit is None:
            return k, None
        return k, json_response(hit[1], hit[0], headers={"Idempotent-Replayed": "true"})

    def _idem_put(self, k: tuple[str, str] | None, status: int, body: Any) -> None:
        if k is None:
            return
        self._idempotent[k] = (status, body)
        while len(self._idempotent) > 10_000:
            self._idempotent.popitem(last=False)

    def _deliver(self, events: list[dict[str, Any]], run: str | None) -> None:
        if self.deliverer is not None and events:
            self.deliverer.enqueue(events, run)

    async def pi_create(self, request: web.Request) -> web.Response:
        """POST /v1/payment_intents (form-encoded)."""
        self.requests += 1
        self.gate.stripe_check(request.headers.get("Authorization"))
        k, replay = self._idem_get(request)
        if replay is not None:
            return replay
        req = validate_create(await self._form(request))
        run = _run_id(request)
        pi, events, err = await self.throttle.run(
            "stripe:payment_intents.create", lambda: self.db.write(create_job, req, run)
        )
        self._deliver(events, run)
        status, body = (402, err) if err else (200, public(pi))
        self._idem_put(k, status, body)
        return json_response(body, status)

    async def pi_confirm(self, request: web.Request) -> web.Response:
        """POST /v1/payment_intents/{id}/confirm."""
        self.requests += 1
        self.gate.stripe_check(request.headers.get("Authorization"))
        k, replay = self._idem_get(request)
        if replay is not None:
            return replay
        params = await self._form(request)
        unknown = sorted(set(params) - CONFIRM_PARAMS)
        if unknown:
            raise StripeApiError(
                400,
                f"Received unknown parameter: {unknown[0]}",
                param=unknown[0],
                code="parameter_unknown",
            )
        pm = params.get("payment_method")
        run = _run_id(request)
        pi_id = request.match_info["id"]
        pi, events, err = await self.throttle.run(
            "stripe:payment_intents.confirm", lambda: self.db.write(confirm_job, pi_id, pm, run)
        )
        self._deliver(events, run or pi.get("metadata", {}).get("gaterush_run"))
        status, body = (402, err) if err else (200, public(pi))
        self._idem_put(k, status, body)
        return json_response(body, status)

    async def pi_retrieve(self, request: web.Request) -> web.Response:
        """GET /v1/payment_intents/{id}."""
        self.requests += 1
        self.gate.stripe_check(request.headers.get("Authorization"))
        pi_id = request.match_info["id"]
        pi = await self.throttle.run(
            "stripe:payment_intents.retrieve", lambda: self.db.read(retrieve, pi_id)
        )
        return json_response(public(pi))

    async def refund_create(self, request: web.Request) -> web.Response:
        """POST /v1/refunds (payment_intent=...): a full refund, then charge.refunded."""
        self.requests += 1
        self.gate.stripe_check(request.headers.get("Authorization"))
        k, replay = self._idem_get(request)
        if replay is not None:
            return replay
        params = await self._form(request)
        run = _run_id(request)
        refund, events = await self.throttle.run(
            "stripe:refunds.create", lambda: self.db.write(refund_job, params, run)
        )
        self._deliver(events, run)
        self._idem_put(k, 200, refund)
        return json_response(refund)

    # --- admin ---------------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        """GET /admin/v1/health: liveness, no key needed."""
        return json_response({"ok": True})

    async def admin_state(self, request: web.Request) -> web.Response:
        """GET /admin/v1/state[?run=ID]: the end state, with traces.projection's keys."""
        self._admin(request)
        run = request.query.get("run")
        return json_response(await self.db.read(end_state, run))

    async def admin_stats(self, request: web.Request) -> web.Response:
        """GET /admin/v1/stats: the server's own counters (requests, batches, deliveries, realtime)."""
        self._admin(request)
        return json_response(self.stats())

    def stats(self) -> dict[str, Any]:
        """The server's own counters."""
        return {
            "requests": self.requests,
            "uptime_s": round(time.time() - self.started, 3),
            "db_jobs": self.db.jobs,
            "db_batches": self.db.batches,
            "realtime_connections": self.hub.connections,
            "realtime_messages": self.hub.messages_sent,
            "injected_errors": self.throttle.injected_errors,
            "stalls": self.throttle.stalls,
            "webhook_delivery": (
                {**self.deliverer.stats, "pending": self.deliverer.pending}
                if self.deliverer
                else None
            ),
        }

    async def admin_knobs_get(self, request: web.Request) -> web.Response:
        """GET /admin/v1/knobs: the knobs in force."""
        self._admin(request)
        return json_response(self.knobs.to_dict())

    async def admin_knobs_set(self, request: web.Request) -> web.Response:
        """POST /admin/v1/knobs[?replace=1]: merge (or replace) knobs from a JSON body at run time."""
        self._admin(request)
        body = await self._json(request)
        base = Knobs() if request.query.get("replace") in ("1", "true") else self.knobs
        try:
            self.knobs = merge_knobs(base, body)
        except KnobError as exc:
            raise ApiError(
                400,
                {
                    "code": "GR400",
                    "message": f"invalid knobs: {exc}",
                    "details": None,
                    "hint": None,
                },
            ) from None
        return json_response(self.knobs.to_dict())

    async def admin_delete_run(self, request: web.Request) -> web.Response:
        """DELETE /admin/v1/runs/{run}: remove every row the run created; counts per table."""
        self._admin(request)
        run = request.match_info["run"]
        return json_response({"run": run, "deleted": await self.db.write(delete_run_job, run)})


def _unknown_rpc(fn: str) -> PostgrestError:
    return PostgrestError(
        404,
        "PGRST202",
        f"Could not find the function public.{fn} in the schema cache",
        None,
        "functions: scan_ticket_atomic, event_revenue",
    )


__all__ = ["StandInApp", "json_response", "FunctionError"]
