"""Request builders: turn a trace event into the HTTP request its target expects (sans-IO).

Pure functions: no socket, no clock except the ``now_unix`` a caller passes for webhook
signatures. Every request carries ``X-Gaterush-Run``; keys only ever go into headers of the
request itself, never into anything this module returns for logging.

:func:`prepare_request` builds and encodes a request ahead of its send (the scheduler does it in
the slack before the deadline), leaving only a webhook's ``Stripe-Signature`` to be made when it
goes out (:meth:`Prepared.wire`): the receiver checks that timestamp against its clock.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import stripe
from stripe._encode import _api_encode  # the exact encoding stripe-python sends

from replay.http1 import HEAD_BYTES as _HEAD_BYTES
from replay.http1 import RequestError
from replay.target_profiles import Profile
from replay.transport import Request, encode_request, host_header_of, split_origin
from traces.event import (
    CHECKOUT,
    CONFIRM,
    OK,
    TARGET_PI_CONFIRM,
    TARGET_PI_CREATE,
    Event,
    unpack_payload,
)
from traces.importers.endpoints import Endpoint, outcome
from traces.importers.request import REQUEST

RUN_HEADER = "X-Gaterush-Run"
# who sent it (the event's actor, never a secret): a recorder in between keeps actors apart
ACTOR_HEADER = "X-Gaterush-Actor"
USER_AGENT = "gaterush/0.1"
STRIPE_API = "https://api.stripe.com"


class BuildError(Exception):
    """An event cannot become a request (a bad payload, a missing dependency): the row's error."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """Secrets from the environment. repr() shows which are set, never their values."""

    anon_key: str = field(default="", repr=False)
    stripe_key: str = field(default="", repr=False)
    webhook_secret: str = field(default="", repr=False)
    # sent instead of anon_key for a recorded request made with the service_role key, if set
    service_key: str = field(default="", repr=False)

    def __repr__(self) -> str:
        names = ("anon_key", "stripe_key", "webhook_secret", "service_key")
        have = [n for n in names if getattr(self, n)]
        return f"Credentials(set: {', '.join(have) or 'none'})"

    def values(self) -> list[str]:
        """The secret values that are set (to check outputs never contain them)."""
        keys = (self.anon_key, self.stripe_key, self.webhook_secret, self.service_key)
        return [v for v in keys if v]


@lru_cache(maxsize=64)
def supabase_auth_headers(anon_key: str) -> tuple[tuple[str, str], ...]:
    """apikey (+ Bearer for a legacy JWT key; sb_publishable_/sb_secret_ keys are not JWTs)."""
    if not anon_key:
        return ()
    if anon_key.startswith(("sb_publishable_", "sb_secret_")):
        return (("apikey", anon_key),)
    return (("apikey", anon_key), ("Authorization", f"Bearer {anon_key}"))


@lru_cache(maxsize=64)
def split_base(url: str) -> tuple[str, str]:
    """(origin, path prefix without trailing slash) of a base URL."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"{url!r}: expected an http:// or https:// URL")
    return f"{u.scheme}://{u.netloc.rpartition('@')[2]}", u.path.rstrip("/")


def public_url(url: str) -> str:
    """A URL safe to log: scheme://host[:port]/path, no credentials, no query string."""
    u = urlsplit(url)
    return f"{u.scheme}://{u.netloc.rpartition('@')[2]}{u.path}"


@dataclass(frozen=True, slots=True)
class BuildContext:
    """Everything a builder needs besides the event: where, who, and under which run id."""

    supabase_url: str
    run_id: str
    keys: Credentials = field(default_factory=Credentials)
    stripe_url: str = STRIPE_API
    profile: Profile = field(default_factory=Profile)

    @property
    def supabase(self) -> tuple[str, str]:
        """(origin, path prefix) of the Supabase target."""
        return split_base(self.supabase_url)

    @property
    def stripe(self) -> tuple[str, str]:
        """(origin, path prefix) of the Stripe API target."""
        return split_base(self.stripe_url)


_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# JSONEncoder.encode makes its C encoder anew for every call (a third of a small body's cost):
# made once here, with the same settings, it writes the same bytes. A payload decoded from msgpack
# cannot be circular, so the circular-reference check (markers) is left out.
_C_ENCODE = None if json.encoder.c_make_encoder is None else json.encoder.c_make_encoder(
    None, _JSON.default, json.encoder.encode_basestring, None, ":", ",", False, False, True
)  # fmt: skip


def _json(obj: Any) -> bytes:
    """Compact JSON of a payload; BuildError for a value JSON has no form for (bytes, a set)."""
    try:
        if _C_ENCODE is None:  # an interpreter without the C accelerator
            return _JSON.encode(obj).encode()
        return "".join(_C_ENCODE(obj, 0)).encode()
    except (TypeError, ValueError, RecursionError) as e:
        raise BuildError(f"payload cannot be sent as JSON: {e}") from None


def _base_headers(ctx: BuildContext, content_type: str | None) -> list[tuple[str, str]]:
    h = [("User-Agent", USER_AGENT), (RUN_HEADER, ctx.run_id), ("Accept", "application/json")]
    if content_type:
        h.append(("Content-Type", content_type))
    return h


@lru_cache(maxsize=64)
def _supabase_headers(
    run_id: str, content_type: str | None, anon_key: str
) -> tuple[tuple[str, str], ...]:
    """The headers every modelled Supabase request of a run carries (made once per run)."""
    h = [("User-Agent", USER_AGENT), (RUN_HEADER, run_id), ("Accept", "application/json")]
    if content_type:
        h.append(("Content-Type", content_type))
    return (*h, *supabase_auth_headers(anon_key))


def rpc_request(ctx: BuildContext, target: str, payload: dict[str, Any]) -> Request:
    """Supabase RPC: POST /rest/v1/rpc/<fn> with JSON named arguments (names from the profile).

    A view payload ``{"load", "query": {...}}`` sends its query as the arguments.
    """
    spec = ctx.profile.spec(target)
    src = payload.get("query", payload) if isinstance(payload.get("query"), dict) else payload
    names, drop = spec.arg_names, spec.drop
    args = {names[k]: v for k, v in src.items() if k not in drop}
    origin, prefix = ctx.supabase
    headers = _supabase_headers(ctx.run_id, "application/json", ctx.keys.anon_key)
    if spec.method == "GET":
        return Request(origin, "GET", prefix + spec.path + _query(args), headers)
    return Request(origin, spec.method, prefix + spec.path, headers, _json(args))


def _query(params: dict[str, Any]) -> str:
    if not params:
        return ""
    return "?" + urlencode(
        [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in params.items()], safe=",.*()"
    )


def rest_request(ctx: BuildContext, target: str, payload: dict[str, Any]) -> Request:
    """Supabase REST: GET /rest/v1/<table>?select=...&col=eq.v with PostgREST params from the payload."""
    spec = ctx.profile.spec(target)
    query = payload.get("query", {k: v for k, v in payload.items() if k not in spec.drop})
    if not isinstance(query, dict):
        raise BuildError(
            f"{target}: payload query must be a map of PostgREST params, got {type(query).__name__}"
        )
    origin, prefix = ctx.supabase
    headers = _supabase_headers(ctx.run_id, None, ctx.keys.anon_key)
    return Request(origin, spec.method, prefix + spec.path + _query(query), headers)


def function_request(
    ctx: BuildContext, target: str, payload: dict[str, Any], now_unix: int | SignAtSend
) -> Request:
    """Edge function: POST /functions/v1/<name> with the payload as JSON.

    For a Stripe webhook (the payload is an event object, ``"object": "event"``) the body is signed
    now with STRIPE_WEBHOOK_SECRET, so the receiver's 300 s tolerance holds at any replay speed.
    """
    spec = ctx.profile.spec(target)
    origin, prefix = ctx.supabase
    body = _json(payload)
    headers = list(_supabase_headers(ctx.run_id, "application/json", ctx.keys.anon_key))
    if payload.get("object") == "event":
        if not ctx.keys.webhook_secret:
            raise BuildError(f"{target}: a Stripe event needs STRIPE_WEBHOOK_SECRET to be signed")
        sig = _stripe_signature(body, ctx.keys.webhook_secret, now_unix)
        headers.append(("Stripe-Signature", sig))
    return Request(origin, spec.method, prefix + spec.path, tuple(headers), body)


def form_encode(params: dict[str, Any]) -> list[tuple[str, str]]:
    """Stripe's form encoding (nested maps as a[b], lists as a[0]): the official client's own encoder."""
    return [(k, v) for k, v in _api_encode(params) if v is not None]


def _stripe_headers(ctx: BuildContext, seq: int) -> tuple[tuple[str, str], ...]:
    h = _base_headers(ctx, "application/x-www-form-urlencoded")
    if ctx.keys.stripe_key:
        h.append(("Authorization", f"Bearer {ctx.keys.stripe_key}"))
    # the same run and event never create twice, even if a request is retried
    h.append(("Idempotency-Key", f"gaterush-{ctx.run_id}-{seq}"))
    return tuple(h)


def stripe_call(
    ctx: BuildContext,
    seq: int,
    method: str,
    path: str,
    params: Any,
    *,
    headers: tuple[tuple[str, str], ...] = (),
    recorded: bool = False,
) -> Request:
    """Any Stripe API call: method, path from /v1/, and form params (a map through the official
    client's encoding, or pairs as they were recorded); the run id goes into a create's metadata.
    `recorded` sends `headers` as they were recorded (no Idempotency-Key of replay's own)."""
    origin, prefix = ctx.stripe
    method = method.upper()
    if isinstance(params, dict):
        pairs = form_encode(params)
    else:
        pairs = [(str(k), str(v)) for k, v in params or ()]
    if method == "POST" and _is_create(path):
        pairs.append(("metadata[gaterush_run]", ctx.run_id))
    bodiless = method in ("GET", "DELETE", "HEAD")
    # a recorded call keeps its own Idempotency-Key or none (as it was sent); a modelled one gets one
    drop = ("Idempotency-Key", "Content-Type") if bodiless else ()
    if recorded:
        drop = (*drop, "Idempotency-Key")
    h = [(k, v) for k, v in _stripe_headers(ctx, seq) if k not in drop]
    h = _override(h, headers, ctx.run_id)
    if bodiless:
        query = "?" + urlencode(pairs) if pairs else ""
        return Request(origin, method, prefix + path + query, tuple(h))
    return Request(origin, method, prefix + path, tuple(h), urlencode(pairs).encode())


def _is_create(path: str) -> bool:
    parts = [p for p in path.split("/") if p]
    return len(parts) == 2 and parts[0] == "v1"


def _override(base: list[tuple[str, str]], recorded: Any, run_id: str) -> list[tuple[str, str]]:
    """The base headers with the recorded ones in their place (an Idempotency-Key made per run)."""
    rec = [(str(k), str(v)) for k, v in recorded or ()]
    names = {k.lower() for k, _ in rec}
    out = [(k, v) for k, v in base if k.lower() not in names]
    for k, v in rec:
        out.append((k, f"gaterush-{run_id}-{v}" if k.lower() == "idempotency-key" else v))
    return out


_ON_COLLECTION = {"create": "POST", "list": "GET"}  # Stripe's verbs on /v1/<resource>
_ON_ONE = {"retrieve": "GET", "update": "POST", "delete": "DELETE"}  # on /v1/<resource>/<id>


def _stripe_path(action: str, ident: str | None) -> tuple[str, str]:
    """(method, path) of a Stripe call named `resource.action` (payment_intents.confirm)."""
    resource, _, verb = action.rpartition(".")
    if not resource:
        raise BuildError(f"Stripe call {action!r}: expected resource.action")
    base = f"/v1/{resource}"
    if verb in _ON_COLLECTION:
        return _ON_COLLECTION[verb], base
    if not ident:
        raise BuildError(f"Stripe call {action!r} needs an id (none recorded or captured)")
    one = f"{base}/{quote(str(ident), safe='')}"
    if verb in _ON_ONE:
        return _ON_ONE[verb], one
    return "POST", f"{one}/{verb}"


def stripe_request(
    ctx: BuildContext, event: Event, payload: dict[str, Any], captured: dict[str, Any] | None
) -> Request:
    """Stripe API (stand-in or test mode) from a simulated payload: a PaymentIntent create and
    confirm as the models emit them, any other `resource.action` with the payload as params."""
    action = event.target.partition(":")[2]  # type: ignore[union-attr]
    ident = (captured or {}).get("id") or payload.get("payment_intent") or payload.get("id")
    if action == "payment_intents.create":
        if "amount" not in payload:
            raise BuildError(f"seq {event.seq}: checkout payload has no amount")
        meta = {
            k: payload[k] for k in ("event_id", "quantity", "buyer", "order_ref") if k in payload
        }
        params: dict[str, Any] = {
            "amount": payload.get("amount"),
            "currency": payload.get("currency", "usd"),
            "payment_method_types": ["card"],
            "metadata": meta,
        }
        for key in ("confirm", "payment_method"):
            if key in payload:
                params[key] = payload[key]
        return stripe_call(ctx, event.seq, "POST", "/v1/payment_intents", params)
    if action == "payment_intents.confirm":
        if not ident:
            raise BuildError(
                f"seq {event.seq}: confirm has no PaymentIntent id (after={event.after} gave none)"
            )
        params = {"payment_method": payload.get("payment_method", "pm_card_visa")}
        method, path = _stripe_path(action, ident)
        return stripe_call(ctx, event.seq, method, path, params)
    try:
        method, path = _stripe_path(action, ident)
    except BuildError as e:
        raise BuildError(f"seq {event.seq}: {e}") from None
    named = ("id", "payment_intent") if path.count("/") > 2 else ()  # the id went into the path
    params = {k: v for k, v in payload.items() if k not in (*named, "query")}
    return stripe_call(ctx, event.seq, method, path, params)


BAD_SIGNING_SECRET = "whsec_gaterush_replayed_bad_signature"  # not anyone's secret: a wrong one
STALE_SIGNATURE_S = 3600  # older than Stripe's 300 s tolerance


class SignAtSend:
    """In place of ``now_unix``: the signature is made when the request goes out (Prepared.wire).

    A builder given one puts a placeholder in the Stripe-Signature header and notes the body,
    secret and age it is to be made with.
    """

    __slots__ = ("marks",)
    PLACEHOLDER = "gaterush-signature-made-at-send"

    def __init__(self) -> None:
        self.marks: list[tuple[bytes, str, int]] = []  # (body, secret, age in seconds)

    def mark(self, body: bytes, secret: str, age: int) -> str:
        """The placeholder header value; the signature's inputs are kept for the send."""
        if self.marks:
            raise BuildError("a request signed twice")
        self.marks.append((body, secret, age))
        return self.PLACEHOLDER


def stripe_signature(body: bytes, secret: str, timestamp: int) -> str:
    """The Stripe-Signature header for a body (stripe-python's generate_signature_header, on bytes)."""
    mac = hmac.new(secret.encode(), b"%d.%b" % (timestamp, body), "sha256").hexdigest()
    return f"t={timestamp},v1={mac}"


def _stripe_signature(body: bytes, secret: str, now_unix: int | SignAtSend, age: int = 0) -> str:
    if isinstance(now_unix, SignAtSend):
        return now_unix.mark(body, secret, age)
    return stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, timestamp=now_unix - age
    )


def _signature(mode: str, body: bytes, secret: str, now_unix: int | SignAtSend) -> str | None:
    """The Stripe-Signature to send for a recorded delivery: as it was (valid, bad, stale or none)."""
    if mode == "none":
        return None
    if mode == "bad":
        return _stripe_signature(body, BAD_SIGNING_SECRET, now_unix)
    if mode == "stale":
        return _stripe_signature(body, secret, now_unix, STALE_SIGNATURE_S)
    return _stripe_signature(body, secret, now_unix)


def _replace_ref(value: Any, ref: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(ref, new)
    if isinstance(value, dict):
        return {k: _replace_ref(v, ref, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_ref(v, ref, new) for v in value]
    return value


def recorded_request(
    ctx: BuildContext,
    event: Event,
    request: dict[str, Any],
    now_unix: int | SignAtSend,
    captured: dict[str, Any] | None,
) -> Request:
    """A recorded request sent back as it was: method, path, query, kept headers and body; keys,
    the run id and a webhook's signature (in its recorded state) are supplied now."""
    method = str(request.get("method", "GET")).upper()
    path = str(request.get("path", ""))
    body = request.get("body")
    ref, new = request.get("ref"), (captured or {}).get("id")
    if isinstance(ref, str) and ref and isinstance(new, str):
        path, body = path.replace(ref, new), _replace_ref(body, ref, new)
    query = [(str(k), str(v)) for k, v in request.get("query") or ()]
    encoding = request.get("encoding")
    kind = (event.target or "").partition(":")[0]
    if kind == "stripe":
        params = body if encoding in ("form", "form_pairs") else None
        if query and params is None and method in ("GET", "DELETE", "HEAD"):
            params = query
        return stripe_call(
            ctx, event.seq, method, path, params, headers=request.get("headers"), recorded=True
        )
    origin, prefix = ctx.supabase
    if encoding == "json":
        data: bytes | None = _json(body)
    elif encoding == "form":
        data = urlencode(form_encode(body)).encode()
    elif encoding == "form_pairs":
        data = urlencode([(str(k), str(v)) for k, v in body]).encode()
    elif encoding == "text":
        data = str(body).encode()
    else:
        data = None
    headers = [(k, v) for k, v in _base_headers(ctx, None) if k != "Accept"]
    key = ctx.keys.anon_key
    if request.get("auth") == "service_role" and ctx.keys.service_key:
        key = ctx.keys.service_key  # the recorded request was the backend's, not a client's
    headers += list(supabase_auth_headers(key))
    headers = _override(headers, request.get("headers"), ctx.run_id)
    mode = request.get("signature")
    if kind == "fn" and isinstance(mode, str) and data is not None:
        if mode != "none" and not ctx.keys.webhook_secret:
            raise BuildError(
                f"{event.target}: a Stripe event needs STRIPE_WEBHOOK_SECRET to be signed"
            )
        sig = _signature(mode, data, ctx.keys.webhook_secret, now_unix)
        if sig:
            headers.append(("Stripe-Signature", sig))
    qs = "?" + urlencode(query, safe=",.*()") if query else ""
    return Request(origin, method, prefix + path + qs, tuple(headers), data or b"")


def event_payload(event: Event) -> dict[str, Any]:
    """An event's payload as the map the builders read; BuildError if it is not one."""
    try:
        payload = unpack_payload(event.payload)
    except Exception as e:  # noqa: BLE001 - any decode failure is a malformed event
        raise BuildError(f"seq {event.seq}: payload is not msgpack: {e}") from None
    if not isinstance(payload, dict):
        raise BuildError(f"seq {event.seq}: payload must be a map, got {type(payload).__name__}")
    return payload


def build_request(
    ctx: BuildContext,
    event: Event,
    now_unix: int | SignAtSend,
    captured: dict[str, Any] | None = None,
    payload: dict[str, Any] | None = None,
) -> Request:
    """The request for an event with an http target (rpc, rest, fn, stripe); BuildError if it cannot be built.

    `captured` is what parse_outcome captured from the response of the event's `after` dependency;
    `payload` is event_payload(event) when the caller has it already (it is decoded once);
    `now_unix` a SignAtSend to leave a webhook's signature to the send (see prepare_request).
    """
    req = _build(ctx, event, now_unix, captured, payload)
    return req._replace(headers=(*req.headers, (ACTOR_HEADER, event.actor)))


def _build(
    ctx: BuildContext,
    event: Event,
    now_unix: int | SignAtSend,
    captured: dict[str, Any] | None,
    payload: dict[str, Any] | None,
) -> Request:
    """build_request without the actor header (prepare_request encodes that one on its own)."""
    target = event.target
    if not target:
        raise BuildError(f"seq {event.seq}: event has no target")
    if payload is None:
        payload = event_payload(event)
    kind = target.partition(":")[0]
    request = payload.get(REQUEST)
    if isinstance(request, dict) and kind in ("rpc", "rest", "fn", "stripe"):
        req = recorded_request(ctx, event, request, now_unix, captured)
    elif kind == "rpc":
        req = rpc_request(ctx, target, payload)
    elif kind == "rest":
        req = rest_request(ctx, target, payload)
    elif kind == "fn":
        req = function_request(ctx, target, payload, now_unix)
    elif kind == "stripe":
        req = stripe_request(ctx, event, payload, captured)
    else:
        raise BuildError(f"seq {event.seq}: target {target!r} is not an HTTP target")
    return req


@lru_cache(maxsize=64)
def host_header_for(origin: str) -> str:
    """The Host header the transport sends to an origin."""
    return host_header_of(*split_origin(origin))


class Prepared:
    """A request encoded before its deadline: the bytes, but for a signature made at send time.

    ``wire(now_unix)`` gives the bytes to write: the same as ``encode_request(build_request(ctx,
    event, now_unix))``. Holds the webhook secret of a signed request; repr() never shows it.
    """

    __slots__ = ("origin", "data", "signed", "_tail", "_body", "_secret", "_age")

    def __init__(self, origin: str, data: bytes, sign: tuple[bytes, bytes, str, int] | None = None):
        self.origin = origin
        self.data = data  # the whole request, or the head up to the signature's value
        self.signed = sign is not None  # its Stripe-Signature is made at send time
        if sign is not None:
            self._tail, self._body, self._secret, self._age = sign

    def wire(self, now_unix: int) -> bytes:
        """The bytes to write now (a signature, if any, made for `now_unix`)."""
        if not self.signed:
            return self.data
        sig = stripe_signature(self._body, self._secret, now_unix - self._age)
        return b"%b%b%b" % (self.data, sig.encode(), self._tail)

    def __repr__(self) -> str:
        return f"Prepared({self.origin}, {len(self.data)} bytes{', signed at send' if self.signed else ''})"


def prepare_request(
    ctx: BuildContext,
    event: Event,
    captured: dict[str, Any] | None = None,
    payload: dict[str, Any] | None = None,
) -> Prepared:
    """Build and encode an event's request ahead of its send: BuildError if it cannot be built,
    RequestError if its head cannot be written as it is (as the transport would say)."""
    deferred = SignAtSend()
    req = _build(ctx, event, deferred, captured, payload)
    data = encode_request(req, host_header_for(req.origin), ((ACTOR_HEADER, event.actor),))
    if not deferred.marks:
        return Prepared(req.origin, data)
    body, secret, age = deferred.marks[0]
    at = data.index(b"\r\nStripe-Signature: " + SignAtSend.PLACEHOLDER.encode() + b"\r\n") + 20
    tail = data[at + len(SignAtSend.PLACEHOLDER) :]
    return Prepared(req.origin, data[:at], (tail, body, secret, age))


_UNSEEN: Any = object()  # a target the Preparer has not looked at yet


class Preparer:
    """prepare_request for one run's context, with what it can work out once kept per target.

    A modelled RPC call (the scans: most of an event day) is a fixed head (request line, Host,
    the run's headers), the actor's header, the length and the JSON body: the fixed part is
    encoded and checked once per target, so a request costs its body's encoding, its actor's
    line and one join. (Actor lines are not kept: an event day's attendees each send a scan or
    two, so a cache of them would grow with the crowd for few hits.) Anything else, and any
    event the fixed form does not fit, goes the general way (prepare_request); both give the
    same bytes.
    """

    __slots__ = ("ctx", "_heads")

    def __init__(self, ctx: BuildContext) -> None:
        self.ctx = ctx
        self._heads: dict[str, tuple[str, bytes, Any, frozenset[str]] | None] = {}

    def prepare(
        self, event: Event, captured: dict[str, Any] | None, payload: dict[str, Any]
    ) -> Prepared:
        """prepare_request(ctx, event, captured, payload)."""
        target: str = event.target  # type: ignore[assignment]
        fixed = self._heads.get(target, _UNSEEN)
        if fixed is _UNSEEN:
            fixed = self._heads[target] = self._fixed(target)
        if fixed is None or isinstance(payload.get(REQUEST), dict):  # a recorded one: as recorded
            return prepare_request(self.ctx, event, captured, payload)
        actor = _actor_line(event.actor)
        if actor is None:  # a bad actor: the general way says what is wrong
            return prepare_request(self.ctx, event, captured, payload)
        origin, head, names, drop = fixed  # type: ignore[misc]
        query = payload.get("query")
        src = query if isinstance(query, dict) else payload
        body = _json({names[k]: v for k, v in src.items() if k not in drop})
        return Prepared(
            origin, b"%b%bContent-Length: %d\r\n\r\n%b" % (head, actor, len(body), body)
        )

    def _fixed(self, target: str) -> tuple[str, bytes, Any, frozenset[str]] | None:
        """(origin, head up to the actor's line, argument names, dropped keys) of a target whose
        requests all share their head: an RPC called by POST. None for any other."""
        if target.partition(":")[0] != "rpc":
            return None
        spec = self.ctx.profile.spec(target)
        if spec.method != "POST":
            return None
        origin, prefix = self.ctx.supabase
        req = Request(origin, "POST", prefix + spec.path,
                      _supabase_headers(self.ctx.run_id, "application/json", self.ctx.keys.anon_key))  # fmt: skip
        try:
            head = encode_request(req, host_header_for(origin))
        except RequestError:
            return None  # the general way refuses each request with the reason
        end = b"Content-Length: 0\r\n\r\n"
        if not head.endswith(end):
            return None
        return origin, head[: -len(end)], spec.arg_names, spec.drop


def _actor_line(actor: str) -> bytes | None:
    """The actor's header line, checked as encode_request checks it; None if it is bad."""
    try:
        line = f"{ACTOR_HEADER}: {actor}\r\n".encode("latin-1")
    except UnicodeEncodeError:
        return None
    return line if line.translate(None, _HEAD_BYTES) == b"\r\n" else None


_OUTCOME_KEYS = ("outcome", "result", "status")


def _stripe_endpoint(target: str) -> Endpoint:
    kind = {TARGET_PI_CREATE: CHECKOUT, TARGET_PI_CONFIRM: CONFIRM}.get(target, "stripe")
    return Endpoint(kind, target)


def parse_outcome(
    target: str,
    status: int,
    body: bytes,
    outcome_key: str = "outcome",
    expect: str | None = None,
) -> tuple[str | None, dict[str, Any] | None]:
    """(outcome, captured) of a response: the outcome checks compare with `expect`, and what a
    dependent event needs (the id a Stripe create answered with).

    An error status is `http_<status>` (what the recorder and importers write for it); a Stripe
    answer is judged as the recorder judges it (a 402 is `declined` unless `expect` is `http_402`).
    """
    if status <= 0:
        return None, None
    error = f"http_{status}" if not 200 <= status < 300 else None
    if error and expect is not None and expect.startswith("http_"):
        return error, None
    kind = target.partition(":")[0]
    if kind == "stripe":
        data = _loads(body)
        got = outcome(_stripe_endpoint(target), status, data)
        if error is None and target.endswith(".create") and isinstance(data, dict):
            return got, {"id": data["id"]} if isinstance(data.get("id"), str) else None
        return got, None
    if error:
        return error, None
    if kind == "rest" or target.endswith("event_revenue"):
        return OK, None
    fast = _fast_outcome(body, outcome_key)
    if fast is not None:
        return fast, None
    data = _loads(body)
    return _extract(data, outcome_key), None


@lru_cache(maxsize=64)
def _needle(key: str) -> bytes:
    return b'"' + key.encode() + b'":"'


def _fast_outcome(body: bytes, key: str) -> str | None:
    """The outcome of a compact JSON object answer without parsing it all (the hot path)."""
    needle = _needle(key)
    if not body.startswith(needle, 1) or body[:1] != b"{":
        return None  # only when it is the first key: a nested "outcome" must not win
    i = 1 + len(needle)
    j = body.find(b'"', i)
    value = body[i:j]
    if j < 0 or b"\\" in value:
        return None
    return value.decode()


def _loads(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _extract(data: Any, key: str) -> str | None:
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, str):
        return data
    if isinstance(data, dict):
        for k in (key, *_OUTCOME_KEYS):
            v = data.get(k)
            if isinstance(v, str):
                return v
        if data.get("duplicate") is True:
            return "duplicate"
        if data.get("received") is True:
            return "processed"
        return OK
    if data is None:
        return OK
    return str(data)
