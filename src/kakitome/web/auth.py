"""Bearer API keys: ``Authorization: Bearer kk_...``, checked against the store (hashed).

401 when there is no valid key, 403 when the key lacks the scope. ``admin`` includes the
other scopes.

Verified keys are cached in memory (``ApiKeyCache``: one per key store, ``services.api_keys``,
shared by every route) for ``API_KEY_CACHE_TTL`` seconds (5), at most ``API_KEY_CACHE_SIZE``
keys (least recently used out first), so a busy client does not cost a database read per
request. What that means for revocation: a key revoked **in this process** (the admin API,
the web UI) is refused at once - the key store tells the cache (``add_api_key_listener``)
when a change to the keys other than ``last_used_at`` commits, and the cache empties
itself; a key revoked by **another process** (the CLI, another web process on PostgreSQL)
is refused within 5 seconds. The cache holds SHA-256 digests of keys, never the keys;
unknown and refused keys are not cached (each such request reads the store, as before).
``last_used_at`` is refreshed on cache misses, at most every minute as before.
"""

from __future__ import annotations

import hashlib
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from fastapi import Request

from kakitome.accounts.api_keys import ApiKeyInfo, ApiKeyStore
from kakitome.web.deps import get_services
from kakitome.web.errors import ApiError

SCOPES = ("send", "read", "admin")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="kakitome"'}

API_KEY_CACHE_TTL = 5.0
API_KEY_CACHE_SIZE = 1024


class ApiKeyCache:
    """Verified keys by SHA-256 digest, each for ``ttl`` seconds (monotonic clock).

    Subscribes to the key store (``add_api_key_listener``): a committed change to the
    keys other than last_used_at (a revocation) empties the cache and bumps
    ``generation``; a lookup that raced with such a commit is not cached.
    """

    def __init__(
        self,
        keys: ApiKeyStore,
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
        keys.add_api_key_listener(self.clear)

    async def check(self, keys: ApiKeyStore, token: str, *, now: float) -> ApiKeyInfo | None:
        """The key's info from the cache, else from ``keys.check_api_key`` (cached when
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
        info = await keys.check_api_key(token, now=now)
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


# One cache per key store, subscribed once (the store's listener keeps the cache alive as
# long as the store; the cache holds no reference to the store).
_caches: weakref.WeakKeyDictionary[ApiKeyStore, ApiKeyCache] = weakref.WeakKeyDictionary()


def key_cache(keys: ApiKeyStore) -> ApiKeyCache:
    """The key store's cache (made, and subscribed to the store, on first use)."""
    cache = _caches.get(keys)
    if cache is None:
        cache = _caches[keys] = ApiKeyCache(keys)
    return cache


def require_scope(scope: str) -> Callable[[Request], Awaitable[ApiKeyInfo]]:
    """A FastAPI dependency that returns the caller's key or raises 401/403. The keys are
    ``services.api_keys`` of the app that received the request; the time its clock."""
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
        services = get_services(request)
        keys = services.api_keys
        info = await key_cache(keys).check(keys, token, now=services.clock())
        if info is None:
            raise ApiError(401, "unauthorized", "the API key is not valid", _CHALLENGE)
        if scope not in info.scopes and "admin" not in info.scopes:
            raise ApiError(
                403, "forbidden", f"the API key {info.name!r} does not have the {scope!r} scope"
            )
        return info

    return dependency
