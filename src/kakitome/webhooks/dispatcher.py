"""The webhook dispatcher: a task of the worker role that posts events to endpoints.

Each round it (1) turns new rows of the event sources into deliveries
(``WebhooksStore.pump``, cursors persisted by id), (2) leases the due deliveries and POSTs
each one with httpx, at most ``webhooks.concurrency`` at once, each bounded by
``webhooks.timeout`` seconds, and (3) records every attempt. A 2xx answer delivers; any
other answer, a timeout or a connection error is retried after ``retry_first`` × 2^(n-1)
seconds (capped at ``retry_max``), up to ``max_attempts`` attempts, then the delivery
fails for good. Redirects are not followed (an endpoint answers itself).

Talks to: the database, and the endpoints' URLs (set by admins). Trusts: nothing an
endpoint answers beyond its status code (the body is not read past ``MAX_BODY`` bytes,
and is not stored). Every request is signed (``kakitome.webhooks.signing``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import httpx
import structlog

from kakitome.config import Settings, WebhookSettings
from kakitome.store.database import Database
from kakitome.webhooks.signing import HEADER, sign
from kakitome.webhooks.store import DueDelivery, WebhooksStore

log = structlog.get_logger("kakitome.webhooks")

USER_AGENT = "Kakitome-Webhooks/1"
CLAIM_BATCH = 100
MAX_BODY = 64 * 1024


def backoff(settings: WebhookSettings, attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt."""
    return float(min(settings.retry_max, settings.retry_first * 2 ** max(attempts - 1, 0)))


class WebhookDispatcher:
    """Moves events to endpoints. ``run(stop)`` loops; ``run_once()`` does one round."""

    def __init__(
        self,
        store: Database,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings.webhooks
        self.store = WebhooksStore(store.engine)
        self.clock = clock
        self._client = client
        self._slots = asyncio.Semaphore(self.settings.concurrency)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.settings.timeout),
                follow_redirects=False,
                headers={"User-Agent": USER_AGENT},
                limits=httpx.Limits(max_connections=self.settings.concurrency),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def run_once(self) -> int:
        """Enqueue new events and post what is due; returns the attempts made."""
        while True:
            _, more = await self.store.pump(now=self.clock())
            if not more:
                break
        made = 0
        while True:
            lease = self.settings.timeout * 2 + 30
            due = await self.store.claim_due(now=self.clock(), limit=CLAIM_BATCH, lease=lease)
            if not due:
                return made
            await asyncio.gather(*(self._post(d) for d in due))
            made += len(due)

    async def _post(self, delivery: DueDelivery) -> None:
        async with self._slots:
            body = delivery.body.encode()
            headers = {
                "Content-Type": "application/json",
                HEADER: sign(delivery.secret, body, int(self.clock())),
                "Kakitome-Event-Id": f"evt_{delivery.event_key}",
                "Kakitome-Event-Type": delivery.event_type,
            }
            started = time.monotonic()
            status: int | None = None
            error: str | None = None
            try:
                async with self._http().stream(
                    "POST", delivery.url, content=body, headers=headers
                ) as response:
                    status = response.status_code
                    read = 0
                    async for chunk in response.aiter_bytes():
                        read += len(chunk)
                        if read >= MAX_BODY:
                            break
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            elapsed = (time.monotonic() - started) * 1000
        ok = status is not None and 200 <= status < 300
        if not ok and error is None:
            error = f"HTTP {status}"
        attempts = delivery.attempts + 1
        retry_at = None
        if not ok and attempts < self.settings.max_attempts:
            retry_at = self.clock() + backoff(self.settings, attempts)
        await self.store.record_attempt(
            delivery,
            now=self.clock(),
            status_code=status,
            duration_ms=elapsed,
            error=None if ok else error,
            delivered=ok,
            retry_at=retry_at,
        )
        if not ok:
            log.info(
                "webhook attempt failed",
                endpoint=delivery.endpoint_id,
                event_key=delivery.event_key,
                attempt=attempts,
                error=error,
                retry=retry_at is not None,
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Round after round until ``stop``; sleeps until the next due time (at most
        ``poll_interval``)."""
        try:
            while not stop.is_set():
                try:
                    await self.run_once()
                    wait = self.settings.poll_interval
                    due = await self.store.next_due()
                    if due is not None:
                        wait = max(0.05, min(wait, due - self.clock()))
                except Exception as exc:  # keep going: the database may come back
                    log.error("webhook round failed", error=f"{type(exc).__name__}: {exc}")
                    wait = self.settings.poll_interval
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait)
        finally:
            await self.aclose()


async def webhook_task(store: Database, settings: Settings, stop: asyncio.Event) -> None:
    """The worker role's webhook task (nothing when ``webhooks.enabled`` is off)."""
    if not settings.webhooks.enabled:
        return
    await WebhookDispatcher(store, settings).run(stop)
