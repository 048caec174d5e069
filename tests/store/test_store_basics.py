"""The store's foundations: migrations, ids, API keys, and failing loudly when the DB is gone."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection, make_url

from kakitome.errors import ConfigError, StorageError
from kakitome.store import ids
from kakitome.store.database import Database
from kakitome.store.migrate import current_revision, head_revision
from kakitome.store.schema import metadata
from kakitome.store.search import is_search_object
from tests.fixtures_db import api_key_store, queue_store
from tests.store.helpers import LIFETIME, NOW, message


def _schema_diff(connection: Connection) -> list[object]:
    # The subject search's tables and index differ per engine and are not in the metadata.
    def include_name(name: str | None, _type: str, _parents: object) -> bool:
        return not is_search_object(name)

    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_name": include_name}
    )
    return list(compare_metadata(context, metadata))


async def test_migrations_create_exactly_the_schema(store: Database) -> None:
    """After upgrade to head the database matches schema.py and is at the head revision."""
    async with store.engine.connect() as conn:
        diff = await conn.run_sync(_schema_diff)
        revision = await conn.run_sync(current_revision)
    assert diff == []
    assert revision == head_revision()


async def test_open_twice_migrates_once(database_url: str) -> None:
    """Opening an up-to-date database again with migrate=True is harmless."""
    first = await Database.open(database_url)
    await queue_store(first).inject(message("a@d.example"), now=NOW, lifetime=LIFETIME)
    await first.close()
    second = await Database.open(database_url)
    try:
        assert (await queue_store(second).status_counts())["queued"] == 1
    finally:
        await second.close()


async def test_sqlite_pragmas_are_set(tmp_path: Path) -> None:
    """SQLite runs in WAL mode with synchronous=FULL and foreign keys on; folders are made."""
    path = tmp_path / "deep" / "er" / "k.db"
    store = await Database.open(f"sqlite:///{path}")
    try:
        async with store.engine.connect() as conn:
            journal = await conn.exec_driver_sql("PRAGMA journal_mode")
            sync = await conn.exec_driver_sql("PRAGMA synchronous")
            fks = await conn.exec_driver_sql("PRAGMA foreign_keys")
            assert (journal.scalar(), sync.scalar(), fks.scalar()) == ("wal", 2, 1)
    finally:
        await store.close()
    assert path.exists()


async def test_unsupported_url_is_config_error() -> None:
    """Only sqlite and postgresql URLs are accepted."""
    with pytest.raises(ConfigError):
        await Database.open("mysql://localhost/db")
    with pytest.raises(ConfigError):
        await Database.open("sqlite:///:memory:")


def test_message_ids_sort_by_time_and_are_unique() -> None:
    """Ids are 26 lower-case base32 chars, ordered by time, and distinct within a ms."""
    same_ms = [ids.new_message_id(1_700_000_000_000) for _ in range(1000)]
    later = ids.new_message_id(1_700_000_000_001)
    assert len(set(same_ms)) == 1000 and same_ms == sorted(same_ms)
    assert all(ids.is_message_id(i) for i in same_ms)
    assert later > same_ms[-1]
    assert ids.encode(0) == "0" * 26
    assert ids.encode((1 << 128) - 1) == "7" + "z" * 25


async def test_api_key_create_and_check(store: Database) -> None:
    """A created key checks out with its name and scopes; the store keeps only a hash."""
    key = await api_key_store(store).create_api_key("ci", ["send", "read"], now=NOW)
    assert key.startswith("kk_") and key[11] == "_" and len(key) > 50
    info = await api_key_store(store).check_api_key(key, now=NOW + 1)
    assert info is not None
    assert (info.name, info.scopes, info.prefix) == ("ci", ("send", "read"), key[3:11])
    (record,) = await api_key_store(store).list_api_keys()
    assert record.last_used_at == NOW + 1
    async with store.engine.connect() as conn:
        stored = (await conn.exec_driver_sql("SELECT secret_hash FROM api_keys")).scalar()
    assert stored is not None and key not in stored and len(stored) == 64


async def test_api_key_wrong_or_malformed_is_refused(store: Database) -> None:
    """A key with a changed secret, an unknown prefix or the wrong shape checks as None."""
    key = await api_key_store(store).create_api_key("ci", ["send"], now=NOW)
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    unknown_prefix = "kk_zzzzzzzz" + key[11:]
    for bad in (tampered, unknown_prefix, "", "kk_", key[3:], "Bearer " + key, key + "x"):
        assert await api_key_store(store).check_api_key(bad, now=NOW) is None, bad


async def test_api_key_revoked_is_refused(store: Database) -> None:
    """A revoked key no longer checks; revoking twice reports False."""
    key = await api_key_store(store).create_api_key("ci", ["send"], now=NOW)
    info = await api_key_store(store).check_api_key(key, now=NOW)
    assert info is not None
    assert await api_key_store(store).revoke_api_key(info.id, now=NOW + 1) is True
    assert await api_key_store(store).check_api_key(key, now=NOW + 2) is None
    assert await api_key_store(store).revoke_api_key(info.id, now=NOW + 3) is False


async def test_open_unreachable_database_is_storage_error(
    database_url: str, tmp_path: Path
) -> None:
    """Opening a database that cannot be reached or created raises StorageError."""
    if database_url.startswith("sqlite"):
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("a file where a folder should be")
        broken = f"sqlite:///{blocker / 'k.db'}"
    else:
        # Port 1 on loopback: nothing listens there, the connection is refused.
        broken = make_url(database_url).set(port=1).render_as_string(hide_password=False)
    with pytest.raises(StorageError):
        await Database.open(broken)


async def test_write_when_database_goes_away_is_storage_error(
    database_url: str,
) -> None:
    """A write the database cannot commit raises StorageError; the store recovers after.

    SQLite: another process holds the write lock past busy_timeout. PostgreSQL: the
    server terminates the store's connections (as in a restart)."""
    store = await Database.open(database_url, busy_timeout_ms=100)
    try:
        await queue_store(store).inject(message("a@d.example"), now=NOW, lifetime=LIFETIME)
        if store.dialect == "sqlite":
            path = make_url(database_url).database
            assert path is not None
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                with pytest.raises(StorageError):
                    await queue_store(store).inject(
                        message("b@d.example"), now=NOW, lifetime=LIFETIME
                    )
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
        else:
            plain = make_url(database_url)
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (plain.database,),
                )
            with pytest.raises(StorageError):
                await queue_store(store).inject(message("b@d.example"), now=NOW, lifetime=LIFETIME)
        # Nothing half-written, and the next write works.
        assert (await queue_store(store).status_counts())["queued"] == 1
        await queue_store(store).inject(message("c@d.example"), now=NOW, lifetime=LIFETIME)
        assert (await queue_store(store).status_counts())["queued"] == 2
    finally:
        await store.close()
