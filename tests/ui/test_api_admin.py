"""The admin API: messages search, queue, queue actions, stats, API keys — and their scopes."""

from __future__ import annotations

import time

import httpx
import pytest

from kakitome.accounts.api_keys import ApiKeyStore
from kakitome.queue.store import QueueStore
from kakitome.queue.types import NewMessage, NewRecipient
from kakitome.store.database import Database

ENDPOINTS = [
    ("GET", "/api/v1/messages", None, "read"),
    ("GET", "/api/v1/queue", None, "read"),
    ("GET", "/api/v1/stats", None, "read"),
    ("POST", "/api/v1/queue/actions", {"action": "hold", "all": True}, "admin"),
    ("GET", "/api/v1/api-keys", None, "admin"),
    ("POST", "/api/v1/api-keys", {"name": "x", "scopes": ["send"]}, "admin"),
    ("DELETE", "/api/v1/api-keys/1", None, "admin"),
]


async def _key(store: Database, *scopes: str) -> dict[str, str]:
    key = await ApiKeyStore(store).create_api_key("t", scopes, now=time.time())
    return {"Authorization": f"Bearer {key}"}


async def _inject(store: Database, n: int, domain: str = "example.com") -> list[str]:
    message = NewMessage(
        source="api",
        sender="news@sender.test",
        header_from="news@sender.test",
        subject="お知らせ",
        content=b"Subject: x\r\n\r\nbody\r\n",
        recipients=(NewRecipient(f"user@{domain}", domain),),
    )
    return await QueueStore(store).inject_many([message] * n, now=time.time(), lifetime=3600)


@pytest.mark.parametrize(("method", "path", "body", "scope"), ENDPOINTS)
async def test_endpoints_refuse_missing_and_wrong_scoped_keys(
    client: httpx.AsyncClient, store: Database, method: str, path: str, body: object, scope: str
) -> None:
    """No key gives 401, a bad key 401, a key without the scope 403."""
    assert (await client.request(method, path, json=body)).status_code == 401
    bad = {"Authorization": "Bearer kk_abcdefgh_nope"}
    assert (await client.request(method, path, json=body, headers=bad)).status_code == 401
    wrong = await _key(store, "send") if scope == "read" else await _key(store, "send", "read")
    response = await client.request(method, path, json=body, headers=wrong)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


async def test_search_paginates_newest_first(client: httpx.AsyncClient, store: Database) -> None:
    """Pages follow next_before with no gaps or repeats; filters by domain and status."""
    ids = await _inject(store, 7)
    await _inject(store, 2, domain="other.example")
    headers = await _key(store, "read")
    seen: list[str] = []
    before = None
    while True:
        params = {"q": "@example.com", "limit": 3, **({"before": before} if before else {})}
        page = (await client.get("/api/v1/messages", params=params, headers=headers)).json()
        seen += [m["id"] for m in page["items"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == sorted(ids, reverse=True)
    one = (await client.get("/api/v1/messages", params={"q": ids[0]}, headers=headers)).json()
    assert [m["id"] for m in one["items"]] == [ids[0]] and one["query_kind"] == "id"
    held = (await client.get("/api/v1/messages", params={"status": "held"}, headers=headers)).json()
    assert held["items"] == []


async def test_bulk_queue_actions(client: httpx.AsyncClient, store: Database) -> None:
    """Hold then release then delete by message ids; counts are returned."""
    ids = await _inject(store, 3)
    headers = await _key(store, "admin")

    async def act(action: str, **extra: object) -> int:
        body = {"action": action, **extra}
        response = await client.post("/api/v1/queue/actions", json=body, headers=headers)
        assert response.status_code == 200, response.text
        return int(response.json()["count"])

    assert await act("hold", message_ids=ids[:2]) == 2
    queue = (await client.get("/api/v1/queue?status=held", headers=headers)).json()
    assert sorted(r["message_id"] for r in queue["items"]) == sorted(ids[:2])
    assert await act("release", message_ids=ids[:1]) == 1
    assert await act("delete", message_ids=ids) == 3
    refused = await client.post("/api/v1/queue/actions", json={"action": "hold"}, headers=headers)
    assert refused.status_code == 422


async def test_stats_and_keys(client: httpx.AsyncClient, store: Database) -> None:
    """Stats count accepted recipients; a key made by the API works once and is revoked."""
    await _inject(store, 4)
    headers = await _key(store, "admin")
    stats = (await client.get("/api/v1/stats?hours=2", headers=headers)).json()
    assert stats["total"]["queued"] == 4 and stats["queue"]["queued"] == 4
    made = await client.post(
        "/api/v1/api-keys", json={"name": "ci", "scopes": ["read"]}, headers=headers
    )
    assert made.status_code == 201
    new = {"Authorization": f"Bearer {made.json()['key']}"}
    assert (await client.get("/api/v1/stats", headers=new)).status_code == 200
    gone = await client.delete(f"/api/v1/api-keys/{made.json()['id']}", headers=headers)
    assert gone.status_code == 204
    assert (await client.get("/api/v1/stats", headers=new)).status_code == 401
    assert (await client.delete("/api/v1/api-keys/999999", headers=headers)).status_code == 404


async def test_metrics_and_health(client: httpx.AsyncClient, store: Database) -> None:
    """/metrics speaks Prometheus text; /healthz still answers."""
    await _inject(store, 2)
    text = (await client.get("/metrics")).text
    assert 'kakitome_queue_deliveries{status="queued"} 2.0' in text
    assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_catalogues_have_the_same_keys() -> None:
    """Every English message has a Japanese translation."""
    from kakitome.web.ui.messages_en import EN
    from kakitome.web.ui.messages_ja import JA

    assert set(EN) == set(JA)
