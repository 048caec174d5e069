"""The settings overlay (issue 8): settings changed at run time from the UI or the API.

On the shared metadata of kakitome.store.schema; imported at the end of schema.py.

- ``settings_overlay``: one row per overridden ``section.key`` (only the keys that
  ``kakitome.settings_overlay.EDITABLE`` lists), its value as JSON (what the pydantic
  model takes; route secrets are kept in the clear, as they sign requests), when and by
  whom it was last changed. Removing a row returns the key to the file or default value.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Float, String, Table

from kakitome.store.schema import metadata

settings_overlay = Table(
    "settings_overlay",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("updated_by", String(200), nullable=False, server_default=""),
)
