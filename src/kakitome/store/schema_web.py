"""Tables for the admin web UI (issue 8).

On the shared metadata of kakitome.store.schema. Imported at the end of schema.py so that
every table is known to the migrations test.

- ``web_users``: people who log in to the UI. ``username`` is stored lower-case;
  ``password_hash`` is an argon2id PHC string; ``role`` is ``admin``, ``sender`` or
  ``viewer``; ``language`` is the chosen UI language (None: follow the browser).
- ``web_sessions``: one row per logged-in browser. The row's id is the SHA-256 of the
  cookie's token, so a copy of the table does not give working cookies. Each session has
  its own CSRF token.
- ``web_login_attempts``: recent login attempts, for lock-out per account and per IP.
- ``web_stats_hourly`` and ``web_stats_cursor``: the dashboard's roll-up, per hour and
  receiving domain, built incrementally from ``events`` (the cursor is the last event id
  counted), so the dashboard never scans the whole deliveries table.
- Two indexes on ``deliveries`` for the message search: by status and by recipient domain,
  newest first (message ids sort by time).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
)

from kakitome.store.schema import BigId, deliveries, metadata

ROLES = ("admin", "sender", "viewer")

web_users = Table(
    "web_users",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("language", String(8)),
    Column("disabled", Boolean, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("last_login_at", Float),
)

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", String(64), primary_key=True),  # SHA-256 hex of the cookie token
    Column("user_id", BigId, ForeignKey("web_users.id", ondelete="CASCADE"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_seen_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("ip", String(64)),
    Column("user_agent", String(300)),
    Index("ix_web_sessions_user_id", "user_id"),
    Index("ix_web_sessions_expires_at", "expires_at"),
)

web_login_attempts = Table(
    "web_login_attempts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("username", String(64), nullable=False),
    Column("ip", String(64), nullable=False),
    Column("success", Boolean, nullable=False),
    Index("ix_web_login_attempts_username_at", "username", "at"),
    Index("ix_web_login_attempts_ip_at", "ip", "at"),
)

web_stats_hourly = Table(
    "web_stats_hourly",
    metadata,
    Column("hour", Float, primary_key=True),  # epoch seconds at the start of the hour
    Column("domain", String(255), primary_key=True),  # receiving domain; "" when unknown
    Column("queued", Integer, nullable=False, server_default="0"),
    Column("delivered", Integer, nullable=False, server_default="0"),
    Column("delivered_tls", Integer, nullable=False, server_default="0"),
    Column("delivered_verified", Integer, nullable=False, server_default="0"),
    Column("downgraded", Integer, nullable=False, server_default="0"),
    Column("deferred", Integer, nullable=False, server_default="0"),
    Column("bounced", Integer, nullable=False, server_default="0"),
)

web_stats_cursor = Table(
    "web_stats_cursor",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("last_event_id", BigInteger, nullable=False),
    Column("updated_at", Float, nullable=False),
)

Index("ix_deliveries_status_message_id", deliveries.c.status, deliveries.c.message_id)
Index("ix_deliveries_domain_message_id", deliveries.c.domain, deliveries.c.message_id)
