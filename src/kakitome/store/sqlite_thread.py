"""Run a piece of a SQLite transaction on the connection's own thread, in one hop.

aiosqlite gives every connection a thread; each statement awaited through SQLAlchemy is a
round trip to it and back through the event loop. Inside a write transaction every such
trip keeps SQLite's write lock (and ``kakitome.store.write_lock``) held while the loop
runs other tasks: in a worker with hundreds of SMTP sessions that was several
milliseconds per statement, and web processes waited for it. The queue's hot transactions
(claim, record results) therefore hand the whole body to the thread as one function.

``in_connection_thread`` runs a function inside a transaction the caller opened through
the engine. ``write_transaction`` goes further for the hottest writers (inject, claim,
record results): the file write lock is taken on the event loop, then ``BEGIN
IMMEDIATE`` and the function run right there, without a trip to the thread, and only
``COMMIT`` (its fsync) and letting go of the lock go to the thread. The statements of such
a function take a few milliseconds; run on the driver's thread, each row of an
``executemany`` waited for the busy event loop to hand over the GIL, and the lock was held
several times as long. The function gets the ``sqlite3.Connection``; it must not commit,
roll back or keep the connection. Both use aiosqlite's internal queue
(``Connection._execute``), the one its public methods use, and its connection, which
SQLAlchemy opens with ``check_same_thread=False``; nothing else uses the connection
meanwhile (it is checked out of the pool and idle).
"""

from __future__ import annotations

import sqlite3
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


async def write_transaction(engine: AsyncEngine, work: Callable[[sqlite3.Connection], T]) -> T:
    """``work(sqlite3_connection)`` in a write transaction of its own, committed when it
    returns and rolled back when it raises; see the module's docstring."""
    async with engine.connect() as conn:  # the driver is in autocommit: nothing begun
        raw = await conn.get_raw_connection()
        lock: WriteLock | None = raw.info.get("write_lock")
        driver: Any = raw.driver_connection
        db: sqlite3.Connection = driver._conn
        if lock is not None:
            await lock.acquire()
        try:
            if not _begin_now(db):
                # Someone outside our lock holds SQLite's (the sqlite3 shell, a migration):
                # wait for it with the busy timeout, off the event loop.
                await driver._execute(db.execute, "BEGIN IMMEDIATE")
            try:
                result = work(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except BaseException:
            if lock is not None:
                lock.release()
            raise

        def commit() -> None:
            try:
                db.execute("COMMIT")  # the fsync: off the event loop
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            finally:
                if lock is not None:
                    lock.release()

        await driver._execute(commit)
        return result


def _begin_now(db: sqlite3.Connection) -> bool:
    """BEGIN IMMEDIATE without waiting: False when SQLite's lock is taken."""
    timeout = db.execute("PRAGMA busy_timeout").fetchone()[0]
    db.execute("PRAGMA busy_timeout=0")
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
        return False
    finally:
        db.execute(f"PRAGMA busy_timeout={int(timeout)}")
    return True
