"""Read and write transactions on the shared engine, for every store of the package.

``writing(engine, lock)`` is one write transaction: on PostgreSQL a plain ``BEGIN``; on
SQLite it first queues on the store's in-process ``asyncio.Lock`` (writers of one process
wait there, not on the file lock's threads) and begins ``IMMEDIATE`` (the write lock at
BEGIN, see ``kakitome.store.db``). ``reading(engine)`` is a read snapshot (``DEFERRED``
on SQLite: it never takes the write lock). Database failures (connection refused or lost,
disk full, locked beyond the busy timeout, pool exhausted, PostgreSQL shutting down)
become ``StorageError`` with a one-line description; the exceptions in ``keep`` (a
store's ``IntegrityError``, which it turns into its own answer) pass through.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kakitome.errors import StorageError

__all__ = ["STORAGE_ERRORS", "describe", "reading", "writing"]

STORAGE_ERRORS: tuple[type[BaseException], ...] = (
    DBAPIError,
    PoolTimeoutError,
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    sqlite3.OperationalError,  # raised by work run straight on a SQLite connection
)


def describe(exc: BaseException) -> str:
    """The driver's error in one line: its type and the first line of its text."""
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines()
    return f"{type(original).__name__}: {lines[0] if lines else ''}"


@contextlib.asynccontextmanager
async def writing(
    engine: AsyncEngine,
    lock: asyncio.Lock,
    *,
    keep: tuple[type[BaseException], ...] = (),
) -> AsyncIterator[AsyncConnection]:
    """One write transaction, committed when the block ends without an exception."""
    try:
        if engine.dialect.name == "postgresql":
            async with engine.begin() as conn:
                yield conn
        else:
            async with lock, engine.execution_options(sqlite_begin="IMMEDIATE").begin() as conn:
                yield conn
    except keep:
        raise
    except STORAGE_ERRORS as exc:
        raise StorageError(f"database did not commit: {describe(exc)}") from exc


@contextlib.asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One read transaction (a consistent snapshot on both engines)."""
    try:
        async with engine.execution_options(sqlite_begin="DEFERRED").begin() as conn:
            yield conn
    except STORAGE_ERRORS as exc:
        raise StorageError(f"database unavailable: {describe(exc)}") from exc
