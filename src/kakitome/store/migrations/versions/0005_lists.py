"""Tables for lists, subscribers, memberships, history, segments (issue 7).

See kakitome.store.schema_lists.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "mailing_lists",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("title", sa.String(255), nullable=False, server_default=""),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("opt_in", sa.String(8), nullable=False),
        sa.Column("from_name", sa.String(255), nullable=False, server_default=""),
        sa.Column("from_address", sa.String(254), nullable=False, server_default=""),
        sa.Column("reply_to", sa.String(254), nullable=False, server_default=""),
        sa.Column("sender_organization", sa.String(255), nullable=False, server_default=""),
        sa.Column("sender_postal_address", sa.Text(), nullable=False, server_default=""),
        sa.Column("time_zone", sa.String(64), nullable=False, server_default="Asia/Tokyo"),
        sa.Column("quiet_start", sa.String(5), nullable=True),
        sa.Column("quiet_end", sa.String(5), nullable=True),
        sa.Column("encoding", sa.String(16), nullable=False, server_default="utf-8"),
        sa.Column("mail_domain", sa.String(255), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mailing_lists"),
        sa.UniqueConstraint("name", name="uq_mailing_lists_name"),
    )
    op.create_table(
        "subscribers",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("address", sa.String(254), nullable=False),
        sa.Column("address_key", sa.String(254), nullable=False),
        sa.Column("name", sa.String(255), nullable=False, server_default=""),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("bounced_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_subscribers"),
        sa.UniqueConstraint("address_key", name="uq_subscribers_address_key"),
    )
    op.create_table(
        "list_members",
        sa.Column("list_id", BigId, nullable=False),
        sa.Column("subscriber_id", BigId, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("confirmed_at", sa.Float(), nullable=True),
        sa.Column("optin_method", sa.String(16), nullable=False),
        sa.Column("optin_at", sa.Float(), nullable=False),
        sa.Column("optin_source", sa.String(998), nullable=False, server_default=""),
        sa.Column("optin_ip", sa.String(64), nullable=True),
        sa.Column("optin_detail", sa.Text(), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("list_id", "subscriber_id", name="pk_list_members"),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["mailing_lists.id"],
            name="fk_list_members_list_id_mailing_lists",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name="fk_list_members_subscriber_id_subscribers",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_list_members_list_id_status_subscriber_id",
        "list_members",
        ["list_id", "status", "subscriber_id"],
    )
    op.create_index("ix_list_members_subscriber_id", "list_members", ["subscriber_id"])
    op.create_table(
        "subscriber_events",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("subscriber_id", BigId, nullable=False),
        sa.Column("list_id", BigId, nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_subscriber_events"),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name="fk_subscriber_events_subscriber_id_subscribers",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_subscriber_events_subscriber_id_kind_at",
        "subscriber_events",
        ["subscriber_id", "kind", "at"],
    )
    op.create_index("ix_subscriber_events_at", "subscriber_events", ["at"])
    op.create_table(
        "segments",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("expression", sa.Text(), nullable=False),
        sa.Column("list_id", BigId, nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_segments"),
        sa.UniqueConstraint("name", name="uq_segments_name"),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["mailing_lists.id"],
            name="fk_segments_list_id_mailing_lists",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("segments")
    op.drop_table("subscriber_events")
    op.drop_table("list_members")
    op.drop_table("subscribers")
    op.drop_table("mailing_lists")
