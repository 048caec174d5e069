"""Shaping state in the database: connection slots and budgets per destination site,
shared by every worker process (kakitome.delivery.shaping.ShapingState).

``ShapingStore(store)`` works on the main store's engine, on PostgreSQL (the scale-out
engine: slots are picked with ``FOR UPDATE SKIP LOCKED``, so workers on many machines take
different slots without waiting on each other) and on SQLite (one writer; in-process
state is enough there, but the same code works). Each method is one short transaction and
raises ``StorageError`` when the database cannot do it.

Slots: a site has slots 0, 1, 2 ... ; a worker may take slot ``i`` only while ``i`` is
below the site's current connection limit and the slot is free or its lease ran out. So
however many workers there are, at most ``limit`` slots are held at once (after a limit
is lowered, slots above it drain as their connections close). Leases are renewed by live
workers (``renew``) and released on a graceful stop (``release_all``); a dead worker's
slots come back after ``shaping.slot_lease`` seconds.

Budgets: ``site_state`` holds the slow-start window (grown by successes outside a
cool-down, halved once per cool-down on 421 / 4.7.x) and a per-minute message counter
(fixed windows of 60 seconds starting at the first message of each).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import case, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection

from kakitome.errors import StorageError
from kakitome.store.database import Database
from kakitome.store.schema_scale import site_slots, site_state

_ERRORS: tuple[type[BaseException], ...] = (
    DBAPIError,
    PoolTimeoutError,
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)

_PICK = """
    SELECT slot FROM site_slots
    WHERE site = :site AND slot < :limit AND (owner IS NULL OR lease_until <= :now)
    ORDER BY slot LIMIT 1
"""
_TAKE_PG = text(
    f"""
    UPDATE site_slots SET owner = :owner, lease_until = :until
    WHERE site = :site AND slot = ({_PICK} FOR UPDATE SKIP LOCKED)
    RETURNING slot
    """
)
_TAKE_SQLITE = text(
    f"""
    UPDATE site_slots SET owner = :owner, lease_until = :until
    WHERE site = :site AND slot = ({_PICK})
    RETURNING slot
    """
)

RATE_WINDOW = 60.0


class ShapingStore:
    """``ShapingState`` on the database of ``store``; safe to share between tasks."""

    def __init__(self, store: Database) -> None:
        self._store = store
        self._engine = store.engine
        self._writer = store.engine.execution_options(sqlite_begin="IMMEDIATE")
        self._is_pg = store.dialect == "postgresql"
        # Slots known to exist per site (rows are made once, up to the largest limit seen).
        self._made: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        # On SQLite, queue behind the store's in-process write lock (see CampaignStore).
        lock = None if self._is_pg else getattr(self._store, "_write_lock", None)
        try:
            async with contextlib.AsyncExitStack() as stack:
                if isinstance(lock, asyncio.Lock):
                    await stack.enter_async_context(lock)
                conn = await stack.enter_async_context(self._writer.begin())
                yield conn
        except _ERRORS as exc:
            raise StorageError(f"shaping state: {type(exc).__name__}: {exc}") from exc

    def _upsert_ignore(self, table: Any) -> Any:
        dialect = postgresql if self._is_pg else sqlite
        return dialect.insert(table).on_conflict_do_nothing()

    # -- connection slots ---------------------------------------------------------------

    async def acquire_slot(
        self, site: str, limit: int, owner: str, *, now: float, lease: float
    ) -> int | None:
        """Take a free slot below ``limit`` for ``owner``; None when all are taken."""
        async with self._write() as conn:
            if self._made.get(site, 0) < limit:
                await conn.execute(
                    self._upsert_ignore(site_slots),
                    [{"site": site, "slot": i} for i in range(limit)],
                )
            params = {
                "site": site,
                "limit": limit,
                "now": now,
                "owner": owner,
                "until": now + lease,
            }
            slot = (await conn.execute(_TAKE_PG if self._is_pg else _TAKE_SQLITE, params)).scalar()
        self._made[site] = max(self._made.get(site, 0), limit)
        return None if slot is None else int(slot)

    async def release_slot(self, site: str, slot: int, owner: str) -> None:
        async with self._write() as conn:
            await conn.execute(
                update(site_slots)
                .where(
                    site_slots.c.site == site,
                    site_slots.c.slot == slot,
                    site_slots.c.owner == owner,
                )
                .values(owner=None, lease_until=None)
            )

    async def renew(self, owner: str, *, now: float, lease: float) -> int:
        """Extend every slot lease of ``owner``; returns how many it holds."""
        async with self._write() as conn:
            result = await conn.execute(
                update(site_slots)
                .where(site_slots.c.owner == owner)
                .values(lease_until=now + lease)
            )
        return int(result.rowcount)

    async def release_all(self, owner: str) -> int:
        async with self._write() as conn:
            result = await conn.execute(
                update(site_slots)
                .where(site_slots.c.owner == owner)
                .values(owner=None, lease_until=None)
            )
        return int(result.rowcount)

    async def held(self, site: str, *, now: float) -> int:
        """Slots of the site held under a live lease (for metrics and tests)."""
        async with self._write() as conn:
            rows = await conn.execute(
                select(site_slots.c.slot).where(
                    site_slots.c.site == site,
                    site_slots.c.owner.is_not(None),
                    site_slots.c.lease_until > now,
                )
            )
            return len(rows.all())

    # -- budgets ------------------------------------------------------------------------

    async def window(self, site: str, *, initial: float, now: float) -> tuple[float, float]:
        """(connection window, end of the cool-down) of the site; made at ``initial``."""
        async with self._write() as conn:
            row = (
                await conn.execute(
                    select(site_state.c.window, site_state.c.cooldown_until).where(
                        site_state.c.site == site
                    )
                )
            ).first()
            if row is None:
                await conn.execute(
                    self._upsert_ignore(site_state),
                    [{"site": site, "window": initial, "updated_at": now}],
                )
                return initial, 0.0
            return float(row.window), float(row.cooldown_until)

    async def grow(self, site: str, by: float, *, limit: float, now: float) -> None:
        """Slow start: the window grows by ``by`` up to ``limit``, unless cooling down."""
        grown = site_state.c.window + by
        async with self._write() as conn:
            await conn.execute(
                update(site_state)
                .where(site_state.c.site == site, site_state.c.cooldown_until <= now)
                .values(window=case((grown > limit, limit), else_=grown), updated_at=now)
            )

    async def back_off(self, site: str, *, now: float, cooldown: float) -> bool:
        """Halve the window (not below 1) and start a cool-down; once per cool-down.
        True when this call did it."""
        half = site_state.c.window / 2
        async with self._write() as conn:
            result = await conn.execute(
                update(site_state)
                .where(site_state.c.site == site, site_state.c.cooldown_until <= now)
                .values(
                    window=case((half < 1, 1.0), else_=half),
                    cooldown_until=now + cooldown,
                    updated_at=now,
                )
            )
        return bool(result.rowcount)

    async def take_tokens(
        self, site: str, wanted: int, *, per_minute: int, now: float
    ) -> tuple[int, float]:
        """Take up to ``wanted`` messages of the site's per-minute budget: (granted, end of
        the current minute window). Granted 0 means wait until that time."""
        async with self._write() as conn:
            statement = select(site_state.c.rate_window, site_state.c.rate_used).where(
                site_state.c.site == site
            )
            if self._is_pg:
                statement = statement.with_for_update()
            row = (await conn.execute(statement)).first()
            if row is None:
                await conn.execute(
                    self._upsert_ignore(site_state),
                    [{"site": site, "window": 1.0, "updated_at": now}],
                )
                start, used = 0.0, 0
            else:
                start, used = float(row.rate_window), int(row.rate_used)
            if start + RATE_WINDOW <= now:
                start, used = now, 0
            granted = max(0, min(wanted, per_minute - used))
            await conn.execute(
                update(site_state)
                .where(site_state.c.site == site)
                .values(rate_window=start, rate_used=used + granted)
            )
        return granted, start + RATE_WINDOW


__all__ = ["RATE_WINDOW", "ShapingStore"]
