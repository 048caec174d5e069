"""CSV import jobs in the database (issue 8); see kakitome.store.schema_imports.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "list_import_jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("list_id", BigId, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("encoding", sa.String(32), nullable=True),
        sa.Column("row_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("inserted", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("updated", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("duplicates", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("rejected_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("rejected", sa.JSON(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_by", sa.String(200), nullable=False, server_default=""),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_list_import_jobs"),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["mailing_lists.id"],
            name="fk_list_import_jobs_list_id_mailing_lists",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_list_import_jobs_status_heartbeat_at",
        "list_import_jobs",
        ["status", "heartbeat_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_list_import_jobs_status_heartbeat_at", table_name="list_import_jobs")
    op.drop_table("list_import_jobs")
