"""Tables for suppression list, SMTP users, inbound mail and TLS reports (issue 6).

On the shared metadata of kakitome.store.schema. Imported at the end of schema.py so that
every table is known to the migrations test.

- ``suppressions``: addresses delivery must not send to, one row per address (the lower-case
  key of ``kakitome.addresses``), with why (``bounce``, ``complaint``, ``manual``) and the
  delivery that caused it, if any.
- ``bounce_counts``: permanent and temporary failures reported back per address, for the
  thresholds (one permanent / three temporary by default) that suppress it.
- ``smtp_users``: submission credentials; ``password_hash`` is an argon2id PHC string.
- ``inbound_messages``: every message the listeners accepted, as received plus our
  ``Received`` and ``Authentication-Results`` fields, with what became of it (``kind``:
  bounce, complaint, tlsrpt, route; ``status``: processed, unmatched, held, forward,
  forwarded, failed). Forwarding retries use ``attempts`` and ``next_attempt_at``.
- ``tlsrpt_received``: TLS-RPT reports (RFC 8460) other senders sent us (ours are in
  ``schema_tls``), one row per report,
  de-duplicated by (organization, report id).

Inbound routes are settings (``inbound.routes``), not rows: they change with deployments.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from kakitome.store.schema import BigId, metadata

suppressions = Table(
    "suppressions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("address", String(998), nullable=False, unique=True),
    Column("reason", String(32), nullable=False),
    Column("detail", Text, nullable=False, server_default=""),
    Column("delivery_id", BigInteger),
    Column("created_at", Float, nullable=False),
)

bounce_counts = Table(
    "bounce_counts",
    metadata,
    Column("address", String(998), primary_key=True),
    Column("permanent", Integer, nullable=False, server_default="0"),
    Column("temporary", Integer, nullable=False, server_default="0"),
    Column("last_status", String(16)),
    Column("updated_at", Float, nullable=False),
)

smtp_users = Table(
    "smtp_users",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("username", String(255), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_login_at", Float),
)

inbound_messages = Table(
    "inbound_messages",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("received_at", Float, nullable=False),
    Column("listener", String(16), nullable=False),  # mx | submission
    Column("kind", String(16), nullable=False),  # bounce | complaint | tlsrpt | route
    Column("status", String(16), nullable=False),
    Column("client_ip", String(64), nullable=False, server_default=""),
    Column("helo", String(255), nullable=False, server_default=""),
    Column("mail_from", String(998), nullable=False, server_default=""),
    Column("recipients", JSON, nullable=False),
    Column("size", Integer, nullable=False),
    Column("tls", JSON),
    Column("route", String(255)),
    Column("delivery_id", BigInteger),
    Column("detail", JSON),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Float),
    Column("content", LargeBinary, nullable=False),
    Index("ix_inbound_messages_received_at", "received_at"),
    Index("ix_inbound_messages_due", "status", "next_attempt_at"),
)

tlsrpt_received = Table(
    "tlsrpt_received",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("inbound_message_id", String(32)),
    Column("received_at", Float, nullable=False),
    Column("organization", String(255), nullable=False),
    Column("report_id", String(255), nullable=False),
    Column("period_start", Float),
    Column("period_end", Float),
    Column("contact", String(998), nullable=False, server_default=""),
    Column("successful", BigInteger, nullable=False, server_default="0"),
    Column("failed", BigInteger, nullable=False, server_default="0"),
    Column("report", JSON, nullable=False),
    UniqueConstraint("organization", "report_id"),
)
