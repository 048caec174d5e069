"""Fixtures: databases for storage tests, on SQLite and on PostgreSQL.

``database_url`` and ``store`` are parametrized over ``sqlite`` and ``postgres``:

- sqlite: a fresh file in the test's ``tmp_path`` (migrated by ``Store.open``);
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

from kakitome.store.repository import Store
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
    store = await Store.open(url, migrate=True)
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
async def store(database_url: str) -> AsyncIterator[Store]:
    """An open Store on an empty database, closed after the test."""
    opened = await Store.open(database_url, pool_size=5)
    try:
        yield opened
    finally:
        await opened.close()
