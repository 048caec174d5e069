"""The tables, as SQLAlchemy Core metadata (the Alembic migrations are written from this).

Times are stored as epoch seconds (double precision): the same arithmetic and indexes on
SQLite and PostgreSQL, no time-zone surprises. Message content lives in the database, so
any worker on any machine can deliver any message.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

messages = Table(
    "messages",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("source", String(16), nullable=False),  # api | cli | smtp | campaign | dsn
    Column("sender", String(998), nullable=False),  # envelope sender, "" = <>
    Column("header_from", String(998), nullable=False, server_default=""),
    Column("subject", Text, nullable=False, server_default=""),
    Column("size", Integer, nullable=False),
    Column("content", LargeBinary, nullable=False),  # CRLF, signed, not dot-stuffed
    Column("eight_bit", Boolean, nullable=False, server_default="0"),
    Column("smtputf8", Boolean, nullable=False, server_default="0"),
    Column("requiretls", Boolean, nullable=False, server_default="0"),
    Column("envid", String(100)),
    Column("ret", String(4)),
    Index("ix_messages_created_at", "created_at"),
)

# One row per recipient: the unit the queue schedules and the receipt reports.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("message_id", String(32), ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("recipient", String(998), nullable=False),
    Column("domain", String(255), nullable=False),
    # queued | deferred | delivered | bounced | held
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("lease_owner", String(64)),
    Column("lease_until", Float),
    Column("notify", String(64)),
    Column("orcpt", String(998)),
    # The last attempt: reply, MX and TLS receipt (JSON of TLSReceipt.to_dict()).
    Column("reply_code", Integer),
    Column("reply_enhanced", String(16)),
    Column("reply_text", Text),
    Column("mx_host", String(255)),
    Column("mx_ip", String(64)),
    Column("tls", JSON),
    Column("dsn_message_id", String(32)),
    Index("ix_deliveries_message_id", "message_id"),
    Index("ix_deliveries_due", "status", "next_attempt_at"),
    Index("ix_deliveries_recipient", "recipient"),
)

# History: one row per attempt and per state change, for the message journey.
events = Table(
    "events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("message_id", String(32)),
    Column("delivery_id", BigInteger),
    Column("data", JSON),
    Index("ix_events_message_id", "message_id"),
    Index("ix_events_at", "at"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    # The first characters of the key, shown to people and used to find the row.
    Column("prefix", String(16), nullable=False, unique=True),
    # SHA-256 of the whole key: keys are 256-bit random, so a slow hash adds nothing.
    Column("secret_hash", String(64), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float),
    Column("revoked_at", Float),
)

# Tables owned by later parts of the system, each in its own module (and migration).
from kakitome.store import (  # noqa: E402, F401
    schema_campaigns,
    schema_domains,
    schema_imports,
    schema_inbound,
    schema_lists,
    schema_scale,
    schema_settings,
    schema_tls,
    schema_web,
    schema_webhooks,
)
