"""What a webhook endpoint may be: an http(s) URL with a host, and known event types.

Shared by the admin UI (``web/ui/areas/webhooks.py``) and the API
(``web/api_webhooks.py``), so both accept the same endpoints.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from kakitome.errors import InputError
from kakitome.webhooks.events import EVENT_TYPES

__all__ = ["MAX_URL_LENGTH", "check_event_types", "valid_url"]

MAX_URL_LENGTH = 2000  # the column's size (webhook_endpoints.url)


def valid_url(url: str) -> bool:
    """True for an ``http``/``https`` URL with a host, at most ``MAX_URL_LENGTH`` long."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and len(url) <= MAX_URL_LENGTH


def check_event_types(kinds: Iterable[str]) -> list[str]:
    """The event types in ``EVENT_TYPES`` order, each once; InputError for an unknown one
    or none at all."""
    wanted = set(kinds)
    unknown = sorted(wanted - set(EVENT_TYPES))
    if unknown:
        raise InputError(
            f"unknown event type {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}"
        )
    if not wanted:
        raise InputError("an endpoint needs at least one event type")
    return [k for k in EVENT_TYPES if k in wanted]
