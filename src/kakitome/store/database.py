"""The database handle: the engine every part's store shares, its transactions and wake-ups.

``Database`` is what ``Database.open(url)`` returns and what every store class of the parts
is built on (the queue's ``QueueStore``, ``ApiKeyStore``, ``CampaignStore``, ...). It owns:

- the engine (``open`` connects, sets SQLite's pragmas and migrates; ``close`` disposes);
- the write and read transaction helpers (``write``, ``read``) and the SQLite write path
  that runs a whole transaction as one function on the connection (``write_sqlite``);
- the in-process write lock: on SQLite every writer of this process queues on it before
  it takes SQLite's lock (``kakitome.store.transactions``), so there is one per database,
  not one per store class;
- wake-ups: the in-process event ``wait_for_work`` waits on, the listeners told after a
  commit of new work (``add_wake_listener``, ``work_committed``, ``wake``), and PostgreSQL's
  ``LISTEN/NOTIFY`` on channel ``kakitome_queue`` (``notify`` inside a transaction).

It knows nothing of what the tables mean: the queue's rules and statements are in
``kakitome.queue.store``, the API keys in ``kakitome.accounts.api_keys``.

Why the name ``Database`` and not a store: it stores nothing itself. It is the handle to
one database (the URL, the connection pool, the lock and the wake channel that go with
it), opened once per process and passed to the stores; calling it ``Store`` is what let
the queue, the API keys and the engine grow into one 1,300-line class.

Limits: SQLite has one writer at a time; writers in this process queue on the lock,
writers in other processes on the file lock (``kakitome.store.write_lock``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kakitome.errors import ConfigError, StorageError
from kakitome.store import db
from kakitome.store.migrate import upgrade_to_head
from kakitome.store.sqlite_thread import write_transaction
from kakitome.store.transactions import STORAGE_ERRORS, describe, reading, writing

__all__ = ["NOTIFY_CHANNEL", "Database"]

log = logging.getLogger(__name__)

# PostgreSQL channel on which commits of new or newly due work wake the workers.
NOTIFY_CHANNEL = "kakitome_queue"
_NOTIFY = text(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')")

T = TypeVar("T")


class Database:
    """One database (SQLite or PostgreSQL): engine, transactions, write lock, wake-ups.

    Open with ``await Database.open(url)``; close with ``await database.close()``. Safe to
    share between tasks of one event loop.
    """

    def __init__(self, engine: AsyncEngine, url: str) -> None:
        self._engine = engine
        self._url = url
        self._dialect = engine.dialect.name
        self._is_pg = self._dialect == "postgresql"
        # On SQLite, writes take the write lock at BEGIN (see db.py) and queue here first,
        # so tasks of this process wait on an asyncio lock (kakitome.store.transactions).
        self._write_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        # Called when this process committed new work (SQLite: how serve tells its worker
        # children, which share no event with it; PostgreSQL has NOTIFY).
        self._wake_listeners: list[Callable[[], None]] = []
        self._listener: Any = None  # asyncpg.Connection LISTENing, PostgreSQL only
        self._listener_failed_at = 0.0

    # -- life cycle ---------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        pool_size: int = 10,
        migrate: bool = True,
        busy_timeout_ms: int = db.DEFAULT_BUSY_TIMEOUT_MS,
    ) -> Database:
        """Connect (sqlite:///path or postgresql://...), set SQLite WAL pragmas, and run
        Alembic migrations to head when ``migrate``. Creates the SQLite file's folder.

        Raises ConfigError for an unsupported URL, StorageError when the database cannot
        be reached or created."""
        try:
            engine = db.create_engine(url, pool_size=pool_size, busy_timeout_ms=busy_timeout_ms)
        except ConfigError:
            raise
        except OSError as exc:
            raise StorageError(f"cannot create the database folder: {exc}") from exc
        database = cls(engine, url)
        try:
            async with database.write() as conn:
                if migrate:
                    await conn.run_sync(upgrade_to_head)
                else:
                    await conn.execute(text("SELECT 1"))
        except BaseException:
            await engine.dispose()
            raise
        return database

    async def close(self) -> None:
        if self._listener is not None:
            listener, self._listener = self._listener, None
            with contextlib.suppress(Exception):
                await listener.close(timeout=2)
        await self._engine.dispose()

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._dialect

    @property
    def is_postgresql(self) -> bool:
        return self._is_pg

    @property
    def engine(self) -> AsyncEngine:
        """The engine, for the stores of the parts (not for callers)."""
        return self._engine

    @property
    def write_lock(self) -> asyncio.Lock:
        """The in-process write lock every SQLite writer of this process queues on."""
        return self._write_lock

    # -- transactions -------------------------------------------------------------------

    def write(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """One write transaction; DB failures become StorageError."""
        return writing(self._engine, self._write_lock)

    async def write_sqlite(
        self, work: Callable[[sqlite3.Connection], T], *, delivery: bool = False
    ) -> T:
        """SQLite: ``work`` as one write transaction run straight on the connection (the
        write lock held only while SQLite works; kakitome.store.sqlite_thread);
        ``delivery``: the worker's claims and results, which other writers let go first
        (kakitome.store.write_lock)."""
        try:
            async with self._write_lock:
                return await write_transaction(self._engine, work, priority=delivery)
        except STORAGE_ERRORS as exc:
            raise StorageError(f"database did not commit: {describe(exc)}") from exc

    def read(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """One read transaction (a consistent snapshot on both engines)."""
        return reading(self._engine)

    # -- wake-ups -----------------------------------------------------------------------

    async def notify(self, conn: AsyncConnection) -> None:
        """Wake LISTENing workers when this transaction commits (PostgreSQL only)."""
        if self._is_pg:
            await conn.execute(_NOTIFY)

    def wake(self) -> None:
        """New work may be due (told by another process): wake ``wait_for_work``."""
        self._wake.set()

    def add_wake_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (in the event loop, must not block) after each commit of new
        or newly due work by this process."""
        self._wake_listeners.append(listener)

    def work_committed(self) -> None:
        """New or newly due work was committed (by this process, or another process of
        ours told us so): wake this process's worker and whatever listens here (a web
        child told its parent, see runtime)."""
        self._wake.set()
        for listener in self._wake_listeners:
            try:
                listener()
            except Exception:  # a listener's trouble must not fail a committed write
                log.exception("wake listener failed")

    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109 (agreed hook)
        """Return when new work may be due (an inject, a release, a retry) or after
        ``timeout`` seconds, whichever is first. Never raises for a lost listener: it
        falls back to sleeping and listens again on a later call."""
        if self._is_pg and self._listener is None:
            await self._listen()
        if not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        # After a failure, try again at most every few seconds; sleep-polling meanwhile.
        if loop.time() - self._listener_failed_at < 5.0 and self._listener_failed_at:
            return
        try:
            dsn = db.asyncpg_dsn(db.parse_database_url(self._url))
            listener = await asyncpg.connect(dsn, timeout=5)
            await listener.add_listener(NOTIFY_CHANNEL, self._on_notify)
            listener.add_termination_listener(self._on_listener_lost)
        except STORAGE_ERRORS:  # TimeoutError is an OSError
            self._listener_failed_at = loop.time()
            return
        self._listener = listener

    def _on_notify(self, *_args: Any) -> None:
        self._wake.set()

    def _on_listener_lost(self, *_args: Any) -> None:
        self._listener = None
        self._wake.set()  # something changed: let the worker look at the queue
