"""Tables for the admin web UI (issue 8); see kakitome.store.schema_web.

Users, sessions, login attempts, the dashboard's hourly roll-up and its cursor, and two
indexes on deliveries for the message search (by status, by domain; newest first).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "web_users",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("language", sa.String(8), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("last_login_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_web_users"),
        sa.UniqueConstraint("username", name="uq_web_users_username"),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_seen_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("user_agent", sa.String(300), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_web_sessions"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["web_users.id"],
            name="fk_web_sessions_user_id_web_users",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"])
    op.create_index("ix_web_sessions_expires_at", "web_sessions", ["expires_at"])
    op.create_table(
        "web_login_attempts",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("ip", sa.String(64), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_web_login_attempts"),
    )
    op.create_index("ix_web_login_attempts_username_at", "web_login_attempts", ["username", "at"])
    op.create_index("ix_web_login_attempts_ip_at", "web_login_attempts", ["ip", "at"])
    op.create_table(
        "web_stats_hourly",
        sa.Column("hour", sa.Float(), nullable=False),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("queued", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("delivered", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("delivered_tls", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("delivered_verified", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("downgraded", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("deferred", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("bounced", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("hour", "domain", name="pk_web_stats_hourly"),
    )
    op.create_table(
        "web_stats_cursor",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_web_stats_cursor"),
    )
    op.create_index("ix_deliveries_status_message_id", "deliveries", ["status", "message_id"])
    op.create_index("ix_deliveries_domain_message_id", "deliveries", ["domain", "message_id"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_domain_message_id", table_name="deliveries")
    op.drop_index("ix_deliveries_status_message_id", table_name="deliveries")
    op.drop_table("web_stats_cursor")
    op.drop_table("web_stats_hourly")
    op.drop_index("ix_web_login_attempts_ip_at", table_name="web_login_attempts")
    op.drop_index("ix_web_login_attempts_username_at", table_name="web_login_attempts")
    op.drop_table("web_login_attempts")
    op.drop_index("ix_web_sessions_expires_at", table_name="web_sessions")
    op.drop_index("ix_web_sessions_user_id", table_name="web_sessions")
    op.drop_table("web_sessions")
    op.drop_table("web_users")
