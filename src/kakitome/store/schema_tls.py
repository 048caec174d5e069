"""Tables for the MTA-STS cache, TLS-RPT session counts and reports, and MX host TLS
history (issue 4). On the shared metadata of kakitome.store.schema.

Imported at the end of schema.py so that every table is known to the migrations test.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, Index, Integer, String, Table, Text

from kakitome.store.schema import BigId, metadata

# One cached policy per domain (RFC 8461 §5.1): kept until fetched_at + max_age.
mta_sts_policies = Table(
    "mta_sts_policies",
    metadata,
    Column("domain", String(255), primary_key=True),
    Column("policy_id", String(32), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("max_age", Integer, nullable=False),
    Column("mx", Text, nullable=False),  # JSON list of patterns
    Column("policy_text", Text, nullable=False),
    Column("fetched_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)

# What each MX host showed (STARTTLS-stripping detection).
tls_host_history = Table(
    "tls_host_history",
    metadata,
    Column("mx_host", String(255), primary_key=True),
    Column("starttls_seen_at", Float),
    Column("verified_sha256", String(64)),
    Column("verified_seen_at", Float),
    Column("last_sha256", String(64)),
    Column("updated_at", Float, nullable=False),
)

# TLS-RPT: session counts per UTC day, policy domain, policy, MX host, IP and result.
tlsrpt_sessions = Table(
    "tlsrpt_sessions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("day", String(10), nullable=False),
    Column("policy_domain", String(255), nullable=False),
    # SHA-256 of everything below that identifies the row (unique index on it).
    Column("row_key", String(64), nullable=False),
    Column("policy_type", String(32), nullable=False),
    Column("policy_strings", Text, nullable=False),  # JSON list
    Column("mx_patterns", Text, nullable=False),  # JSON list
    Column("mx_host", String(255), nullable=False),
    Column("receiving_ip", String(64), nullable=False),
    Column("sending_ip", String(64), nullable=False),
    Column("result_type", String(40), nullable=False),  # "" for success
    Column("reason_code", String(64), nullable=False),
    Column("count", Integer, nullable=False),
    Index("uq_tlsrpt_sessions_row_key", "row_key", unique=True),
    Index("ix_tlsrpt_sessions_day", "day", "policy_domain"),
)

# Reports made (one per policy domain and day), so none is sent twice.
tlsrpt_reports = Table(
    "tlsrpt_reports",
    metadata,
    Column("policy_domain", String(255), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("report_id", String(255), nullable=False),
    Column("destinations", Text, nullable=False),  # JSON list of URIs it went to
    Column("sent_at", Float, nullable=False),
    Column("delivered", Boolean, nullable=False, server_default="0"),
)
