"""Applies an endpoint's knobs to a request: capacity (workers), added latency, stalls, injected errors."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from staging.errors import ApiError
from staging.knobs import INERT, EndpointKnobs, Knobs

T = TypeVar("T")


def injected_error(endpoint: str) -> ApiError:
    """The 500 an injected fault answers, shaped like the endpoint's real errors."""
    msg = f"injected fault ({endpoint} error_rate knob)"
    if endpoint.startswith("stripe:"):
        return ApiError(500, {"error": {"type": "api_error", "message": msg}})
    if endpoint.startswith("fn:"):
        return ApiError(500, {"error": msg})
    return ApiError(500, {"code": "GR500", "message": msg, "details": None, "hint": None})


class Throttle:
    """Per-endpoint semaphores and fault injection, following the current Knobs."""

    def __init__(self, knobs: Callable[[], Knobs], rng: random.Random) -> None:
        self.knobs = knobs
        self.rng = rng
        self._sems: dict[str, tuple[int, asyncio.Semaphore]] = {}
        self.injected_errors = 0
        self.stalls = 0

    def _sem(self, endpoint: str, workers: int) -> asyncio.Semaphore:
        cur = self._sems.get(endpoint)
        if (
            cur is None or cur[0] != workers
        ):  # a knob change starts a new pool; old holders finish on the old one
            cur = (workers, asyncio.Semaphore(workers))
            self._sems[endpoint] = cur
        return cur[1]

    async def run(self, endpoint: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run `fn` under the endpoint's knobs (directly when they are inert)."""
        k = self.knobs().for_endpoint(endpoint)
        if k is INERT:
            return await fn()
        if k.workers is not None:
            async with self._sem(endpoint, k.workers):
                return await self._serve(endpoint, k, fn)
        return await self._serve(endpoint, k, fn)

    async def _serve(
        self, endpoint: str, k: EndpointKnobs, fn: Callable[[], Awaitable[Any]]
    ) -> Any:
        delay = k.latency.sample(self.rng) if k.latency is not None else 0.0
        if k.stall_rate and self.rng.random() < k.stall_rate:
            self.stalls += 1
            delay += k.stall
        if delay > 0:
            await asyncio.sleep(delay)
        if k.error_rate and self.rng.random() < k.error_rate:
            self.injected_errors += 1
            raise injected_error(endpoint)
        return await fn()
