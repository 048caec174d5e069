"""Bearer API keys: ``Authorization: Bearer kk_...``, checked against the store (hashed).

401 when there is no valid key, 403 when the key lacks the scope. ``admin`` includes the
other scopes.

Verified keys are cached in memory (``ApiKeyCache``: one per store, shared by every route)
for ``API_KEY_CACHE_TTL`` seconds (5), at most ``API_KEY_CACHE_SIZE`` keys (least recently
used out first), so a busy client does not cost a database read per request. What that
means for revocation: a key revoked **in this process** (the admin API, the web UI) is
refused at once - the cache is emptied when a change to the api_keys table other than
``last_used_at`` commits; a key revoked by **another process** (the CLI, another web
process on PostgreSQL) is refused within 5 seconds. The cache holds SHA-256 digests of
keys, never the keys; unknown and refused keys are not cached (each such request reads the
store, as before). ``last_used_at`` is refreshed on cache misses, at most every minute as
before.
"""

from __future__ import annotations

import hashlib
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from sqlalchemy import Delete, Update, event

from kakitome.store.repository import ApiKeyInfo, Store
from kakitome.store.schema import api_keys
from kakitome.web.errors import ApiError

SCOPES = ("send", "read", "admin")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="kakitome"'}

API_KEY_CACHE_TTL = 5.0
API_KEY_CACHE_SIZE = 1024
# Columns whose change must be seen at once (everything but the last-use time).
_WATCHED = frozenset(column.name for column in api_keys.c) - {"last_used_at"}
_CHANGED = "kakitome_api_keys_changed"


class ApiKeyCache:
    """Verified keys by SHA-256 digest, each for ``ttl`` seconds (monotonic clock).

    Listens to the store's engine: a committed UPDATE of api_keys that sets a column other
    than last_used_at (revocation), or a DELETE, empties the cache and bumps
    ``generation``; a lookup that raced with such a commit is not cached.
    """

    def __init__(
        self,
        store: Store,
        *,
        ttl: float = API_KEY_CACHE_TTL,
        max_entries: int = API_KEY_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[ApiKeyInfo, float]] = OrderedDict()
        self.generation = 0
        self.hits = 0
        self.misses = 0
        engine = store.engine.sync_engine
        event.listen(engine, "after_execute", self._after_execute)
        event.listen(engine, "commit", self._after_commit)
        event.listen(engine, "rollback", self._after_rollback)

    async def check(self, store: Store, token: str, *, now: float) -> ApiKeyInfo | None:
        """The key's info from the cache, else from ``store.check_api_key`` (cached when
        valid)."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        entry = self._entries.get(digest)
        moment = self._clock()
        if entry is not None:
            if entry[1] > moment:
                self.hits += 1
                self._entries.move_to_end(digest)
                return entry[0]
            del self._entries[digest]
        self.misses += 1
        generation = self.generation
        info = await store.check_api_key(token, now=now)
        if info is not None and generation == self.generation and self.ttl > 0:
            self._entries[digest] = (info, moment + self.ttl)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return info

    def clear(self) -> None:
        """Forget every key (the next request of each reads the store)."""
        self.generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    # -- engine events (run in the event loop's thread, inside the connection's greenlet)

    def _after_execute(self, conn: Any, clause: Any, *_args: Any) -> None:
        if not isinstance(clause, Update | Delete) or clause.table is not api_keys:
            return
        if isinstance(clause, Delete) or _WATCHED & set(clause.compile().params):
            conn.info[_CHANGED] = True

    def _after_commit(self, conn: Any) -> None:
        if conn.info.pop(_CHANGED, False):
            self.clear()

    def _after_rollback(self, conn: Any) -> None:
        # An invalidated connection (cut, or its operation cancelled) has no info left to
        # clear, and touching it would raise over the error that invalidated it.
        if conn.invalidated:
            return
        conn.info.pop(_CHANGED, None)


_caches: weakref.WeakKeyDictionary[Store, ApiKeyCache] = weakref.WeakKeyDictionary()


def key_cache(store: Store) -> ApiKeyCache:
    """The store's key cache (made on first use)."""
    cache = _caches.get(store)
    if cache is None:
        cache = _caches[store] = ApiKeyCache(store)
    return cache


def require_scope(
    store: Store, scope: str, clock: Callable[[], float]
) -> Callable[[Request], Awaitable[ApiKeyInfo]]:
    """A FastAPI dependency that returns the caller's key or raises 401/403."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    cache = key_cache(store)

    async def dependency(request: Request) -> ApiKeyInfo:
        header = request.headers.get("authorization", "")
        kind, _, token = header.partition(" ")
        token = token.strip()
        if kind.lower() != "bearer" or not token:
            raise ApiError(
                401, "unauthorized", "an API key is needed: Authorization: Bearer <key>", _CHALLENGE
            )
        info = await cache.check(store, token, now=clock())
        if info is None:
            raise ApiError(401, "unauthorized", "the API key is not valid", _CHALLENGE)
        if scope not in info.scopes and "admin" not in info.scopes:
            raise ApiError(
                403, "forbidden", f"the API key {info.name!r} does not have the {scope!r} scope"
            )
        return info

    return dependency
