"""The stand-in's aiohttp application: routes, auth, errors as JSON, knobs; the logic lives in
staging.scans, staging.webhooks, staging.postgrest, staging.realtime and staging.stripe_api."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
from staging.postgrest import (
    CSV,
    OBJECT,
    Catalog,
    Query,
    build_write,
    content_range,
    parse_accept,
    parse_prefer,
    parse_query,
    project,
    run_read,
    singular,
    to_csv,
    write_job,
)
from staging.realtime import Connection, Hub, Refused
from staging.runid import run_id
from staging.scans import parse_scan_args, scan_job
from staging.stripe_api import (
    cancel_job,
    confirm_job,
    create_job,
    customer_job,
    decode_form,
    list_payment_intents,
    refund_job,
    retrieve,
    retrieve_object,
    update_job,
    validate_confirm,
    validate_create,
)
from staging.throttle import Throttle
from staging.values import INT4, int_in_range, parse_json
from staging.webhooks import answer, verify_event, webhook_job
from traces.event import TARGET_REVENUE, TARGET_SCAN, TARGET_WEBHOOK

log = logging.getLogger("gaterush.staging")

MAX_BODY = 1024 * 1024  # bytes; larger bodies get 413
JSON_TYPE = "application/json"
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response (compact, UTF-8)."""
    return web.Response(
        body=_dumps(obj).encode("utf-8", "backslashreplace"),
        status=status,
        content_type=JSON_TYPE,
        headers=headers,
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
    return run_id(request.headers)


class StandInApp:
    """The stand-in's state (database, keys, knobs, realtime hub, webhook deliverer) and its handlers."""

    def __init__(
        self,
        db: Database,
        keys: Keys,
        knobs: Knobs,
        catalog: Catalog,
        *,
        deliver_webhooks: bool = True,
        idle_timeout: float = 60.0,
    ) -> None:
        self.db = db
        self.idle_timeout = idle_timeout
        self.keys = keys
        self.knobs = knobs
        self.catalog = catalog
        self.gate = Gatekeeper(keys)
        self.rng = random.Random(knobs.seed)
        self.hub = Hub(catalog.types)
        self.throttle = Throttle(lambda: self.knobs, self.rng)
        self.deliver_webhooks = deliver_webhooks
        self.deliverer: Deliverer | None = None
        self.websockets: set[web.WebSocketResponse] = set()
        self._idempotent: OrderedDict[str, tuple[tuple[str, str], int, Any]] = OrderedDict()
        self._inflight: set[str] = set()
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
        for method in ("POST", "PATCH", "DELETE"):
            r.add_route(method, "/rest/v1/{table}", self.rest_write)
        r.add_post("/functions/v1/{name}", self.function)
        r.add_get("/realtime/v1/websocket", self.realtime)
        r.add_post("/v1/payment_intents", self.pi_create)
        r.add_get("/v1/payment_intents", self.pi_list)
        r.add_get("/v1/payment_intents/{id}", self.pi_retrieve)
        r.add_post("/v1/payment_intents/{id}", self.pi_update)
        r.add_post("/v1/payment_intents/{id}/confirm", self.pi_confirm)
        r.add_post("/v1/payment_intents/{id}/cancel", self.pi_cancel)
        r.add_post("/v1/refunds", self.refund_create)
        r.add_get("/v1/refunds/{id}", self.object_retrieve)
        r.add_post("/v1/customers", self.customer_create)
        r.add_get("/v1/customers/{id}", self.object_retrieve)
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
        if "Accept-Profile" in h or "Content-Profile" in h:
            self._profile(request)
        return self.gate.check(
            h.get("apikey") or request.query.get("apikey"), h.get("Authorization")
        )

    @staticmethod
    def _profile(request: web.Request) -> None:
        """Accept-Profile / Content-Profile (the schema postgrest-js names) must be an exposed one."""
        h = request.headers
        name = (
            h.get("Accept-Profile")
            if request.method in ("GET", "HEAD")
            else h.get("Content-Profile")
        )
        if name is not None and name != "public":
            raise PostgrestError(
                406,
                "PGRST106",
                f"Invalid schema: {name[:60]}",
                None,
                "Only the following schemas are exposed: public",
            )

    def _admin(self, request: web.Request) -> None:
        h = request.headers
        self.gate.check_admin(
            h.get("apikey") or request.query.get("apikey"), h.get("Authorization")
        )

    async def _body(self, request: web.Request, form: bool = False) -> Any:
        """The request's body (bytes, or the form for `form=True`), read within idle_timeout: a
        client that sends its body too slowly gets 408 instead of holding the connection."""
        try:
            async with asyncio.timeout(self.idle_timeout):
                return await (request.post() if form else request.read())
        except TimeoutError:
            msg = f"request body not received within {self.idle_timeout:g} s"
            raise ApiError(408, _error_body(request.path, 408, msg)) from None
        except (UnicodeDecodeError, ValueError) as exc:  # a form body that is not UTF-8
            msg = f"Invalid request body: not UTF-8 form encoding ({str(exc)[:80]})"
            raise ApiError(400, _error_body(request.path, 400, msg)) from None

    async def _json(self, request: web.Request) -> Any:
        return parse_json(await self._body(request))

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
        eid = int_in_range(body["p_event_id"], INT4, "p_event_id")

        def q(conn: sqlite3.Connection) -> Any:
            row = conn.execute("SELECT * FROM event_revenue WHERE event_id = ?", (eid,)).fetchone()
            return dict(row) if row else None

        return json_response(await self.throttle.run(TARGET_REVENUE, lambda: self.db.read(q)))

    async def rest_get(self, request: web.Request) -> web.Response:
        """GET|HEAD /rest/v1/{table}: select (aliases, casts, embeds), filters, order, range, counts."""
        self.requests += 1
        self._auth(request)
        table = request.match_info["table"]
        h = request.headers
        media = parse_accept(h.get("Accept"))
        prefer = parse_prefer(h.getall("Prefer", ()))
        q = parse_query(self.catalog, table, _with_range(request.query.items(), h.get("Range")))
        rows, total = await self.throttle.run(
            f"rest:{table}",
            lambda: self.db.read(run_read, self.catalog, q, prefer.count is not None),
        )
        headers = {"Content-Range": content_range(q.offset, len(rows), total)}
        status = 200  # with a count, PostgREST answers a partial page 206 (RangeQuery.hs)
        if total is not None:
            if q.offset > total:
                raise PostgrestError(
                    416,
                    "PGRST103",
                    "Requested range not satisfiable",
                    f"An offset of {q.offset} was requested, but there are only {total} rows.",
                )
            if len(rows) < total:
                status = 206
        return _answer(rows, media, q, headers, status)

    async def rest_write(self, request: web.Request) -> web.Response:
        """POST (insert, upsert), PATCH, DELETE /rest/v1/{table}, as the caller's role may."""
        self.requests += 1
        role = self._auth(request)
        table = request.match_info["table"]
        h = request.headers
        kind = {"POST": "insert", "PATCH": "update", "DELETE": "delete"}[request.method]
        media = parse_accept(h.get("Accept"))
        prefer = parse_prefer(h.getall("Prefer", ()))
        body = await self._json(request) if kind != "delete" else None
        w, q = build_write(
            self.catalog, table, kind, body, list(request.query.items()), prefer, _run_id(request)
        )
        if media == OBJECT:
            w = dataclasses.replace(w, singular=True)
        rows = await self.throttle.run(
            f"rest:{table}", lambda: self.db.write(write_job, w, role, self.hub.tables)
        )
        headers = {"Content-Range": f"*/{len(rows)}" if prefer.count else "*/*"}
        if prefer.returning != "representation":
            return web.Response(status=201 if kind == "insert" else 204, headers=headers)
        out = project(rows, q, w.types)
        return _answer(out, media, q, headers, 201 if kind == "insert" else 200)

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
        body = await self._body(request)
        event = verify_event(
            body, request.headers.get("Stripe-Signature"), self.keys.webhook_secret
        )
        run = run_id(request.headers, event["data"]["object"].get("metadata"))
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
        # Phoenix closes a socket that sends nothing (not even a heartbeat) for 60 s
        ws = web.WebSocketResponse(
            max_msg_size=MAX_BODY, autoping=True, receive_timeout=self.idle_timeout
        )
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
                    try:
                        replies = conn.handle(msg.data)
                    except Refused as exc:
                        await ws.close(code=exc.code, message=exc.reason.encode()[:120])
                        break
                    for reply in replies:
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
        except TimeoutError:
            with contextlib.suppress(Exception):
                await ws.close(code=1000, message=b"heartbeat timeout")
        except Exception:  # never an HTTP answer into an upgraded socket: close it instead
            log.exception("realtime connection failed")
            with contextlib.suppress(Exception):
                await ws.close(code=1011, message=b"internal error")
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

    async def _stripe(
        self, request: web.Request, endpoint: str, work: Any, *, idempotent: bool = True
    ) -> web.Response:
        """Authenticate, decode the parameters, honour `Idempotency-Key`, run `work(params)`
        (-> (object, events, card error or None)), deliver its events; Stripe's error shapes.

        Idempotency as https://docs.stripe.com/api/idempotent_requests defines it: a key replays
        the first answer (with `Idempotent-Replayed: true`) for the same endpoint and parameters;
        other parameters are a 400 `idempotency_error`; a key still executing is a 409; requests
        refused by validation store no result.
        """
        self.requests += 1
        self.gate.stripe_check(request.headers.get("Authorization"))
        if request.method == "POST":
            post = await self._body(request, form=True)
            params = decode_form((k, v) for k, v in post.items() if isinstance(v, str))
        else:
            params = decode_form(request.query.items())
        key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
        fingerprint = (request.path, json.dumps(params, sort_keys=True))
        if key is not None:
            if not key or len(key) > 255:
                raise StripeApiError(
                    400, "Idempotency-Key must be 1..255 characters", code="idempotency_key_invalid"
                )
            hit = self._idempotent.get(key)
            if hit is not None:
                if hit[0] != fingerprint:
                    raise StripeApiError(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters they "
                        f"were first used with. Try using a key other than '{key[:80]}' if you meant to "
                        "execute a different request.",
                        type_="idempotency_error",
                    )
                return json_response(hit[2], hit[1], headers={"Idempotent-Replayed": "true"})
            if key in self._inflight:
                raise StripeApiError(
                    409,
                    "There is currently another in-progress request using this Idempotent Key "
                    "(that probably means you submitted twice, and the other request is still going "
                    "through). Please retry your request after a few seconds.",
                    type_="idempotency_error",
                    code="idempotency_key_in_use",
                )
            self._inflight.add(key)
        try:
            obj, events, err = await self.throttle.run(endpoint, lambda: work(params))
        finally:
            if key is not None:
                self._inflight.discard(key)
        if events:
            self._deliver(
                events, run_id(request.headers, events[-1]["data"]["object"].get("metadata"))
            )
        status, body = (402, err) if err else (200, obj)
        if key is not None:
            self._idempotent[key] = (fingerprint, status, body)
            while len(self._idempotent) > 10_000:
                self._idempotent.popitem(last=False)
        return json_response(body, status)

    def _deliver(self, events: list[dict[str, Any]], run: str | None) -> None:
        if self.deliverer is not None and events:
            self.deliverer.enqueue(events, run)

    async def pi_create(self, request: web.Request) -> web.Response:
        """POST /v1/payment_intents (form-encoded); the run id from the header or metadata."""

        async def work(params: dict[str, Any]) -> Any:
            req = validate_create(params)
            run = run_id(request.headers, req["metadata"])
            return await self.db.write(create_job, req, run)

        return await self._stripe(request, "stripe:payment_intents.create", work)

    async def pi_update(self, request: web.Request) -> web.Response:
        """POST /v1/payment_intents/{id}: amount, currency, metadata, description, payment_method."""
        pi_id = request.match_info["id"]
        return await self._stripe(
            request,
            "stripe:payment_intents.update",
            lambda params: self.db.write(update_job, pi_id, params),
        )

    async def pi_confirm(self, request: web.Request) -> web.Response:
        """POST /v1/payment_intents/{id}/confirm."""
        pi_id = request.match_info["id"]

        async def work(params: dict[str, Any]) -> Any:
            req = validate_confirm(params)
            return await self.db.write(confirm_job, pi_id, req, None)

        return await self._stripe(request, "stripe:payment_intents.confirm", work)

    async def pi_cancel(self, request: web.Request) -> web.Response:
        """POST /v1/payment_intents/{id}/cancel."""
        pi_id = request.match_info["id"]
        return await self._stripe(
            request,
            "stripe:payment_intents.cancel",
            lambda params: self.db.write(cancel_job, pi_id, params),
        )

    async def pi_retrieve(self, request: web.Request) -> web.Response:
        """GET /v1/payment_intents/{id}[?expand[]=latest_charge]."""
        pi_id = request.match_info["id"]

        async def work(params: dict[str, Any]) -> Any:
            return await self.db.read(retrieve, pi_id, params), [], None

        return await self._stripe(request, "stripe:payment_intents.retrieve", work)

    async def pi_list(self, request: web.Request) -> web.Response:
        """GET /v1/payment_intents: limit, starting_after, ending_before, customer, has_more."""

        async def work(params: dict[str, Any]) -> Any:
            return await self.db.read(list_payment_intents, params), [], None

        return await self._stripe(request, "stripe:payment_intents.list", work)

    async def refund_create(self, request: web.Request) -> web.Response:
        """POST /v1/refunds (payment_intent= or charge=, amount=): refund.created, charge.refunded."""

        async def work(params: dict[str, Any]) -> Any:
            run = run_id(request.headers, params.get("metadata"))
            return await self.db.write(refund_job, params, run)

        return await self._stripe(request, "stripe:refunds.create", work)

    async def customer_create(self, request: web.Request) -> web.Response:
        """POST /v1/customers: customer.created."""

        async def work(params: dict[str, Any]) -> Any:
            run = run_id(request.headers, params.get("metadata"))
            return await self.db.write(customer_job, params, run)

        return await self._stripe(request, "stripe:customers.create", work)

    async def object_retrieve(self, request: web.Request) -> web.Response:
        """GET /v1/refunds/{id} and /v1/customers/{id}."""
        kind = "refund" if request.path.startswith("/v1/refunds/") else "customer"
        oid = request.match_info["id"]

        async def work(params: dict[str, Any]) -> Any:
            return await self.db.read(retrieve_object, kind, oid, params), [], None

        return await self._stripe(request, f"stripe:{kind}s.retrieve", work)

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


def _with_range(params: Any, range_header: str | None) -> list[tuple[str, str]]:
    """The query's parameters, with a `Range: 0-9` header as offset and limit when they are absent."""
    out = list(params)
    if range_header and not any(k in ("limit", "offset") for k, _ in out):
        lo, sep, hi = range_header.strip().partition("-")
        if sep and lo.isascii() and lo.isdigit() and (not hi or (hi.isascii() and hi.isdigit())):
            out.append(("offset", lo))
            if hi:
                if int(hi) < int(lo):
                    raise PostgrestError(
                        416,
                        "PGRST103",
                        "Requested range not satisfiable",
                        "The lower boundary must be lower than or equal to the upper boundary in the Range header.",
                    )
                out.append(("limit", str(int(hi) - int(lo) + 1)))
    return out


def _answer(
    rows: list[dict[str, Any]], media: str, q: Query, headers: dict[str, str], status: int
) -> web.Response:
    """Rows in the media type asked for: a JSON array, one object (vnd.pgrst.object) or CSV."""
    if media == OBJECT:
        return json_response(singular(rows), status, headers)
    if media == CSV:
        keys = [*q.columns, *(e.key for e in q.select.embeds)]
        return web.Response(
            text=to_csv(rows, keys), status=status, content_type="text/csv", headers=headers
        )
    return json_response(rows, status, headers)


def _unknown_rpc(fn: str) -> PostgrestError:
    return PostgrestError(
        404,
        "PGRST202",
        f"Could not find the function public.{fn} in the schema cache",
        None,
        "functions: scan_ticket_atomic, event_revenue",
    )


__all__ = ["StandInApp", "json_response", "FunctionError"]
