"""Storage of webhooks: endpoints, the delivery queue, the attempts log, source cursors.

Tables in ``kakitome.store.schema_webhooks``. What it guarantees:

- ``pump`` turns new rows of the event sources (``events``, ``tracking_events``,
  ``subscriber_events``) into one delivery per subscribed, enabled endpoint, and moves
  the source's cursor in the same transaction with a compare-and-set: two dispatchers
  never enqueue the same rows twice (the loser's transaction is rolled back), and a crash
  between reading and enqueueing loses nothing. A delivery is unique per (endpoint,
  event key) as well.
- A cursor that does not exist yet starts at the source's newest row: history from before
  webhooks were set up is not posted. Creating an endpoint makes the cursors.
- ``claim_due`` leases due deliveries (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; the
  write lock on SQLite), so two dispatchers never post one delivery at the same time.
- ``record_attempt`` logs the attempt and moves the delivery on (delivered, retry at a
  time, or failed) in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kakitome.store.schema import deliveries, events
from kakitome.store.schema_campaigns import tracking_events
from kakitome.store.schema_lists import subscriber_events
from kakitome.store.schema_webhooks import (
    webhook_attempts,
    webhook_cursors,
    webhook_deliveries,
    webhook_endpoints,
)
from kakitome.store.transactions import reading, writing
from kakitome.webhooks.events import (
    EVENT_KINDS,
    SUBSCRIBER_KINDS,
    TRACKING_KINDS,
    WebhookEvent,
    from_event_row,
    from_subscriber_row,
    from_tracking_row,
)

__all__ = ["AttemptRecord", "DueDelivery", "EndpointRecord", "WebhooksStore"]

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
SOURCES = ("events", "tracking_events", "subscriber_events")


@dataclass(frozen=True, slots=True)
class EndpointRecord:
    id: int
    url: str
    secret: str
    events: tuple[str, ...]
    enabled: bool
    description: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class DueDelivery:
    id: int
    endpoint_id: int
    url: str
    secret: str
    event_key: str
    event_type: str
    body: str
    attempts: int


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    id: int
    delivery_id: int
    endpoint_id: int
    at: float
    status_code: int | None
    duration_ms: float
    error: str | None
    event_key: str
    event_type: str
    delivery_status: str
    attempt: int


class _Lost(Exception):
    """Another dispatcher moved the cursor first."""


class WebhooksStore:
    """The webhook tables on the engine of a ``Database``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._is_pg = engine.dialect.name == "postgresql"
        self._lock = asyncio.Lock()

    def _write(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        # IntegrityError passes: the pump reads it as another process having got there.
        return writing(self._engine, self._lock, keep=(IntegrityError,))

    def _read(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return reading(self._engine)

    def _insert(self, table: Any) -> Any:
        return postgresql.insert(table) if self._is_pg else sqlite.insert(table)

    # -- endpoints ------------------------------------------------------------------------

    async def create_endpoint(
        self, url: str, event_types: Sequence[str], *, now: float, description: str = ""
    ) -> EndpointRecord:
        """A new enabled endpoint with a fresh random secret (``whsec_…``)."""
        secret = "whsec_" + secrets.token_urlsafe(32)
        async with self._write() as conn:
            await self._history_ends_now(conn, now)
            new_id = (
                await conn.execute(
                    insert(webhook_endpoints)
                    .values(
                        url=url,
                        secret=secret,
                        events=list(event_types),
                        enabled=True,
                        description=description[:200],
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(webhook_endpoints.c.id)
                )
            ).scalar_one()
        found = await self.get_endpoint(int(new_id))
        assert found is not None
        return found

    async def list_endpoints(self, *, enabled_only: bool = False) -> list[EndpointRecord]:
        statement = select(webhook_endpoints).order_by(webhook_endpoints.c.id)
        if enabled_only:
            statement = statement.where(webhook_endpoints.c.enabled.is_(True))
        async with self._read() as conn:
            return [_endpoint(r) for r in await conn.execute(statement)]

    async def get_endpoint(self, endpoint_id: int) -> EndpointRecord | None:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
                )
            ).first()
        return None if row is None else _endpoint(row)

    async def update_endpoint(
        self,
        endpoint_id: int,
        *,
        now: float,
        url: str | None = None,
        event_types: Sequence[str] | None = None,
        enabled: bool | None = None,
        description: str | None = None,
    ) -> bool:
        """Change what is given; False when there is no such endpoint."""
        values: dict[str, Any] = {"updated_at": now}
        if description is not None:
            values["description"] = description[:200]
        if url is not None:
            values["url"] = url
        if event_types is not None:
            values["events"] = list(event_types)
        if enabled is not None:
            values["enabled"] = enabled
        async with self._write() as conn:
            if enabled:
                await self._history_ends_now(conn, now)
            result = await conn.execute(
                update(webhook_endpoints)
                .where(webhook_endpoints.c.id == endpoint_id)
                .values(**values)
            )
        return bool(result.rowcount)

    async def remove_endpoint(self, endpoint_id: int) -> bool:
        """Remove an endpoint with its deliveries and log."""
        async with self._write() as conn:
            ids = select(webhook_deliveries.c.id).where(
                webhook_deliveries.c.endpoint_id == endpoint_id
            )
            await conn.execute(
                delete(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(ids))
            )
            await conn.execute(
                delete(webhook_deliveries).where(webhook_deliveries.c.endpoint_id == endpoint_id)
            )
            result = await conn.execute(
                delete(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
            )
        return bool(result.rowcount)

    # -- from events to deliveries --------------------------------------------------------

    async def _ensure_cursors(self, conn: AsyncConnection, now: float) -> dict[str, int]:
        rows = await conn.execute(select(webhook_cursors))
        cursors = {r.name: int(r.last_id) for r in rows}
        for name in SOURCES:
            if name not in cursors:
                newest = int(await conn.scalar(select(func.max(_source_table(name).c.id))) or 0)
                await conn.execute(
                    self._insert(webhook_cursors)
                    .values(name=name, last_id=newest, updated_at=now)
                    .on_conflict_do_nothing(index_elements=["name"])
                )
                cursors[name] = newest
        return cursors

    async def _history_ends_now(self, conn: AsyncConnection, now: float) -> None:
        """Before an endpoint is created or enabled: when none was enabled, what happened
        so far is history that nobody subscribed to, so the cursors move to the newest
        rows. (While no endpoint is enabled, ``pump`` only reads: the cursors stand still
        and the write lock stays free for the queue.)"""
        enabled = await conn.scalar(
            select(func.count()).select_from(webhook_endpoints).where(
                webhook_endpoints.c.enabled.is_(True)
            )
        )
        if enabled:
            return
        cursors = await self._ensure_cursors(conn, now)
        for name in SOURCES:
            newest = int(await conn.scalar(select(func.max(_source_table(name).c.id))) or 0)
            if newest > cursors[name]:
                await self._move(conn, name, cursors[name], newest, now)

    async def pump(self, *, now: float, limit: int = 500) -> tuple[int, bool]:
        """Enqueue deliveries for up to ``limit`` new rows of each source.
        Returns (deliveries enqueued, whether more rows are waiting)."""
        async with self._read() as conn:
            enabled = await conn.scalar(
                select(webhook_endpoints.c.id).where(webhook_endpoints.c.enabled.is_(True)).limit(1)
            )
        if enabled is None:
            return 0, False  # nothing to send to (see _history_ends_now)
        total, more = 0, False
        for name in SOURCES:
            try:
                added, waiting = await self._pump_source(name, now=now, limit=limit)
            except (_Lost, IntegrityError):
                added, waiting = 0, True
            total += added
            more = more or waiting
        return total, more

    async def _pump_source(self, name: str, *, now: float, limit: int) -> tuple[int, bool]:
        async with self._write() as conn:
            cursors = await self._ensure_cursors(conn, now)
            start = cursors[name]
            endpoints = [
                _endpoint(r)
                for r in await conn.execute(
                    select(webhook_endpoints).where(webhook_endpoints.c.enabled.is_(True))
                )
            ]
            if not endpoints:
                table = _source_table(name)
                newest = int(await conn.scalar(select(func.max(table.c.id))) or 0)
                if newest > start:
                    await self._move(conn, name, start, newest, now)
                return 0, False
            found, last_id, count = await self._read_source(conn, name, start, limit)
            if last_id == start:
                return 0, False
            rows = [
                {
                    "endpoint_id": endpoint.id,
                    "event_key": event.key,
                    "event_type": event.type,
                    "body": event.body(),
                    "status": PENDING,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for event in found
                for endpoint in endpoints
                if event.type in endpoint.events
            ]
            await self._move(conn, name, start, last_id, now)
            if rows:
                await conn.execute(
                    self._insert(webhook_deliveries).on_conflict_do_nothing(
                        index_elements=["endpoint_id", "event_key"]
                    ),
                    rows,
                )
            return len(rows), count >= limit

    async def _move(
        self, conn: AsyncConnection, name: str, start: int, last_id: int, now: float
    ) -> None:
        moved = await conn.execute(
            update(webhook_cursors)
            .where(webhook_cursors.c.name == name, webhook_cursors.c.last_id == start)
            .values(last_id=last_id, updated_at=now)
        )
        if not moved.rowcount:
            raise _Lost

    async def _read_source(
        self, conn: AsyncConnection, name: str, start: int, limit: int
    ) -> tuple[list[WebhookEvent], int, int]:
        """The webhook events of the rows after ``start`` (at most ``limit`` rows), the
        last row id read (``start`` when there was none) and the number of rows read."""
        found: list[WebhookEvent] = []
        last_id = start
        count = 0
        if name == "events":
            e, d = events, deliveries
            statement = (
                select(e.c.id, e.c.at, e.c.kind, e.c.message_id, e.c.delivery_id, e.c.data)
                .where(e.c.id > start)
                .order_by(e.c.id)
                .limit(limit)
            )
            rows = (await conn.execute(statement)).all()
            wanted = [r.delivery_id for r in rows if r.kind in EVENT_KINDS and r.delivery_id]
            recipients: dict[int, str] = {}
            if wanted:
                recipients = {
                    int(r.id): str(r.recipient)
                    for r in await conn.execute(
                        select(d.c.id, d.c.recipient).where(d.c.id.in_(wanted))
                    )
                }
            for r in rows:
                last_id, count = int(r.id), count + 1
                recipient = recipients.get(int(r.delivery_id)) if r.delivery_id else None
                found += from_event_row(
                    int(r.id), r.kind, r.at, r.message_id, r.delivery_id, r.data, recipient
                )
        elif name == "tracking_events":
            t = tracking_events
            statement = select(t).where(t.c.id > start).order_by(t.c.id).limit(limit)
            for r in await conn.execute(statement):
                last_id, count = int(r.id), count + 1
                if r.kind in TRACKING_KINDS:
                    found += from_tracking_row(
                        int(r.id), r.kind, r.at, r.ref, int(r.subscriber_id), r.url
                    )
        else:
            s = subscriber_events
            statement = select(s).where(s.c.id > start).order_by(s.c.id).limit(limit)
            for r in await conn.execute(statement):
                last_id, count = int(r.id), count + 1
                if r.kind in SUBSCRIBER_KINDS:
                    found += from_subscriber_row(
                        int(r.id), r.kind, r.at, int(r.subscriber_id), r.list_id, r.detail
                    )
        return found, last_id, count

    # -- posting --------------------------------------------------------------------------

    async def claim_due(self, *, now: float, limit: int, lease: float) -> list[DueDelivery]:
        """Lease up to ``limit`` due pending deliveries for ``lease`` seconds."""
        w, ep = webhook_deliveries, webhook_endpoints
        async with self._write() as conn:
            statement = (
                select(w.c.id)
                .where(
                    w.c.status == PENDING,
                    w.c.next_attempt_at <= now,
                    (w.c.lease_until.is_(None)) | (w.c.lease_until < now),
                )
                .order_by(w.c.next_attempt_at, w.c.id)
                .limit(limit)
            )
            if self._is_pg:
                statement = statement.with_for_update(skip_locked=True)
            ids = [int(r.id) for r in await conn.execute(statement)]
            if not ids:
                return []
            await conn.execute(update(w).where(w.c.id.in_(ids)).values(lease_until=now + lease))
            rows = await conn.execute(
                select(
                    w.c.id,
                    w.c.endpoint_id,
                    ep.c.url,
                    ep.c.secret,
                    w.c.event_key,
                    w.c.event_type,
                    w.c.body,
                    w.c.attempts,
                )
                .select_from(w.join(ep, ep.c.id == w.c.endpoint_id))
                .where(w.c.id.in_(ids))
                .order_by(w.c.id)
            )
            return [
                DueDelivery(
                    int(r.id),
                    int(r.endpoint_id),
                    r.url,
                    r.secret,
                    r.event_key,
                    r.event_type,
                    r.body,
                    int(r.attempts),
                )
                for r in rows
            ]

    async def record_attempt(
        self,
        delivery: DueDelivery,
        *,
        now: float,
        status_code: int | None,
        duration_ms: float,
        error: str | None,
        delivered: bool,
        retry_at: float | None,
    ) -> None:
        """Log one POST; the delivery becomes delivered, waits until ``retry_at``, or
        (neither) failed for good."""
        status = DELIVERED if delivered else (PENDING if retry_at is not None else FAILED)
        async with self._write() as conn:
            await conn.execute(
                insert(webhook_attempts).values(
                    delivery_id=delivery.id,
                    endpoint_id=delivery.endpoint_id,
                    at=now,
                    status_code=status_code,
                    duration_ms=round(duration_ms, 1),
                    error=None if error is None else error[:500],
                )
            )
            await conn.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id == delivery.id)
                .values(
                    status=status,
                    attempts=delivery.attempts + 1,
                    next_attempt_at=retry_at if retry_at is not None else now,
                    lease_until=None,
                    updated_at=now,
                )
            )

    async def next_due(self) -> float | None:
        """When the next pending delivery is due (None: nothing pending)."""
        w = webhook_deliveries
        async with self._read() as conn:
            value = await conn.scalar(
                select(func.min(w.c.next_attempt_at)).where(w.c.status == PENDING)
            )
        return None if value is None else float(value)

    # -- the log --------------------------------------------------------------------------

    async def attempts(
        self, *, endpoint_id: int | None = None, limit: int = 50, before: int | None = None
    ) -> list[AttemptRecord]:
        """The last ``limit`` attempts (of one endpoint), newest first; ``before``: only
        attempts with a smaller id (the next page after an attempt id)."""
        a, w = webhook_attempts, webhook_deliveries
        statement = (
            select(
                a.c.id,
                a.c.delivery_id,
                a.c.endpoint_id,
                a.c.at,
                a.c.status_code,
                a.c.duration_ms,
                a.c.error,
                w.c.event_key,
                w.c.event_type,
                w.c.status,
            )
            .select_from(a.join(w, w.c.id == a.c.delivery_id))
            .order_by(a.c.id.desc())
            .limit(limit)
        )
        if endpoint_id is not None:
            statement = statement.where(a.c.endpoint_id == endpoint_id)
        if before is not None:
            statement = statement.where(a.c.id < before)
        async with self._read() as conn:
            rows = (await conn.execute(statement)).all()
            numbers = await self._attempt_numbers(conn, [int(r.id) for r in rows])
        return [
            AttemptRecord(
                int(r.id),
                int(r.delivery_id),
                int(r.endpoint_id),
                float(r.at),
                r.status_code,
                float(r.duration_ms),
                r.error,
                r.event_key,
                r.event_type,
                r.status,
                numbers.get(int(r.id), 1),
            )
            for r in rows
        ]

    async def _attempt_numbers(self, conn: AsyncConnection, ids: list[int]) -> dict[int, int]:
        """Which attempt of its delivery each attempt was (1, 2, ...)."""
        if not ids:
            return {}
        a, b = webhook_attempts, webhook_attempts.alias("b")
        statement = (
            select(a.c.id, func.count(b.c.id).label("n"))
            .select_from(a.join(b, (b.c.delivery_id == a.c.delivery_id) & (b.c.id <= a.c.id)))
            .where(a.c.id.in_(ids))
            .group_by(a.c.id)
        )
        return {int(r.id): int(r.n) for r in await conn.execute(statement)}

    async def delivery_counts(self) -> dict[str, int]:
        w = webhook_deliveries
        async with self._read() as conn:
            rows = await conn.execute(select(w.c.status, func.count()).group_by(w.c.status))
            return {str(status): int(n) for status, n in rows}


def _source_table(name: str) -> Any:
    return {"events": events, "tracking_events": tracking_events}.get(name, subscriber_events)


def _endpoint(row: Any) -> EndpointRecord:
    kinds = row.events
    if isinstance(kinds, str):
        kinds = json.loads(kinds)
    return EndpointRecord(
        int(row.id),
        row.url,
        row.secret,
        tuple(kinds or ()),
        bool(row.enabled),
        row.description or "",
        float(row.created_at),
        float(row.updated_at),
    )
