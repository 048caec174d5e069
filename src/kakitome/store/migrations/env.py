"""Alembic environment: runs on the connection that ``kakitome.store.migrate`` hands over.

Kakitome runs migrations programmatically (``Database.open(url, migrate=True)``), passing a
live synchronous connection in ``config.attributes["connection"]``; running ``alembic``
from the command line is not supported. SQLite migrations use batch mode so that later
revisions can alter tables.
"""

from __future__ import annotations

from alembic import context

from kakitome.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("kakitome migrations run through kakitome.store.migrate, not the CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
