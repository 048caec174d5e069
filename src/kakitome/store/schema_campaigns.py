"""Tables for campaigns, templates, sends, step-mail progress and tracking (issue 7).

On the shared metadata of kakitome.store.schema; imported at the end of schema.py so that
every table is known to the migrations test.

- ``campaigns``: one mailing to a list (optionally a segment). The template (subject,
  body, format, text) is copied in, so editing a saved template never changes a campaign
  in flight. ``status``: draft → scheduled → sending ⇄ paused → finished, or cancelled /
  failed. ``checkpoint`` is the last subscriber id handed to the queue: it advances in
  the same transaction as the messages it covers. ``next_run_at`` holds a sending
  campaign back (quiet hours).
- ``campaign_sends``: who got which message; the primary key (campaign, subscriber) makes
  a second copy impossible even if two runners raced past the checkpoint.
- ``campaign_templates``: saved templates to start campaigns and steps from.
- ``sequences`` / ``sequence_steps`` / ``sequence_sends``: step mail. A subscriber enters a
  sequence when confirmed at or after ``sequences.starts_at``; a step is due
  ``delay_days`` after that (at ``send_hour`` in the list's time zone when set). Steps keep
  their id when edited and are only marked ``removed_at`` when deleted, so the primary key
  (step, subscriber) of ``sequence_sends`` remembers what went out whatever is edited.
  ``watermark``: every subscriber confirmed before it has been decided for the step.
- ``tracking_events``: opens and clicks, by ``ref`` (``c<campaign id>`` or ``s<step id>``)
  and subscriber; no IP addresses or user agents are kept.
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
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from kakitome.store.schema import BigId, metadata

campaign_templates = Table(
    "campaign_templates",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("body_format", String(16), nullable=False),  # html | markdown | text
    Column("text", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("list_id", BigInteger, nullable=False),
    Column("segment", String(200)),  # a saved segment's id or name
    Column("expression", Text),  # or an unsaved segment expression
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("body_format", String(16), nullable=False),
    Column("text", Text),
    Column("tracking", Boolean, nullable=False),
    Column("footer", Boolean, nullable=False),
    Column("status", String(16), nullable=False),
    Column("scheduled_at", Float),
    Column("next_run_at", Float),
    Column("checkpoint", BigInteger, nullable=False, server_default="0"),
    Column("sent", Integer, nullable=False, server_default="0"),
    Column("failed", Integer, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("error", Text),
    Index("ix_campaigns_status", "status", "scheduled_at"),
)

campaign_sends = Table(
    "campaign_sends",
    metadata,
    Column(
        "campaign_id",
        BigInteger,
        ForeignKey("campaigns.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("subscriber_id", BigInteger, nullable=False),
    Column("message_id", String(32)),  # None when the message could not be made
    Column("address", String(998), nullable=False),
    Column("sent_at", Float, nullable=False),
    Column("error", Text),
    PrimaryKeyConstraint("campaign_id", "subscriber_id"),
    Index("ix_campaign_sends_message_id", "message_id"),
)

sequences = Table(
    "sequences",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("list_id", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # active | paused
    Column("tracking", Boolean, nullable=False),
    Column("footer", Boolean, nullable=False),
    Column("starts_at", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

sequence_steps = Table(
    "sequence_steps",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "sequence_id",
        BigInteger,
        ForeignKey("sequences.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("position", Integer, nullable=False),
    Column("delay_days", Integer, nullable=False),
    Column("send_hour", Integer),  # 0-23 in the list's time zone, or None
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("body_format", String(16), nullable=False),
    Column("text", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("removed_at", Float),
    Column("watermark", Float),
    Index("ix_sequence_steps_sequence_id", "sequence_id"),
)

sequence_sends = Table(
    "sequence_sends",
    metadata,
    Column(
        "step_id",
        BigInteger,
        ForeignKey("sequence_steps.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("subscriber_id", BigInteger, nullable=False),
    Column("message_id", String(32)),
    Column("address", String(998), nullable=False),
    Column("sent_at", Float, nullable=False),
    Column("error", Text),
    PrimaryKeyConstraint("step_id", "subscriber_id"),
    Index("ix_sequence_sends_message_id", "message_id"),
)

tracking_events = Table(
    "tracking_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("kind", String(8), nullable=False),  # open | click
    Column("ref", String(24), nullable=False),
    Column("subscriber_id", BigInteger, nullable=False),
    Column("url", Text),
    Index("ix_tracking_events_ref", "ref", "kind"),
)
