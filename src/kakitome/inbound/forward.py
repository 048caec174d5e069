"""Forward routed inbound mail to HTTP endpoints, signed, with retries.

Talks to: the ``url`` of each ``forward`` route (``inbound.routes``), by HTTPS or HTTP POST
of the message as received (``Content-Type: message/rfc822``), plus our trace fields.
Trusts: only a 2xx reply as "taken". Limits: one POST at a time per process,
``inbound.forward_timeout`` each; retries back off from one minute, doubling, up to
``inbound.forward_attempts`` attempts, then the message is marked ``failed`` (kept).
Routes and attempts are read at each round from ``current()`` when given (settings
changed at run time), else from the settings given at start.

Signature (so the endpoint can tell the POST is ours and fresh):
``Kakitome-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``, and
``Kakitome-Inbound-Id`` names the stored message. Endpoints should refuse signatures older
than a few minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import Callable

import httpx
import structlog

from kakitome.config import InboundRoute, InboundSettings
from kakitome.errors import StorageError
from kakitome.inbound.store import InboundRow, InboundStore

__all__ = ["Forwarder", "sign_body", "verify_signature"]

log = structlog.get_logger("kakitome.inbound.forward")

FIRST_RETRY = 60.0
MAX_RETRY = 3600.0
POLL = 5.0


def sign_body(secret: bytes, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: bytes, body: bytes, header: str, *, now: float, tolerance: float = 300.0
) -> bool:
    """The check an endpoint makes (also used by our tests)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign_body(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


class Forwarder:
    def __init__(
        self,
        store: InboundStore,
        settings: InboundSettings,
        *,
        clock: Callable[[], float] = time.time,
        client: httpx.AsyncClient | None = None,
        current: Callable[[], InboundSettings] | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._client = client
        self._current = current
        self._routes = {r.match: r for r in settings.routes if r.action == "forward"}

    def _refresh(self) -> None:
        if self._current is not None:
            settings = self._current()
            if settings is not self._settings:
                self._settings = settings
                self._routes = {r.match: r for r in settings.routes if r.action == "forward"}

    async def run(self, stop: asyncio.Event) -> None:
        """Forward what is due until ``stop``."""
        if not self._routes and self._current is None:
            await stop.wait()
            return
        while not stop.is_set():
            with contextlib.suppress(StorageError):
                await self.run_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL)

    async def run_once(self) -> int:
        self._refresh()
        if not self._routes:
            return 0
        due = await self._store.due_forwards(now=self._clock())
        if not due:
            return 0
        async with contextlib.AsyncExitStack() as stack:
            client = self._client
            if client is None:
                client = await stack.enter_async_context(
                    httpx.AsyncClient(
                        timeout=self._settings.forward_timeout, follow_redirects=False
                    )
                )
            for row in due:
                await self._forward(client, row)
        return len(due)

    async def _forward(self, client: httpx.AsyncClient, row: InboundRow) -> None:
        route: InboundRoute | None = self._routes.get(row.route or "")
        now = self._clock()
        if route is None or not route.url:
            await self._store.forward_result(
                row.id,
                status="failed",
                now=now,
                next_attempt_at=None,
                detail={"error": f"no forward route {row.route!r}"},
            )
            return
        secret = route.secret.get_secret_value().encode() if route.secret else b""
        headers = {
            "Content-Type": "message/rfc822",
            "Kakitome-Inbound-Id": row.id,
            "Kakitome-Signature": sign_body(secret, row.content, int(now)),
        }
        error: str | None = None
        try:
            response = await client.post(route.url, content=row.content, headers=headers)
            if 200 <= response.status_code < 300:
                await self._store.forward_result(
                    row.id, status="forwarded", now=now, next_attempt_at=None
                )
                return
            error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        attempts = row.attempts + 1
        if attempts >= self._settings.forward_attempts:
            await self._store.forward_result(
                row.id, status="failed", now=now, next_attempt_at=None, detail={"error": error}
            )
            log.warning("forwarding gave up", inbound_id=row.id, error=error)
            return
        delay = min(MAX_RETRY, FIRST_RETRY * 2 ** (attempts - 1))
        await self._store.forward_result(
            row.id, status="forward", now=now, next_attempt_at=now + delay, detail={"error": error}
        )
