"""Errors the stand-in answers with, in the JSON shape each real service uses."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answered to the client as `status` with the JSON `body`; never a traceback."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body


class PostgrestError(ApiError):
    """A PostgREST-shaped error: {"code", "message", "details", "hint"}."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(
            status, {"code": code, "message": message, "details": details, "hint": hint}
        )


class StripeApiError(ApiError):
    """A Stripe-shaped error: {"error": {"type", "message", "code"?, "param"?, ...}}."""

    def __init__(
        self, status: int, message: str, type_: str = "invalid_request_error", **extra: Any
    ) -> None:
        err = {"type": type_, "message": message}
        err.update({k: v for k, v in extra.items() if v is not None})
        super().__init__(status, {"error": err})


class FunctionError(ApiError):
    """An edge function's error: {"error": message} (what a Deno function typically answers)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, {"error": message})
