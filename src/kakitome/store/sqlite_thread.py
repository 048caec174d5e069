"""SQLite transactions whose statements run in one piece, not one await each.

aiosqlite gives every connection a thread; each statement awaited through SQLAlchemy is a
round trip to it and back through the event loop. Inside a write transaction every such
trip keeps SQLite's write lock (and ``kakitome.store.write_lock``) held while the loop
runs other tasks: in a worker with hundreds of SMTP sessions that was several
milliseconds per statement, and web processes waited for it. The queue's hot transactions
therefore run their statements as one plain function.

``in_connection_thread`` runs a function inside a transaction the caller opened through
the engine. ``write_transaction`` goes further for the hottest writers (inject, claim,
record results, TLS-RPT counts): the file write lock is taken on the event loop (its
waits happen on a thread), then ``BEGIN IMMEDIATE``, the function and ``COMMIT`` run right
there, without a trip to the thread, and the lock is let go at once. Such a transaction
takes a few milliseconds of SQLite's time plus one fsync: 0.1-2 ms on SSDs, when the
event loop may as well wait for it; where COMMIT takes longer than ``SLOW_COMMIT`` on
average (a spinning disk, a network volume), it goes to the driver's thread instead.
Run on the driver's thread, each row of an ``executemany`` and the return from COMMIT
waited for the busy event loop to hand over the GIL (which C calls such as parsing a
request body hold for milliseconds), and the lock was held several times as long while
other processes waited for it.

The function gets the ``sqlite3.Connection``; it must not commit, roll back or keep the
connection. ``in_connection_thread`` uses aiosqlite's internal queue
(``Connection._execute``), the one its public methods use; ``write_transaction`` uses its
connection from the event loop's thread, which SQLAlchemy allows by opening it with
``check_same_thread=False``, while nothing else uses it (it is checked out of the pool
and idle).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kakitome.store.write_lock import WriteLock

__all__ = ["in_connection_thread", "write_transaction"]

T = TypeVar("T")


async def in_connection_thread(
    conn: AsyncConnection, work: Callable[[sqlite3.Connection], T]
) -> T:
    """``work(sqlite3_connection)`` on the thread of ``conn``'s aiosqlite connection."""
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection  # aiosqlite.Connection
    result: T = await driver._execute(work, driver._conn)
    return result


async def write_transaction(
    engine: AsyncEngine, work: Callable[[sqlite3.Connection], T], *, priority: bool = False
) -> T:
    """``work(sqlite3_connection)`` in a write transaction of its own, committed when it
    returns and rolled back when it raises; see the module's docstring. ``priority``:
    a delivery writer, which other writers let go first (kakitome.store.write_lock)."""
    async with engine.connect() as conn:  # the driver is in autocommit: nothing begun
        raw = await conn.get_raw_connection()
        lock: WriteLock | None = raw.info.get("write_lock")
        driver: Any = raw.driver_connection
        db: sqlite3.Connection = driver._conn
        if lock is not None:
            await lock.acquire(priority=priority)
        committing: asyncio.Future[float] | None = None
        try:
            if not _begin_now(db, lock.busy_timeout_ms if lock is not None else None):
                # Someone outside our lock holds SQLite's (the sqlite3 shell, a migration):
                # wait for it with the busy timeout, off the event loop.
                await asyncio.shield(driver._execute(db.execute, "BEGIN IMMEDIATE"))
            result = work(db)
            if _COMMITS.slow:
                committing = asyncio.ensure_future(driver._execute(_timed_commit, db))
                took = await asyncio.shield(committing)
            else:
                took = _timed_commit(db)
            _COMMITS.observe(took)
        except BaseException:
            if committing is not None and not committing.done():
                # Cancelled while COMMIT runs on the thread: it finishes there; the lock
                # is let go after it (the connection is not touched meanwhile).
                if lock is not None:
                    committing.add_done_callback(_release_after(lock))
                lock = None
            elif db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            if lock is not None:
                lock.release()
        return result


def _release_after(lock: WriteLock) -> Callable[[asyncio.Future[float]], None]:
    return lambda _: lock.release()


class _CommitTimes:
    """How long COMMIT (its fsync) takes here: on a fast disk it runs on the event loop;
    once it takes longer than ``SLOW_COMMIT`` on average it runs on the driver's thread,
    so that the loop goes on with other requests meanwhile (and back when it is fast)."""

    def __init__(self) -> None:
        self.average = 0.0
        self.slow = False

    def observe(self, seconds: float) -> None:
        self.average = 0.8 * self.average + 0.2 * seconds
        self.slow = self.average > SLOW_COMMIT


SLOW_COMMIT = 0.01  # seconds
_COMMITS = _CommitTimes()


def _timed_commit(db: sqlite3.Connection) -> float:
    started = time.perf_counter()
    db.execute("COMMIT")
    return time.perf_counter() - started


def _begin_now(db: sqlite3.Connection, busy_timeout_ms: int | None) -> bool:
    """BEGIN IMMEDIATE without waiting: False when SQLite's lock is taken. The busy timeout
    is set back to ``busy_timeout_ms`` (None: the connection's own, read first)."""
    if busy_timeout_ms is None:
        busy_timeout_ms = int(db.execute("PRAGMA busy_timeout").fetchone()[0])
    db.execute("PRAGMA busy_timeout=0")
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
        return False
    finally:
        db.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    return True
