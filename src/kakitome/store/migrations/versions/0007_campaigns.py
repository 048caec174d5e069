"""Tables for campaigns, templates, sends, step-mail progress and tracking (issue 7).

See kakitome.store.schema_campaigns.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _body() -> list[sa.Column[object]]:
    return [
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("body_format", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "campaign_templates",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        *_body(),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_campaign_templates"),
        sa.UniqueConstraint("name", name="uq_campaign_templates_name"),
    )
    op.create_table(
        "campaigns",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("list_id", sa.BigInteger(), nullable=False),
        sa.Column("segment", sa.String(200), nullable=True),
        sa.Column("expression", sa.Text(), nullable=True),
        *_body(),
        sa.Column("tracking", sa.Boolean(), nullable=False),
        sa.Column("footer", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("scheduled_at", sa.Float(), nullable=True),
        sa.Column("next_run_at", sa.Float(), nullable=True),
        sa.Column("checkpoint", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("sent", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_campaigns"),
    )
    op.create_index("ix_campaigns_status", "campaigns", ["status", "scheduled_at"])
    op.create_table(
        "campaign_sends",
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("subscriber_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.String(32), nullable=True),
        sa.Column("address", sa.String(998), nullable=False),
        sa.Column("sent_at", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("campaign_id", "subscriber_id", name="pk_campaign_sends"),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name="fk_campaign_sends_campaign_id_campaigns",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_campaign_sends_message_id", "campaign_sends", ["message_id"])
    op.create_table(
        "sequences",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("list_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("tracking", sa.Boolean(), nullable=False),
        sa.Column("footer", sa.Boolean(), nullable=False),
        sa.Column("starts_at", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sequences"),
        sa.UniqueConstraint("name", name="uq_sequences_name"),
    )
    op.create_table(
        "sequence_steps",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("sequence_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("delay_days", sa.Integer(), nullable=False),
        sa.Column("send_hour", sa.Integer(), nullable=True),
        *_body(),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("removed_at", sa.Float(), nullable=True),
        sa.Column("watermark", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sequence_steps"),
        sa.ForeignKeyConstraint(
            ["sequence_id"],
            ["sequences.id"],
            name="fk_sequence_steps_sequence_id_sequences",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_sequence_steps_sequence_id", "sequence_steps", ["sequence_id"])
    op.create_table(
        "sequence_sends",
        sa.Column("step_id", sa.BigInteger(), nullable=False),
        sa.Column("subscriber_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.String(32), nullable=True),
        sa.Column("address", sa.String(998), nullable=False),
        sa.Column("sent_at", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("step_id", "subscriber_id", name="pk_sequence_sends"),
        sa.ForeignKeyConstraint(
            ["step_id"],
            ["sequence_steps.id"],
            name="fk_sequence_sends_step_id_sequence_steps",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_sequence_sends_message_id", "sequence_sends", ["message_id"])
    op.create_table(
        "tracking_events",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("ref", sa.String(24), nullable=False),
        sa.Column("subscriber_id", sa.BigInteger(), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tracking_events"),
    )
    op.create_index("ix_tracking_events_ref", "tracking_events", ["ref", "kind"])


def downgrade() -> None:
    op.drop_index("ix_tracking_events_ref", table_name="tracking_events")
    op.drop_table("tracking_events")
    op.drop_index("ix_sequence_sends_message_id", table_name="sequence_sends")
    op.drop_table("sequence_sends")
    op.drop_index("ix_sequence_steps_sequence_id", table_name="sequence_steps")
    op.drop_table("sequence_steps")
    op.drop_table("sequences")
    op.drop_index("ix_campaign_sends_message_id", table_name="campaign_sends")
    op.drop_table("campaign_sends")
    op.drop_index("ix_campaigns_status", table_name="campaigns")
    op.drop_table("campaigns")
    op.drop_table("campaign_templates")
