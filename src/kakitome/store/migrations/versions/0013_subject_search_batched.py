"""Subject search on SQLite indexed in batches (issue 8); see kakitome.store.search.

0011's trigger tokenized every subject into the FTS5 index inside the injecting
transaction: each small commit wrote its own FTS5 segment and merged, adding 100-300 µs
to every injected message. Now the insert trigger only numbers the message in
``message_search``; once 500 numbered messages wait, the next insert indexes them all in
one statement (one segment per 500 messages), and ``message_search_state.indexed_upto``
says how far the FTS5 table goes. Searches read the index up to there and filter the
(at most a few hundred) newer messages directly. PostgreSQL: nothing changes.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision: str | None = "0012"
branch_labels: str | None = None
depends_on: str | None = None

_DROP_TRIGGERS = [
    "DROP TRIGGER IF EXISTS message_search_flush",
    "DROP TRIGGER IF EXISTS message_search_update",
    "DROP TRIGGER IF EXISTS message_search_delete",
    "DROP TRIGGER IF EXISTS message_search_insert",
]
_INDEX_PENDING = (
    "INSERT INTO message_search_fts (rowid, subject) SELECT s.id, m.subject "
    "FROM message_search s JOIN messages m ON m.id = s.message_id "
    "WHERE s.id > (SELECT indexed_upto FROM message_search_state)"
)
UPGRADE = [
    *_DROP_TRIGGERS,
    "CREATE TABLE message_search_state ("
    "k INTEGER PRIMARY KEY CHECK (k = 1), indexed_upto INTEGER NOT NULL)",
    # Every numbered message is in the FTS5 table so far (0011 indexed each at insert).
    "INSERT INTO message_search_state (k, indexed_upto) "
    "SELECT 1, coalesce(max(id), 0) FROM message_search",
    """CREATE TRIGGER message_search_insert AFTER INSERT ON messages
       WHEN new.subject <> '' BEGIN
         INSERT INTO message_search (message_id) VALUES (new.id);
       END""",
    f"""CREATE TRIGGER message_search_flush AFTER INSERT ON messages
       WHEN (SELECT max(id) FROM message_search)
            - (SELECT indexed_upto FROM message_search_state) >= 500 BEGIN
         {_INDEX_PENDING};
         UPDATE message_search_state SET indexed_upto = (SELECT max(id) FROM message_search);
       END""",
    # A contentless FTS5 row is removed by repeating exactly what was indexed, and only
    # if it was indexed.
    """CREATE TRIGGER message_search_delete AFTER DELETE ON messages
       WHEN old.subject <> '' BEGIN
         INSERT INTO message_search_fts (message_search_fts, rowid, subject)
           SELECT 'delete', id, old.subject FROM message_search
           WHERE message_id = old.id
             AND id <= (SELECT indexed_upto FROM message_search_state);
         DELETE FROM message_search WHERE message_id = old.id;
       END""",
    """CREATE TRIGGER message_search_update AFTER UPDATE OF subject ON messages BEGIN
         INSERT INTO message_search_fts (message_search_fts, rowid, subject)
           SELECT 'delete', id, old.subject FROM message_search
           WHERE message_id = old.id AND old.subject <> ''
             AND id <= (SELECT indexed_upto FROM message_search_state);
         DELETE FROM message_search WHERE message_id = old.id;
         INSERT INTO message_search (message_id) SELECT new.id WHERE new.subject <> '';
       END""",
]
DOWNGRADE = [
    *_DROP_TRIGGERS,
    _INDEX_PENDING,
    "DROP TABLE message_search_state",
    # 0011's triggers.
    """CREATE TRIGGER message_search_insert AFTER INSERT ON messages
       WHEN new.subject <> '' BEGIN
         INSERT INTO message_search (message_id) VALUES (new.id);
         INSERT INTO message_search_fts (rowid, subject)
           VALUES (last_insert_rowid(), new.subject);
       END""",
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


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for statement in UPGRADE:
            bind.exec_driver_sql(statement)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for statement in DOWNGRADE:
            bind.exec_driver_sql(statement)
