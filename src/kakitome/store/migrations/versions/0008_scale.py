"""Tables for connection slots and budgets per destination site (issue 9).

See kakitome.store.schema_scale.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "site_slots",
        sa.Column("site", sa.String(255), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("site", "slot", name="pk_site_slots"),
    )
    op.create_index("ix_site_slots_owner", "site_slots", ["owner"])
    op.create_table(
        "site_state",
        sa.Column("site", sa.String(255), nullable=False),
        sa.Column("window", sa.Float(), nullable=False),
        sa.Column("cooldown_until", sa.Float(), nullable=False, server_default="0"),
        sa.Column("rate_window", sa.Float(), nullable=False, server_default="0"),
        sa.Column("rate_used", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("site", name="pk_site_state"),
    )


def downgrade() -> None:
    op.drop_table("site_state")
    op.drop_index("ix_site_slots_owner", table_name="site_slots")
    op.drop_table("site_slots")
