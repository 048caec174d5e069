"""Async database engines for the two supported back ends, with the settings each needs.

``sqlite:///path.db`` becomes SQLAlchemy's ``sqlite+aiosqlite`` driver; the folder of the
file is created. Every connection gets these PRAGMAs:

- ``journal_mode=WAL``: readers never block the writer and the writer never blocks readers;
- ``synchronous=FULL``: each commit fsyncs the WAL, so a message acknowledged after its
  commit survives a power loss, not only a process crash. The cost is one fsync per
  commit (about 1-10 ms on real disks); callers amortise it with group commits
  (``QueueStore.inject_many``, ``QueueStore.record_results``);
- ``busy_timeout``: another process holding the write lock makes us wait, not fail;
  writers also queue on a file lock first (``kakitome.store.write_lock``), which wakes
  them the moment the lock is free instead of after SQLite's sleeps of up to 100 ms;
- ``foreign_keys=ON``: deleting a message cascades to its deliveries.

Transactions on SQLite are opened by us, not by the driver: ``BEGIN IMMEDIATE`` by default
(take the write lock up front, so a read-then-write transaction waits for the lock instead
of failing on a stale snapshot) and plain ``BEGIN`` only for transactions that promise to
read, with the connection execution option ``sqlite_begin="DEFERRED"``. Every part's store
shares this engine, so the safe mode has to be the default.

``postgresql://user@host:port/db`` becomes ``postgresql+asyncpg``; the pool holds
``pool_size`` connections. Only these two URL schemes are accepted.

Limits: in-memory SQLite URLs are refused (each pooled connection would see its own empty
database); SQLite allows one writer at a time across all processes sharing the file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from kakitome.errors import ConfigError
from kakitome.store.write_lock import WriteLock, WriteLockFile

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

# A writer waits this long for another process's write lock before StorageError.
DEFAULT_BUSY_TIMEOUT_MS = 15_000


def parse_database_url(url: str) -> URL:
    """Turn a settings URL into a SQLAlchemy URL with the async driver of its engine.

    Raises ConfigError for anything but ``sqlite:///file`` and ``postgresql://...``.
    """
    try:
        parsed = make_url(url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError; any parse failure is ours
        raise ConfigError(f"database URL does not parse: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == SQLITE:
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigError("database URL: SQLite needs a file, e.g. sqlite:///var/kakitome.db")
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in (POSTGRESQL, "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise ConfigError(f"database URL: unsupported engine {backend!r} (sqlite or postgresql)")


def asyncpg_dsn(url: URL) -> str:
    """The plain ``postgresql://`` DSN for opening a raw asyncpg connection (LISTEN)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(
    url: str, *, pool_size: int = 10, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS
) -> AsyncEngine:
    """An AsyncEngine for ``url`` with the per-engine set-up described in the module."""
    parsed = parse_database_url(url)
    if parsed.get_backend_name() == SQLITE:
        return _sqlite_engine(parsed, pool_size=pool_size, busy_timeout_ms=busy_timeout_ms)
    return create_async_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=0,
        # A connection that sat idle for an hour is recycled rather than trusted.
        pool_recycle=3600,
    )


def _sqlite_engine(parsed: URL, *, pool_size: int, busy_timeout_ms: int) -> AsyncEngine:
    assert parsed.database is not None
    path = Path(parsed.database)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        parsed,
        # Writers are serialised by the Database; extra connections serve concurrent readers.
        pool_size=max(1, min(pool_size, 8)),
        max_overflow=0,
    )

    lock_file = WriteLockFile(path, timeout=busy_timeout_ms / 1000)

    def _lock_of(connection: Any) -> WriteLock | None:
        try:
            info = connection.info  # a pooled connection's (ConnectionPoolEntry.info)
        except (AttributeError, NotImplementedError):  # a raw or ad-hoc connection
            return None
        lock: WriteLock | None = info.get("write_lock")
        return lock

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        record.info["write_lock"] = lock_file.open()
        # Autocommit at the driver level: we emit BEGIN ourselves (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # IMMEDIATE unless a caller asked for a read snapshot: a deferred transaction that
        # reads and then writes fails at once with "database is locked" when another
        # connection wrote in between (its snapshot is stale; busy_timeout cannot help).
        # Every part's store uses this engine, so every writer must take the lock at BEGIN.
        mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        if mode == "DEFERRED":
            connection.exec_driver_sql("BEGIN")
            return
        lock = _lock_of(connection.connection)
        if lock is not None:
            await_only(lock.acquire())
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    # The file lock is let go once COMMIT or ROLLBACK has run (SQLAlchemy's commit and
    # rollback events come before them), whether they succeeded or not.
    dialect = engine.sync_engine.dialect
    do_commit, do_rollback = dialect.do_commit, dialect.do_rollback

    def _then_release(end: Callable[[Any], None]) -> Callable[[Any], None]:
        def ended(dbapi_connection: Any) -> None:
            try:
                end(dbapi_connection)
            finally:
                if (lock := _lock_of(dbapi_connection)) is not None:
                    lock.release()

        return ended

    _commit, _rollback = _then_release(do_commit), _then_release(do_rollback)

    dialect.do_commit = _commit  # type: ignore[method-assign,assignment]
    dialect.do_rollback = _rollback  # type: ignore[method-assign,assignment]

    @event.listens_for(engine.sync_engine, "close")
    def _on_close(_dbapi_connection: Any, record: Any) -> None:
        if (lock := record.info.pop("write_lock", None)) is not None:
            lock.close()

    return engine
