"""The SQLite write lock (kakitome.store.write_lock): real files, threads and processes."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from kakitome.store import sqlite_thread
from kakitome.store.db import create_engine
from kakitome.store.sqlite_thread import write_transaction
from kakitome.store.write_lock import WriteLock, WriteLockFile


async def test_delivery_writer_waiting_goes_before_a_later_writer(tmp_path: Path) -> None:
    """A delivery writer waits for the lock; a writer that comes after it must wait until
    the delivery writer has had its turn, even though both wake when the lock is free."""
    locks = WriteLockFile(tmp_path / "q.db", timeout=5)
    holder, delivery, intake = locks.open(), locks.open(), locks.open()
    order: list[str] = []

    async def take(name: str, lock: WriteLock, priority: bool) -> None:
        await lock.acquire(priority=priority)
        order.append(name)
        await asyncio.sleep(0.05)  # holds it a moment, as a transaction would
        lock.release()

    await holder.acquire()
    first = asyncio.create_task(take("delivery", delivery, True))
    await asyncio.sleep(0.1)  # the delivery writer is waiting now
    second = asyncio.create_task(take("intake", intake, False))
    await asyncio.sleep(0.1)
    assert order == []
    holder.release()
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert order == ["delivery", "intake"]
    for lock in (holder, delivery, intake):
        lock.close()


async def test_a_wait_longer_than_the_timeout_is_database_locked(tmp_path: Path) -> None:
    """As SQLite's own busy timeout: "database is locked"; and the lock the waiting thread
    gets afterwards is given straight back, so the next writer is not blocked by nobody."""
    locks = WriteLockFile(tmp_path / "q.db", timeout=0.3)
    holder, late = locks.open(), locks.open()
    await holder.acquire()
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        await late.acquire()
    assert 0.25 < time.monotonic() - started < 2
    assert not late.held
    holder.release()
    await asyncio.sleep(0.2)  # the abandoned wait ends and lets go
    third = locks.open()
    await asyncio.wait_for(third.acquire(), 1)
    assert third.held
    for lock in (holder, late, third):
        lock.close()


async def test_a_process_that_dies_holding_the_lock_releases_it(tmp_path: Path) -> None:
    locks = WriteLockFile(tmp_path / "q.db", timeout=10)
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(locks.path)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert (await holder.stdout.readline()).strip() == b"held"
        fd = os.open(locks.path, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
        lock = locks.open()
        waiting = asyncio.create_task(lock.acquire())
        await asyncio.sleep(0.2)
        assert not waiting.done()
        holder.send_signal(signal.SIGKILL)
        await asyncio.wait_for(waiting, 5)
        assert lock.held
        lock.close()
    finally:
        if holder.returncode is None:
            holder.kill()
        await holder.wait()


async def test_write_transaction_commits_or_rolls_back_and_lets_go(tmp_path: Path) -> None:
    """write_transaction: the work is committed when it returns, rolled back when it
    raises; either way the lock is free afterwards (the next writer does not wait)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'q.db'}", busy_timeout_ms=500)
    try:
        await write_transaction(engine, lambda db: db.execute("CREATE TABLE t (v INTEGER)"))
        await write_transaction(engine, lambda db: db.execute("INSERT INTO t VALUES (1)"))

        def fails(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO t VALUES (2)")
            raise ValueError("a template error, say")

        with pytest.raises(ValueError):
            await write_transaction(engine, fails, priority=True)
        started = time.monotonic()
        rows = await write_transaction(
            engine, lambda db: db.execute("SELECT v FROM t ORDER BY v").fetchall()
        )
        assert rows == [(1,)]
        assert time.monotonic() - started < 0.4  # not the 0.5 s busy timeout
    finally:
        await engine.dispose()


async def test_slow_commits_go_to_the_driver_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where COMMIT is slow (a spinning disk), it runs on the driver's thread; a caller
    cancelled meanwhile does not undo it, and the lock is let go once it is done."""
    monkeypatch.setattr(sqlite_thread, "SLOW_COMMIT", -1.0)  # every commit counts as slow
    monkeypatch.setattr(sqlite_thread, "_COMMITS", sqlite_thread._CommitTimes())
    engine = create_engine(f"sqlite:///{tmp_path / 'q.db'}", busy_timeout_ms=2000)
    try:
        await write_transaction(engine, lambda db: db.execute("CREATE TABLE t (v INTEGER)"))
        assert sqlite_thread._COMMITS.slow
        await write_transaction(engine, lambda db: db.execute("INSERT INTO t VALUES (1)"))
        task = asyncio.create_task(
            write_transaction(engine, lambda db: db.execute("INSERT INTO t VALUES (2)"))
        )
        for _ in range(3):  # a few turns of the loop: it is at its lock, BEGIN or COMMIT
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        started = time.monotonic()
        rows = await write_transaction(
            engine, lambda db: db.execute("SELECT v FROM t ORDER BY v").fetchall()
        )
        assert time.monotonic() - started < 1.5
        assert rows in ([(1,)], [(1,), (2,)])  # cancelled before or after its commit began
    finally:
        await engine.dispose()
