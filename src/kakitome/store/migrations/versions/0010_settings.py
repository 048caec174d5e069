"""The settings overlay (issue 8); see kakitome.store.schema_settings.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "settings_overlay",
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("key", name="pk_settings_overlay"),
    )


def downgrade() -> None:
    op.drop_table("settings_overlay")
