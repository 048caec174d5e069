"""Tables for scale-out (issue 9): connection slots and budgets per destination site,
shared by every worker process on one database. On the shared metadata of
kakitome.store.schema; imported at the end of schema.py.

Rows here are short-lived state, not records: a slot is held by a worker while it has a
connection open to the site and returns when the worker releases it or its lease runs
out (the worker died).
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, String, Table

from kakitome.store.schema import metadata

# One row per connection slot of a site: slot < the site's current limit may be taken.
site_slots = Table(
    "site_slots",
    metadata,
    Column("site", String(255), primary_key=True),
    Column("slot", Integer, primary_key=True, autoincrement=False),
    Column("owner", String(128)),
    Column("lease_until", Float),
    Index("ix_site_slots_owner", "owner"),
)

# The site's shared budget: the slow-start window (connections allowed now), the end of
# the back-off cool-down, and the messages-per-minute counter of the current minute.
site_state = Table(
    "site_state",
    metadata,
    Column("site", String(255), primary_key=True),
    Column("window", Float, nullable=False),
    Column("cooldown_until", Float, nullable=False, server_default="0"),
    Column("rate_window", Float, nullable=False, server_default="0"),
    Column("rate_used", Integer, nullable=False, server_default="0"),
    Column("updated_at", Float, nullable=False),
)
