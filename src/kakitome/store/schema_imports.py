"""The table of CSV import jobs (issue 8), on the shared metadata of kakitome.store.schema;
imported at the end of schema.py.

``list_import_jobs``: one row per import started from the admin UI, so its progress and
report outlive the web process that ran it and every web process can show them. The
process running the import moves ``position`` (bytes of the upload read) and
``heartbeat_at`` about once a second; a ``running`` job whose heartbeat stops (its process
died or was restarted) is marked ``interrupted`` (kakitome.lists.import_jobs_store).
``rejected`` keeps the first rows refused (line, reason, value); ``rejected_count`` all.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from kakitome.store.schema import BigId, metadata

list_import_jobs = Table(
    "list_import_jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("list_id", BigId, ForeignKey("mailing_lists.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(16), nullable=False),  # running | done | failed | interrupted
    Column("size", BigInteger, nullable=False),
    Column("position", BigInteger, nullable=False, server_default="0"),
    Column("encoding", String(32)),
    Column("row_count", Integer, nullable=False, server_default="0"),
    Column("inserted", Integer, nullable=False, server_default="0"),
    Column("updated", Integer, nullable=False, server_default="0"),
    Column("duplicates", Integer, nullable=False, server_default="0"),
    Column("rejected_count", Integer, nullable=False, server_default="0"),
    Column("rejected", JSON),
    Column("seconds", Float),
    Column("error", Text),
    Column("started_by", String(200), nullable=False, server_default=""),
    Column("owner", String(64), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("finished_at", Float),
    Index("ix_list_import_jobs_status_heartbeat_at", "status", "heartbeat_at"),
)
