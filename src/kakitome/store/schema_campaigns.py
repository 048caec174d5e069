"""Tables for campaigns, templates, sends, step-mail progress and tracking (issue 7).

On the shared metadata of kakitome.store.schema; imported at the end of schema.py so that
every table is known to the migrations test.
"""

from __future__ import annotations

from kakitome.store.schema import metadata  # noqa: F401
