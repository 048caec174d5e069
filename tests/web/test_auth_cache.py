"""API keys cached in memory: no store read per request; revocation in this process is
seen at once, in another process within the cache's TTL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest

from kakitome.accounts.api_keys import ApiKeyStore
from kakitome.config import Settings
from kakitome.services import Services, build_services
from kakitome.store.database import Database
from kakitome.web import create_app
from kakitome.web.auth import ApiKeyCache, key_cache

SETTINGS = Settings.model_validate({})


@pytest.fixture
def services(store: Database) -> Services:
    return build_services(SETTINGS, store, signing=None)


@pytest.fixture
def api_keys(services: Services) -> ApiKeyStore:
    """The key store the app checks keys against (``services.api_keys``)."""
    return services.api_keys


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://kakitome.test") as c:
        yield c


def _count_reads(api_keys: ApiKeyStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    original = api_keys.check_api_key

    async def counted(key: str, *, now: float) -> object:
        reads.append(key)
        return await original(key, now=now)

    monkeypatch.setattr(api_keys, "check_api_key", counted)
    return reads


async def test_repeated_requests_read_the_store_once(
    client: httpx.AsyncClient, api_keys: ApiKeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await api_keys.create_api_key("t", ("read",), now=time.time())
    reads = _count_reads(api_keys, monkeypatch)
    headers = {"Authorization": f"Bearer {key}"}
    for _ in range(5):
        response = await client.get("/api/v1/messages/nope", headers=headers)
        assert response.status_code == 404
    assert len(reads) == 1
    # A wrong key is never cached: each try reads the store and is refused.
    for _ in range(2):
        bad = await client.get("/api/v1/messages/x", headers={"Authorization": "Bearer kk_x"})
        assert bad.status_code == 401
    assert len(reads) == 3


async def test_revoked_in_this_process_refused_at_once(
    client: httpx.AsyncClient, api_keys: ApiKeyStore
) -> None:
    key = await api_keys.create_api_key("t", ("read",), now=time.time())
    info = await api_keys.check_api_key(key, now=time.time())
    assert info is not None
    headers = {"Authorization": f"Bearer {key}"}
    assert (await client.get("/api/v1/messages/x", headers=headers)).status_code == 404
    assert len(key_cache(api_keys)) == 1
    assert await api_keys.revoke_api_key(info.id, now=time.time())
    assert len(key_cache(api_keys)) == 0
    assert (await client.get("/api/v1/messages/x", headers=headers)).status_code == 401


async def test_last_use_refresh_keeps_the_cache(api_keys: ApiKeyStore) -> None:
    """The last_used_at write of a cache miss does not empty the cache."""
    cache = key_cache(api_keys)
    first = await api_keys.create_api_key("a", ("read",), now=time.time())
    second = await api_keys.create_api_key("b", ("read",), now=time.time())
    assert await cache.check(api_keys, first, now=time.time()) is not None
    assert await cache.check(api_keys, second, now=time.time()) is not None  # writes last_used
    assert len(cache) == 2


async def test_revoked_elsewhere_refused_within_the_ttl(
    api_keys: ApiKeyStore, database_url: str
) -> None:
    """Another process (here another Database on the same database) revokes the key: this
    process refuses it once the entry is older than the TTL."""
    moment = [0.0]
    cache = ApiKeyCache(api_keys, ttl=5.0, clock=lambda: moment[0])
    key = await api_keys.create_api_key("t", ("read",), now=time.time())
    info = await cache.check(api_keys, key, now=time.time())
    assert info is not None
    other = await Database.open(database_url, migrate=False)
    try:
        assert await ApiKeyStore(other).revoke_api_key(info.id, now=time.time())
    finally:
        await other.close()
    moment[0] = 4.9
    assert await cache.check(api_keys, key, now=time.time()) == info  # still cached
    moment[0] = 5.1
    assert await cache.check(api_keys, key, now=time.time()) is None


async def test_size_is_bounded(api_keys: ApiKeyStore) -> None:
    cache = ApiKeyCache(api_keys, max_entries=3)
    keys = [await api_keys.create_api_key(f"k{n}", ("read",), now=time.time()) for n in range(5)]
    for key in keys:
        assert await cache.check(api_keys, key, now=time.time()) is not None
    assert len(cache) == 3
    assert cache.misses == 5
    assert await cache.check(api_keys, keys[-1], now=time.time()) is not None
    assert cache.hits == 1
