"""Tables for UI users, sessions, webhooks (issue 8).

On the shared metadata of kakitome.store.schema.

Imported at the end of schema.py so that every table is known to the migrations test.
"""

from __future__ import annotations

from kakitome.store.schema import metadata  # noqa: F401
