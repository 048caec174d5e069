"""Bearer API keys: ``Authorization: Bearer kk_...``, checked against the store (hashed).

401 when there is no valid key, 403 when the key lacks the scope. ``admin`` includes the
other scopes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from kakitome.store.repository import ApiKeyInfo, Store
from kakitome.web.errors import ApiError

SCOPES = ("send", "read", "admin")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="kakitome"'}


def require_scope(
    store: Store, scope: str, clock: Callable[[], float]
) -> Callable[[Request], Awaitable[ApiKeyInfo]]:
    """A FastAPI dependency that returns the caller's key or raises 401/403."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def dependency(request: Request) -> ApiKeyInfo:
        header = request.headers.get("authorization", "")
        kind, _, token = header.partition(" ")
        token = token.strip()
        if kind.lower() != "bearer" or not token:
            raise ApiError(
                401, "unauthorized", "an API key is needed: Authorization: Bearer <key>", _CHALLENGE
            )
        info = await store.check_api_key(token, now=clock())
        if info is None:
            raise ApiError(401, "unauthorized", "the API key is not valid", _CHALLENGE)
        if scope not in info.scopes and "admin" not in info.scopes:
            raise ApiError(
                403, "forbidden", f"the API key {info.name!r} does not have the {scope!r} scope"
            )
        return info

    return dependency
