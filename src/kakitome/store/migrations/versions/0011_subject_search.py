"""Indexed subject search (issue 8); see kakitome.store.search.

SQLite: ``message_search`` (a stable integer per message with a subject), the FTS5
trigram table ``message_search_fts`` (contentless, rowid = message_search.id) and the
triggers on ``messages`` that keep both in step. PostgreSQL: extension pg_trgm and a GIN
trigram index on ``messages.subject``; when the extension cannot be created (not
installed, or no privilege) the index is left out with a warning and subject search
scans. Existing messages are indexed here (about a minute per million on SQLite).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import logging

from alembic import op
from sqlalchemy.exc import DBAPIError

revision = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None

log = logging.getLogger("kakitome.store.migrations")

SQLITE_CREATE = [
    "CREATE TABLE message_search (id INTEGER PRIMARY KEY, message_id VARCHAR(32) NOT NULL)",
    "CREATE UNIQUE INDEX message_search_message_id ON message_search (message_id)",
    # Contentless (the subject stays in messages only); no column sizes (no ranking).
    "CREATE VIRTUAL TABLE message_search_fts USING fts5("
    "subject, content='', columnsize=0, tokenize='trigram')",
    """CREATE TRIGGER message_search_insert AFTER INSERT ON messages
       WHEN new.subject <> '' BEGIN
         INSERT INTO message_search (message_id) VALUES (new.id);
         INSERT INTO message_search_fts (rowid, subject)
           VALUES (last_insert_rowid(), new.subject);
       END""",
    # A contentless FTS5 row is removed by repeating exactly what was indexed.
    """CREATE TRIGGER message_search_delete AFTER DELETE ON messages
       WHEN old.subject <> '' BEGIN
         INSERT INTO message_search_fts (message_search_fts, rowid, subject)
           SELECT 'delete', id, old.subject FROM message_search WHERE message_id = old.id;
         DELETE FROM message_search WHERE message_id = old.id;
       END""",
    """CREATE TRIGGER message_search_update AFTER UPDATE OF subject ON messages BEGIN
         INSERT INTO message_search_fts (message_search_fts, rowid, subject)
           SELECT 'delete', id, old.subject FROM message_search
           WHERE message_id = old.id AND old.subject <> '';
         DELETE FROM message_search WHERE message_id = old.id;
         INSERT INTO message_search (message_id) SELECT new.id WHERE new.subject <> '';
         INSERT INTO message_search_fts (rowid, subject)
           SELECT id, new.subject FROM message_search WHERE message_id = new.id;
       END""",
]
SQLITE_BACKFILL = [
    "INSERT INTO message_search (message_id) SELECT id FROM messages "
    "WHERE subject <> '' ORDER BY id",
    "INSERT INTO message_search_fts (rowid, subject) SELECT s.id, m.subject "
    "FROM message_search s JOIN messages m ON m.id = s.message_id",
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS message_search_update",
    "DROP TRIGGER IF EXISTS message_search_delete",
    "DROP TRIGGER IF EXISTS message_search_insert",
    "DROP TABLE IF EXISTS message_search_fts",
    "DROP TABLE IF EXISTS message_search",
]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for statement in SQLITE_CREATE + SQLITE_BACKFILL:
            bind.exec_driver_sql(statement)
        return
    try:
        with bind.begin_nested():
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except DBAPIError as exc:
        log.warning(
            "pg_trgm unavailable (%s): subject search will scan messages; as a superuser "
            "run CREATE EXTENSION pg_trgm and CREATE INDEX ix_messages_subject_trgm ON "
            "messages USING gin (subject gin_trgm_ops)",
            str(exc.orig).strip().splitlines()[0] if exc.orig else exc,
        )
        return
    bind.exec_driver_sql(
        "CREATE INDEX ix_messages_subject_trgm ON messages USING gin (subject gin_trgm_ops)"
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for statement in SQLITE_DROP:
            bind.exec_driver_sql(statement)
        return
    bind.exec_driver_sql("DROP INDEX IF EXISTS ix_messages_subject_trgm")
