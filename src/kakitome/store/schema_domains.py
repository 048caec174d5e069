"""Tables for sending domains and DKIM keys (issue 3).

On the shared metadata of kakitome.store.schema. Imported at the end of schema.py so that
every table is known to the migrations test.

- ``sending_domains``: one row per domain we sign for, by its A-label name; the U-label
  form is kept for display. ``state`` is the outcome of the last verification (``new``
  until the first one; then ``verified``, ``failing``); ``findings`` keeps its report.
- ``dkim_keys``: the keys of each domain. ``private_key`` is never plain: it is the
  AES-256-GCM box made by ``kakitome.domains.keybox`` (the secret lives in the settings, not
  in the database). ``public_txt`` is the DKIM TXT value to publish. ``state`` is
  ``pending`` (made by a rotation, waiting for DNS), ``active`` (signing), ``retiring``
  (replaced, still published until ``retire_at``) or ``retired`` (private key wiped).
- ``ix_messages_sender``: finds the message of a VERP return path
  (``bounce+<token>@<return-path domain>``) when its bounce comes back.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    Float,
    ForeignKey,
    Index,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from kakitome.store.schema import BigId, messages, metadata

sending_domains = Table(
    "sending_domains",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),  # A-labels, lower case
    Column("unicode_name", String(255), nullable=False),
    Column("return_path", String(255), nullable=False),  # e.g. bounce.example.com
    Column("created_at", Float, nullable=False),
    Column("state", String(16), nullable=False, server_default="new"),
    Column("verified_at", Float),
    Column("findings", JSON),
)

dkim_keys = Table(
    "dkim_keys",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "domain_id",
        BigId,
        ForeignKey("sending_domains.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("selector", String(63), nullable=False),
    Column("key_type", String(16), nullable=False),  # rsa | ed25519
    Column("public_txt", Text, nullable=False),
    Column("private_key", Text, nullable=False),  # keybox ciphertext, "" once retired
    Column("state", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("activated_at", Float),
    Column("retire_at", Float),
    UniqueConstraint("domain_id", "selector"),
    Index("ix_dkim_keys_domain_id", "domain_id"),
)

Index("ix_messages_sender", messages.c.sender)
