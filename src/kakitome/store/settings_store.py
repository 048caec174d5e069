"""Storage of the settings overlay: the rows of ``settings_overlay`` (schema_settings).

This module stores what it is given; which keys may be stored and whether a value is
valid is decided before, by ``kakitome.settings_overlay``. ``change`` sets and removes
keys in one transaction, so a form that changes several keys is saved whole or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kakitome.store.schema_settings import settings_overlay
from kakitome.store.transactions import reading, writing

__all__ = ["OverlayEntry", "SettingsStore"]


@dataclass(frozen=True, slots=True)
class OverlayEntry:
    key: str
    value: Any
    updated_at: float
    updated_by: str


class SettingsStore:
    """The overlay table on the engine of a ``Database``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._is_pg = engine.dialect.name == "postgresql"
        self._lock = asyncio.Lock()

    def _write(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return writing(self._engine, self._lock)

    async def entries(self) -> dict[str, OverlayEntry]:
        """Every stored key with its value and who changed it when."""
        async with reading(self._engine) as conn:
            rows = (await conn.execute(select(settings_overlay))).all()
        return {
            row.key: OverlayEntry(row.key, row.value, row.updated_at, row.updated_by)
            for row in rows
        }

    async def values(self) -> dict[str, Any]:
        """``{"section.key": value}`` of every stored key."""
        return {key: entry.value for key, entry in (await self.entries()).items()}

    async def change(
        self,
        values: Mapping[str, Any],
        remove: Iterable[str] = (),
        *,
        now: float,
        by: str = "",
    ) -> None:
        """Store ``values`` (replacing earlier ones) and remove the keys in ``remove``, in
        one transaction."""
        gone = [key for key in remove if key not in values]
        async with self._write() as conn:
            for key, value in values.items():
                insert = postgresql.insert if self._is_pg else sqlite.insert
                statement = insert(settings_overlay).values(
                    key=key, value=value, updated_at=now, updated_by=by[:200]
                )
                await conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=[settings_overlay.c.key],
                        set_={
                            "value": statement.excluded.value,
                            "updated_at": statement.excluded.updated_at,
                            "updated_by": statement.excluded.updated_by,
                        },
                    )
                )
            if gone:
                await conn.execute(delete(settings_overlay).where(settings_overlay.c.key.in_(gone)))
