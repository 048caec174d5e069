"""Run the packaged Alembic migrations on a live connection (both engines).

``upgrade_to_head`` is called by ``Database.open(migrate=True)`` through
``AsyncConnection.run_sync``: Alembic is synchronous, and SQLAlchemy runs it on the async
driver (aiosqlite or asyncpg), so no second driver is needed. On PostgreSQL a transaction
advisory lock makes concurrent starters (web, SMTP and worker processes starting together)
migrate one after another instead of racing; on SQLite ``BEGIN IMMEDIATE`` does the same.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

MIGRATIONS = Path(__file__).with_name("migrations")

# An arbitrary constant naming Kakitome's migration lock among PostgreSQL advisory locks.
_PG_MIGRATION_LOCK = 0x6B616B69


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head(connection: Connection) -> None:
    """Bring the schema to the newest revision inside the caller's transaction."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    if current_revision(connection) == head_revision():
        return
    command.upgrade(alembic_config(connection), "head")
