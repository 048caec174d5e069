"""Tables for suppression list, SMTP users, inbound mail and TLS reports (issue 6).

See kakitome.store.schema_inbound.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("address", sa.String(998), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False, server_default=""),
        sa.Column("delivery_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_suppressions"),
        sa.UniqueConstraint("address", name="uq_suppressions_address"),
    )
    op.create_table(
        "bounce_counts",
        sa.Column("address", sa.String(998), nullable=False),
        sa.Column("permanent", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("temporary", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_status", sa.String(16), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("address", name="pk_bounce_counts"),
    )
    op.create_table(
        "smtp_users",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_login_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_smtp_users"),
        sa.UniqueConstraint("username", name="uq_smtp_users_username"),
    )
    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("listener", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("client_ip", sa.String(64), nullable=False, server_default=""),
        sa.Column("helo", sa.String(255), nullable=False, server_default=""),
        sa.Column("mail_from", sa.String(998), nullable=False, server_default=""),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("tls", sa.JSON(), nullable=True),
        sa.Column("route", sa.String(255), nullable=True),
        sa.Column("delivery_id", sa.BigInteger(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Float(), nullable=True),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_inbound_messages"),
    )
    op.create_index("ix_inbound_messages_received_at", "inbound_messages", ["received_at"])
    op.create_index(
        "ix_inbound_messages_due", "inbound_messages", ["status", "next_attempt_at"]
    )
    op.create_table(
        "tlsrpt_received",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("inbound_message_id", sa.String(32), nullable=True),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("organization", sa.String(255), nullable=False),
        sa.Column("report_id", sa.String(255), nullable=False),
        sa.Column("period_start", sa.Float(), nullable=True),
        sa.Column("period_end", sa.Float(), nullable=True),
        sa.Column("contact", sa.String(998), nullable=False, server_default=""),
        sa.Column("successful", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("failed", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tlsrpt_received"),
        sa.UniqueConstraint(
            "organization", "report_id", name="uq_tlsrpt_received_organization_report_id"
        ),
    )


def downgrade() -> None:
    op.drop_table("tlsrpt_received")
    op.drop_index("ix_inbound_messages_due", table_name="inbound_messages")
    op.drop_index("ix_inbound_messages_received_at", table_name="inbound_messages")
    op.drop_table("inbound_messages")
    op.drop_table("smtp_users")
    op.drop_table("bounce_counts")
    op.drop_table("suppressions")
