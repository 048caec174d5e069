"""Tables for MTA-STS cache, TLS-RPT sessions and reports, MX host TLS history (issue 4).

See kakitome.store.schema_tls.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "mta_sts_policies",
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("policy_id", sa.String(32), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("max_age", sa.Integer(), nullable=False),
        sa.Column("mx", sa.Text(), nullable=False),
        sa.Column("policy_text", sa.Text(), nullable=False),
        sa.Column("fetched_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("domain", name="pk_mta_sts_policies"),
    )
    op.create_table(
        "tls_host_history",
        sa.Column("mx_host", sa.String(255), nullable=False),
        sa.Column("starttls_seen_at", sa.Float(), nullable=True),
        sa.Column("verified_sha256", sa.String(64), nullable=True),
        sa.Column("verified_seen_at", sa.Float(), nullable=True),
        sa.Column("last_sha256", sa.String(64), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("mx_host", name="pk_tls_host_history"),
    )
    op.create_table(
        "tlsrpt_sessions",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("policy_domain", sa.String(255), nullable=False),
        sa.Column("row_key", sa.String(64), nullable=False),
        sa.Column("policy_type", sa.String(32), nullable=False),
        sa.Column("policy_strings", sa.Text(), nullable=False),
        sa.Column("mx_patterns", sa.Text(), nullable=False),
        sa.Column("mx_host", sa.String(255), nullable=False),
        sa.Column("receiving_ip", sa.String(64), nullable=False),
        sa.Column("sending_ip", sa.String(64), nullable=False),
        sa.Column("result_type", sa.String(40), nullable=False),
        sa.Column("reason_code", sa.String(64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tlsrpt_sessions"),
    )
    op.create_index("uq_tlsrpt_sessions_row_key", "tlsrpt_sessions", ["row_key"], unique=True)
    op.create_index("ix_tlsrpt_sessions_day", "tlsrpt_sessions", ["day", "policy_domain"])
    op.create_table(
        "tlsrpt_reports",
        sa.Column("policy_domain", sa.String(255), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("report_id", sa.String(255), nullable=False),
        sa.Column("destinations", sa.Text(), nullable=False),
        sa.Column("sent_at", sa.Float(), nullable=False),
        sa.Column("delivered", sa.Boolean(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("policy_domain", "day", name="pk_tlsrpt_reports"),
    )


def downgrade() -> None:
    op.drop_table("tlsrpt_reports")
    op.drop_index("ix_tlsrpt_sessions_day", table_name="tlsrpt_sessions")
    op.drop_index("uq_tlsrpt_sessions_row_key", table_name="tlsrpt_sessions")
    op.drop_table("tlsrpt_sessions")
    op.drop_table("tls_host_history")
    op.drop_table("mta_sts_policies")
