"""Webhook delivery with Stripe's semantics: a delay, at-least-once (occasional duplicates), no order
guarantee, and retries with exponential backoff while the endpoint fails. Signed at send time."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from typing import Any

import aiohttp
import stripe

from staging.knobs import DeliveryKnobs

log = logging.getLogger("gaterush.staging")


class Deliverer:
    """Sends Stripe events to a webhook endpoint in the background; `await idle()` waits for all."""

    def __init__(
        self, url: str, secret: str, knobs: Callable[[], DeliveryKnobs], rng: random.Random
    ) -> None:
        self.url = url
        self.secret = secret
        self.knobs = knobs
        self.rng = rng
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.stats = {
            "scheduled": 0,
            "attempts": 0,
            "delivered": 0,
            "failed_attempts": 0,
            "duplicates_sent": 0,
            "given_up": 0,
        }

    def enqueue(self, events: list[dict[str, Any]], run_id: str | None = None) -> None:
        """Schedule each event's delivery (and, now and then, a duplicate) with independent delays."""
        k = self.knobs()
        for ev in events:
            copies = 2 if self.rng.random() < k.duplicate_rate else 1
            self.stats["duplicates_sent"] += copies - 1
            for _ in range(copies):
                self.stats["scheduled"] += 1
                task = asyncio.get_running_loop().create_task(
                    self._deliver(ev, k.delay.sample(self.rng), run_id)
                )
                self._tasks.add(task)
                self._idle.clear()
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    async def _deliver(self, event: dict[str, Any], delay: float, run_id: str | None) -> None:
        await asyncio.sleep(delay)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        body = json.dumps(event, separators=(",", ":"))
        attempt = 0
        while True:
            attempt += 1
            k = self.knobs()
            self.stats["attempts"] += 1
            headers = {
                "Content-Type": "application/json",
                "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(
                    body, self.secret
                ),
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            }
            if run_id:
                headers["X-Gaterush-Run"] = run_id
            try:
                async with self._session.post(
                    self.url, data=body.encode(), headers=headers
                ) as resp:
                    await resp.read()
                    ok = 200 <= resp.status < 300
            except (TimeoutError, aiohttp.ClientError) as exc:
                log.debug("webhook %s attempt %d failed: %s", event.get("id"), attempt, exc)
                ok = False
            if ok:
                self.stats["delivered"] += 1
                return
            self.stats["failed_attempts"] += 1
            if attempt >= k.max_attempts:
                self.stats["given_up"] += 1
                log.warning("webhook %s given up after %d attempts", event.get("id"), attempt)
                return
            await asyncio.sleep(k.retry_base * 2 ** (attempt - 1) * (0.5 + self.rng.random()))

    @property
    def pending(self) -> int:
        """Deliveries scheduled and not finished."""
        return len(self._tasks)

    async def idle(self, timeout: float | None = None) -> bool:
        """Wait until no delivery is pending; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Cancel pending deliveries and close the HTTP session."""
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
