"""Where the service is reached over HTTP: ``public_url(settings)``, for ``kakitome serve``'s
start-up line and anything on the web side that writes an absolute URL. Imports only the
settings, so ``runtime`` and ``web`` can both use it without importing each other."""

from __future__ import annotations

from kakitome.config import Settings

__all__ = ["public_url"]


def public_url(settings: Settings) -> str:
    """``http.public_url`` without a trailing slash, else ``http://<host>:<port>`` (an IPv6
    host in brackets)."""
    if settings.http.public_url:
        return settings.http.public_url.rstrip("/")
    host = settings.http.host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.http.port}"
