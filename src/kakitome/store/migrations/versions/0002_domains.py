"""Tables for sending domains and DKIM keys (issue 3); see kakitome.store.schema_domains.

Also an index on messages.sender, so that a VERP return path finds its message.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sending_domains",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("unicode_name", sa.String(255), nullable=False),
        sa.Column("return_path", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="new"),
        sa.Column("verified_at", sa.Float(), nullable=True),
        sa.Column("findings", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sending_domains"),
        sa.UniqueConstraint("name", name="uq_sending_domains_name"),
    )
    op.create_table(
        "dkim_keys",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("domain_id", BigId, nullable=False),
        sa.Column("selector", sa.String(63), nullable=False),
        sa.Column("key_type", sa.String(16), nullable=False),
        sa.Column("public_txt", sa.Text(), nullable=False),
        sa.Column("private_key", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("activated_at", sa.Float(), nullable=True),
        sa.Column("retire_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_dkim_keys"),
        sa.ForeignKeyConstraint(
            ["domain_id"],
            ["sending_domains.id"],
            name="fk_dkim_keys_domain_id_sending_domains",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("domain_id", "selector", name="uq_dkim_keys_domain_id_selector"),
    )
    op.create_index("ix_dkim_keys_domain_id", "dkim_keys", ["domain_id"])
    op.create_index("ix_messages_sender", "messages", ["sender"])


def downgrade() -> None:
    op.drop_index("ix_messages_sender", table_name="messages")
    op.drop_index("ix_dkim_keys_domain_id", table_name="dkim_keys")
    op.drop_table("dkim_keys")
    op.drop_table("sending_domains")
