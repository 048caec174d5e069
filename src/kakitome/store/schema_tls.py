"""Tables for MTA-STS cache, TLS-RPT sessions, MX host TLS history (issue 4).

On the shared metadata of kakitome.store.schema.

Imported at the end of schema.py so that every table is known to the migrations test.
"""

from __future__ import annotations

from kakitome.store.schema import metadata  # noqa: F401
