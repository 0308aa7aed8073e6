"""The stand-in's keys: Supabase-shaped API keys (legacy JWTs and sb_ keys), Stripe keys, and checks.

Sans-IO: a request's headers go in, an AuthError or a role comes out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any


class AuthError(Exception):
    """A request's credentials were missing or wrong: answer `status` with `body` (a JSON dict)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message", "unauthorized"))
        self.status = status
        self.body = body


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_jwt(claims: dict[str, Any], secret: str) -> str:
    """An HS256 JWT of `claims`, as Supabase signs its legacy anon and service_role keys."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing = f"{header}.{body}".encode("ascii")
    sig = hmac.new(secret.encode(), signing, hashlib.sha256).digest()
    return f"{header}.{body}.{_b64url(sig)}"


def verify_jwt(token: str, secret: str, now: float | None = None) -> dict[str, Any]:
    """The claims of an HS256 JWT signed with `secret`; ValueError if it is malformed, forged or expired."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("expected a JWT of three dot-separated parts")
    try:
        header = json.loads(_b64url_decode(parts[0]))
        claims = json.loads(_b64url_decode(parts[1]))
        sig = _b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("JWT parts are not base64url JSON") from exc
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
        raise ValueError("expected an HS256 JWT")
    want = hmac.new(
        secret.encode(), f"{parts[0]}.{parts[1]}".encode("ascii"), hashlib.sha256
    ).digest()
    if not hmac.compare_digest(want, sig):
        raise ValueError("JWT signature does not match")
    exp = claims.get("exp")
    if isinstance(exp, int | float) and exp < (time.time() if now is None else now):
        raise ValueError("JWT expired")
    return claims


@dataclass(frozen=True, slots=True)
class Keys:
    """Every secret and key one stand-in uses; generated per database, or given."""

    jwt_secret: str
    anon_key: str  # legacy JWT, role anon
    service_key: str  # legacy JWT, role service_role (admin endpoints)
    publishable_key: str  # sb_publishable_... (apikey header alone)
    secret_key: str  # sb_secret_... (admin, apikey header alone)
    webhook_secret: str  # whsec_...
    stripe_key: str  # sk_test_... the Stripe subset accepts

    @classmethod
    def generate(cls, webhook_secret: str | None = None) -> Keys:
        """Fresh random keys (webhook_secret kept if given)."""
        jwt_secret = secrets.token_urlsafe(32)
        iat = int(time.time())
        exp = iat + 10 * 365 * 24 * 3600
        return cls(
            jwt_secret=jwt_secret,
            anon_key=sign_jwt(
                {"iss": "gaterush-standin", "role": "anon", "iat": iat, "exp": exp}, jwt_secret
            ),
            service_key=sign_jwt(
                {"iss": "gaterush-standin", "role": "service_role", "iat": iat, "exp": exp},
                jwt_secret,
            ),
            publishable_key="sb_publishable_" + secrets.token_urlsafe(22),
            secret_key="sb_secret_" + secrets.token_urlsafe(22),
            webhook_secret=webhook_secret or "whsec_" + secrets.token_hex(24),
            stripe_key="sk_test_" + secrets.token_hex(24),
        )

    def to_dict(self) -> dict[str, str]:
        return {f: getattr(self, f) for f in self.__slots__}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> Keys:
        return cls(**{f: d[f] for f in cls.__slots__})


SB_PREFIXES = ("sb_publishable_", "sb_secret_")
NO_KEY = {
    "message": "No API key found in request",
    "hint": "No `apikey` request header or url param was found.",
}
BAD_KEY = {
    "message": "Invalid API key",
    "hint": "Double check your Supabase `anon` or `service_role` API key.",
}


class Gatekeeper:
    """Checks `apikey` / `Authorization` as Supabase's gateway does; caches verified tokens."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self._api_roles = {
            keys.anon_key: "anon",
            keys.service_key: "service_role",
            keys.publishable_key: "anon",
            keys.secret_key: "service_role",
        }
        self._jwt_cache: dict[str, str] = {keys.anon_key: "anon", keys.service_key: "service_role"}

    def jwt_role(self, token: str) -> str | None:
        """The role of a valid JWT signed by this stand-in, or None."""
        role = self._jwt_cache.get(token)
        if role is not None:
            return role
        try:
            claims = verify_jwt(token, self.keys.jwt_secret)
        except ValueError:
            return None
        role = str(claims.get("role", "authenticated"))
        if len(self._jwt_cache) < 10_000:
            self._jwt_cache[token] = role
        return role

    def check(self, apikey: str | None, authorization: str | None) -> str:
        """The role a request acts as; AuthError (401) when its keys would not pass Supabase's gateway.

        Legacy keys: a JWT anon or service_role key in `apikey` (and usually as Bearer too).
        New keys: an sb_publishable_ / sb_secret_ key in `apikey` alone; a Bearer, if any, must be a JWT.
        """
        if not apikey:
            raise AuthError(401, dict(NO_KEY))
        role = self._api_roles.get(apikey)
        if role is None:
            raise AuthError(401, dict(BAD_KEY))
        if authorization:
            scheme, _, token = authorization.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise AuthError(
                    401,
                    {
                        "code": "PGRST301",
                        "message": "Authorization must be 'Bearer <JWT>'",
                        "details": None,
                        "hint": None,
                    },
                )
            if token == apikey:  # what supabase-py and supabase-js send: the same key twice
                return role
            jwt_role = None if token.startswith(SB_PREFIXES) else self.jwt_role(token)
            if jwt_role is None:
                raise AuthError(
                    401,
                    {
                        "code": "PGRST301",
                        "message": "Invalid JWT in Authorization",
                        "details": "expected the apikey itself, or a JWT signed by this project (the anon or service_role key, or a user session)",
                        "hint": None,
                    },
                )
            return jwt_role
        return role

    def check_admin(self, apikey: str | None, authorization: str | None) -> None:
        """AuthError unless the request carries the service_role or sb_secret_ key."""
        if authorization and authorization.lower().startswith("bearer "):
            token = authorization[7:].strip()
            if token == self.keys.secret_key or self.jwt_role(token) == "service_role":
                return
        if apikey in (self.keys.service_key, self.keys.secret_key):
            return
        raise AuthError(
            401,
            {
                "message": "admin endpoints need the service_role key (Bearer) or the sb_secret_ key (apikey)"
            },
        )

    def stripe_check(self, authorization: str | None) -> None:
        """AuthError unless the request carries this stand-in's sk_test_ key; live keys are refused by name."""
        token = ""
        if authorization:
            scheme, _, rest = authorization.partition(" ")
            if scheme.lower() == "bearer":
                token = rest.strip()
            elif scheme.lower() == "basic":
                try:
                    token = base64.b64decode(rest.strip()).decode().partition(":")[0]
                except (ValueError, UnicodeDecodeError):
                    token = ""
        if not token:
            raise AuthError(
                401,
                _stripe_error(
                    "You did not provide an API key. Provide it as 'Authorization: Bearer sk_test_...'."
                ),
            )
        if token.startswith(("sk_live_", "rk_live_")):
            raise AuthError(
                401,
                _stripe_error("Live keys are refused: the stand-in takes only its sk_test_ key."),
            )
        if not hmac.compare_digest(token.encode(), self.keys.stripe_key.encode()):
            raise AuthError(401, _stripe_error(f"Invalid API Key provided: {_redact(token)}"))


def _redact(token: str) -> str:
    return token[:8] + "*" * 4 + token[-4:] if len(token) > 12 else "****"


def _stripe_error(message: str, type_: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": type_}}
