"""Fixtures: databases for storage tests, on SQLite and on PostgreSQL.

``database_url`` and ``store`` (the open ``Database``) are parametrized over ``sqlite`` and
``postgres``; ``queue`` and ``api_keys`` are the queue store and the API key store over
that ``store`` (``queue_store(db)`` and ``api_key_store(db)`` build them for any other
``Database``, e.g. a second one opened on the same URL):

- sqlite: a fresh file in the test's ``tmp_path`` (migrated by ``Database.open``);
- postgres: the server at 127.0.0.1:5432 (user postgres, trust auth; override with
  ``KAKITOME_TEST_PG_URL``). One database ``kakitome_test_<pid>_<random>`` is created and
  migrated per test session and dropped at its end; each test starts with empty tables.

When PostgreSQL cannot be reached the postgres variants are skipped with the reason,
unless ``KAKITOME_TEST_REQUIRE_PEERS=1``, in which case they fail.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from kakitome.accounts.api_keys import ApiKeyStore
from kakitome.queue.store import QueueStore
from kakitome.store.database import Database
from kakitome.store.schema import metadata

PG_SERVER = os.environ.get("KAKITOME_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# Every table of every part (schema.py imports the per-part modules), so each test starts
# empty whatever the parts it touches.
_TABLES = ", ".join(sorted(table.name for table in metadata.sorted_tables))

ENGINES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def _pg_url(database: str) -> str:
    base, _, _ = PG_SERVER.rpartition("/")
    return f"{base}/{database}"


def _unavailable(reason: str) -> None:
    if os.environ.get("KAKITOME_TEST_REQUIRE_PEERS") == "1":
        pytest.fail(f"PostgreSQL required (KAKITOME_TEST_REQUIRE_PEERS=1): {reason}")
    pytest.skip(f"PostgreSQL unavailable: {reason}")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A migrated PostgreSQL database for this session; its URL. Dropped at the end."""
    name = f"kakitome_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(PG_SERVER, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        _unavailable(f"{PG_SERVER}: {exc}".strip())
        raise  # unreachable: _unavailable raises
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = _pg_url(name)
        try:
            asyncio.run(_migrate(url))
            yield url
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


async def _migrate(url: str) -> None:
    store = await Database.open(url, migrate=True)
    await store.close()


def _truncate(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {_TABLES} RESTART IDENTITY CASCADE")


@pytest.fixture(params=ENGINES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL to an empty, usable database (sqlite: not yet created; postgres: migrated)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'kakitome.db'}"
    url: str = request.getfixturevalue("pg_database")
    _truncate(url)
    return url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Database]:
    """An open Database on an empty database, closed after the test."""
    opened = await Database.open(database_url, pool_size=5)
    try:
        yield opened
    finally:
        await opened.close()


def queue_store(database: Database) -> QueueStore:
    """The queue store over ``database`` (cheap: it shares the database's lock and
    wake-ups with every other one)."""
    return QueueStore(database)


def api_key_store(database: Database) -> ApiKeyStore:
    """An API key store over ``database``."""
    return ApiKeyStore(database)


@pytest.fixture
def queue(store: Database) -> QueueStore:
    """The queue store over ``store``."""
    return QueueStore(store)


@pytest.fixture
def api_keys(store: Database) -> ApiKeyStore:
    """The API key store over ``store``."""
    return ApiKeyStore(store)
