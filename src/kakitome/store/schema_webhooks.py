"""Tables for webhooks (issue 8).

On the shared metadata of kakitome.store.schema; imported at the end of schema.py.

- ``webhook_endpoints``: where events are POSTed. ``secret`` signs each request
  (HMAC-SHA256; it must be kept in the clear to sign); ``events`` is the JSON list of
  event types the endpoint wants; a disabled endpoint gets nothing new.
- ``webhook_deliveries``: one event for one endpoint, with its JSON body (made once, so
  every retry sends the same bytes), its state (``pending`` / ``delivered`` / ``failed``),
  attempts so far, the next attempt's time and a lease (``lease_until``) so two dispatchers
  never post the same delivery at once. ``event_key`` (source and id, e.g. ``e42``) is
  unique per endpoint: an event is enqueued at most once per endpoint.
- ``webhook_attempts``: the log — each POST with its HTTP status, duration and error.
- ``webhook_cursors``: per event source (``events``, ``tracking_events``,
  ``subscriber_events``) the last id enqueued; moved with a compare-and-set.
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
    String,
    Table,
    Text,
    UniqueConstraint,
)

from kakitome.store.schema import BigId, metadata

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("url", String(2000), nullable=False),
    Column("secret", String(128), nullable=False),
    Column("events", JSON, nullable=False),
    Column("enabled", Boolean, nullable=False, server_default="1"),
    Column("description", String(200), nullable=False, server_default=""),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "endpoint_id",
        BigId,
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("event_key", String(32), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_until", Float),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("endpoint_id", "event_key"),
    Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "delivery_id",
        BigId,
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("endpoint_id", BigInteger, nullable=False),
    Column("at", Float, nullable=False),
    Column("status_code", Integer),
    Column("duration_ms", Float, nullable=False),
    Column("error", String(500)),
    Index("ix_webhook_attempts_endpoint_id_id", "endpoint_id", "id"),
    Index("ix_webhook_attempts_delivery_id", "delivery_id"),
)

webhook_cursors = Table(
    "webhook_cursors",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("last_id", BigInteger, nullable=False),
    Column("updated_at", Float, nullable=False),
)
