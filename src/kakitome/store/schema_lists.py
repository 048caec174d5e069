"""Tables for lists, subscribers, memberships, history and segments (issue 7).

On the shared metadata of kakitome.store.schema; imported at the end of schema.py so that
every table is known to the migrations test. Campaign tables are in schema_campaigns.

- ``mailing_lists``: one row per list (sender identity, time zone, quiet hours, encoding).
- ``subscribers``: one row per address across all lists; ``address_key`` is the lower-case
  address, unique, so imports upsert and never duplicate. ``bounced_at`` is set by bounce
  cleaning and keeps the address out of every audience.
- ``list_members``: a subscriber on a list: status and the opt-in record (特定電子メール法).
  The index (list_id, status, subscriber_id) serves audience streaming in id order.
- ``subscriber_events``: the history (subscribed, confirmed, unsubscribed, bounces,
  complaints...), kept at least 90 days; temporary bounces are counted from here.
- ``segments``: saved filter expressions (text in the segment language).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    Float,
    ForeignKey,
    Index,
    String,
    Table,
    Text,
)

from kakitome.store.schema import BigId, metadata

mailing_lists = Table(
    "mailing_lists",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("title", String(255), nullable=False, server_default=""),
    Column("description", Text, nullable=False, server_default=""),
    Column("opt_in", String(8), nullable=False),  # single | double
    Column("from_name", String(255), nullable=False, server_default=""),
    Column("from_address", String(254), nullable=False, server_default=""),
    Column("reply_to", String(254), nullable=False, server_default=""),
    Column("sender_organization", String(255), nullable=False, server_default=""),
    Column("sender_postal_address", Text, nullable=False, server_default=""),
    Column("time_zone", String(64), nullable=False, server_default="Asia/Tokyo"),
    Column("quiet_start", String(5)),  # HH:MM in time_zone
    Column("quiet_end", String(5)),
    Column("encoding", String(16), nullable=False, server_default="utf-8"),
    Column("mail_domain", String(255)),
    Column("created_at", Float, nullable=False),
)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("address", String(254), nullable=False),
    Column("address_key", String(254), nullable=False, unique=True),
    Column("name", String(255), nullable=False, server_default=""),
    Column("attributes", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("bounced_at", Float),
)

list_members = Table(
    "list_members",
    metadata,
    Column(
        "list_id",
        BigId,
        ForeignKey("mailing_lists.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "subscriber_id",
        BigId,
        ForeignKey("subscribers.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("status", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("confirmed_at", Float),
    Column("optin_method", String(16), nullable=False),
    Column("optin_at", Float, nullable=False),
    Column("optin_source", String(998), nullable=False, server_default=""),
    Column("optin_ip", String(64)),
    Column("optin_detail", Text, nullable=False, server_default=""),
    Index("ix_list_members_list_id_status_subscriber_id", "list_id", "status", "subscriber_id"),
    Index("ix_list_members_subscriber_id", "subscriber_id"),
)

subscriber_events = Table(
    "subscriber_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "subscriber_id", BigId, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False
    ),
    Column("list_id", BigId),  # no foreign key: the history outlives a removed list
    Column("kind", String(32), nullable=False),
    Column("at", Float, nullable=False),
    Column("detail", Text, nullable=False, server_default=""),
    Index("ix_subscriber_events_subscriber_id_kind_at", "subscriber_id", "kind", "at"),
    Index("ix_subscriber_events_at", "at"),
)

segments = Table(
    "segments",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("expression", Text, nullable=False),
    Column("list_id", BigId, ForeignKey("mailing_lists.id", ondelete="CASCADE")),
    Column("created_at", Float, nullable=False),
)
