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
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
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
        self.busy_timeout_ms = round(timeout * 1000)  # SQLite's, set on the same connection
        self.held = False
        # Blocking waits run on one daemon thread per lock, started at the first wait.
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] | None = None
        # A wait given up (timed out, cancelled) whose thread may still get the lock: the
        # next acquire lets it finish (and give the lock back) first, so that the two never
        # overlap on this file descriptor.
        self._abandoned: asyncio.Event | None = None

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
        deadline = time.monotonic() + self._timeout
        if self._abandoned is not None:
            try:
                await asyncio.wait_for(self._abandoned.wait(), self._timeout)
            except TimeoutError:
                raise locked_error() from None
            self._abandoned = None
        if self._nobody_waits():
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            else:
                self.held = True
                return
        waiting, settled = self._wait(priority)
        try:
            await asyncio.wait_for(waiting, max(0.0, deadline - time.monotonic()))
        except BaseException as exc:
            # Timed out or cancelled: ``waiting`` is cancelled too; if the thread gets the
            # lock later it gives it straight back (see _wait).
            self._abandoned = settled
            if isinstance(exc, TimeoutError):
                raise locked_error() from None
            raise
        self.held = True

    def _wait(self, priority: bool) -> tuple[asyncio.Future[None], asyncio.Event]:
        """A future resolved once this connection holds the lock, and an event set once
        the blocking wait is over either way. The blocked ``flock`` waits on the lock's
        daemon thread (never on the event loop; never holding up the process's exit)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        settled = asyncio.Event()
        fd, wait_fd = self._fd, self._wait_fd

        def settle(error: OSError | None) -> None:
            settled.set()
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

        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            threading.Thread(
                target=_run_jobs, args=(self._jobs,), name="sqlite-writelock", daemon=True
            ).start()
        self._jobs.put(block)
        return done, settled

    def release(self) -> None:
        if self.held:
            self.held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.held = False
        if self._jobs is not None:
            self._jobs.put(None)  # the thread ends after any wait under way
        for fd in (self._fd, self._wait_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def _run_jobs(jobs: queue.SimpleQueue[Callable[[], None] | None]) -> None:
    while (job := jobs.get()) is not None:
        job()


def locked_error() -> sqlite3.OperationalError:
    """What a writer gets when the lock stayed taken for the whole timeout."""
    return sqlite3.OperationalError("database is locked")
