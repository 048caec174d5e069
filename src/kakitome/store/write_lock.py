"""A cross-process write lock for SQLite that wakes waiters at once.

SQLite allows one writer at a time. A connection that finds the write lock taken retries
from its busy handler, which sleeps 1, 2, 5, 10 … up to 100 ms between tries. With several
processes on one file (web processes injecting, worker processes recording results) a
waiter that has slept a few times keeps losing the lock to processes that come back
sooner: the worker's group commits stalled for half a second at a time while the web
processes injected, and its connections stopped behind the stalled commits.

So every write transaction first takes an exclusive ``flock`` on ``<database>-writelock``
next to the database file, one open file description per pooled connection: processes and
connections of one process exclude each other, and the kernel wakes a waiter the moment
the holder lets go, instead of after a sleep. A delivery writer also holds a shared
``flock`` on ``<database>-writewait`` while it waits; other writers that see it (their
exclusive try on that file fails) wait until it has had its turn (see ``WriteLock``).
The lock is taken before ``BEGIN IMMEDIATE`` and let go right after ``COMMIT`` or
``ROLLBACK`` (or when the connection closes, which closes the descriptor: a process that
dies releases it).

Trusts: nothing outside this machine; the lock files only ever hold locks, never data.
Limits: a wait lasts at most ``timeout`` seconds (the engine's busy timeout), then the
caller gets ``sqlite3.OperationalError("database is locked")`` as from SQLite itself.
Writers that do not use this lock (the ``sqlite3`` shell, another program) are still kept
out by SQLite's own lock; they only do not get the prompt wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
from pathlib import Path

__all__ = ["WriteLock", "WriteLockFile"]


class WriteLockFile:
    """The lock files of one database: ``-writelock`` (held by the writer) and
    ``-writewait`` (a shared lock on it says "a writer is waiting")."""

    def __init__(self, database: Path, *, timeout: float) -> None:
        self.path = database.with_name(database.name + "-writelock")
        self.wait_path = database.with_name(database.name + "-writewait")
        self.timeout = timeout

    def open(self) -> WriteLock:
        """A lock of its own for one connection (its own open file descriptions)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        fd, wait_fd = os.open(self.path, flags, 0o600), os.open(self.wait_path, flags, 0o600)
        return WriteLock(fd, wait_fd, timeout=self.timeout)


class WriteLock:
    """One connection's hold on the write lock.

    Two kinds of writers. *Delivery* writers (``priority=True``: the worker's claims and
    results) announce themselves while they wait, with a shared lock on ``-writewait``.
    Every other writer (injection, the web UI, imports) lets announced delivery writers go
    first: it waits until it can take ``-writewait`` exclusively, i.e. until no delivery
    writer waits, and only then queues for ``-writelock``. When nobody waits, taking the
    lock is a non-blocking try on the event loop (two or three ``flock`` calls, no
    thread); otherwise a daemon thread blocks on the locks.

    Why: the kernel wakes every waiter when the lock is let go and the quickest wins. Two
    web processes injecting back to back won most of the time, and the worker's commits
    waited 100-250 ms each while the web processes injected; its connections stopped
    behind the uncommitted results and delivery fell to a third of its speed. Mail that
    is delivered first keeps the queue short, as Postfix's ``in_flow_delay`` slows
    intake when delivery falls behind.
    """

    def __init__(self, fd: int, wait_fd: int, *, timeout: float) -> None:
        self._fd = fd
        self._wait_fd = wait_fd
        self._timeout = timeout
        self.held = False

    def _nobody_waits(self) -> bool:
        try:
            fcntl.flock(self._wait_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(self._wait_fd, fcntl.LOCK_UN)
        return True

    async def acquire(self, *, priority: bool = False) -> None:
        """Take the lock, waiting at most the busy timeout; ``priority`` for delivery."""
        if self.held:
            return
        if self._nobody_waits():
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            else:
                self.held = True
                return
        waiting = self._wait(priority)
        try:
            # Timed out or cancelled, ``waiting`` is cancelled too: if its thread gets the
            # lock later it gives it straight back.
            await asyncio.wait_for(waiting, self._timeout)
        except TimeoutError:
            raise locked_error() from None
        self.held = True

    def _wait(self, priority: bool) -> asyncio.Future[None]:
        """Resolves once this connection holds the lock. The blocked ``flock`` waits in a
        daemon thread of its own (never on the event loop; never holding up exit)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        fd, wait_fd = self._fd, self._wait_fd

        def settle(error: OSError | None) -> None:
            if done.cancelled():
                if error is None:  # nobody waits any more: give the lock back
                    with contextlib.suppress(OSError):
                        fcntl.flock(fd, fcntl.LOCK_UN)
            elif error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        def block() -> None:
            error: OSError | None = None
            try:
                # Delivery: announced while waiting. Others: until no delivery writer waits.
                fcntl.flock(wait_fd, fcntl.LOCK_SH if priority else fcntl.LOCK_EX)
                if not priority:
                    fcntl.flock(wait_fd, fcntl.LOCK_UN)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                finally:
                    if priority:
                        fcntl.flock(wait_fd, fcntl.LOCK_UN)
            except OSError as exc:
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(settle, error)

        threading.Thread(target=block, name="sqlite-writelock", daemon=True).start()
        return done

    def release(self) -> None:
        if self.held:
            self.held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.held = False
        for fd in (self._fd, self._wait_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def locked_error() -> sqlite3.OperationalError:
    """What a writer gets when the lock stayed taken for the whole timeout."""
    return sqlite3.OperationalError("database is locked")
