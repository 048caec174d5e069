"""POST /api/v1/messages/batch: many messages, one request, one commit; all or nothing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kakitome.accounts.api_keys import ApiKeyStore
from kakitome.config import Settings
from kakitome.injection import Injector
from kakitome.queue.store import QueueStore
from kakitome.services import Services, build_services
from kakitome.store.database import Database
from kakitome.web import create_app


@pytest.fixture
def settings() -> Settings:
    return Settings.model_validate(
        {"delivery": {"max_message_size": 64 * 1024}, "http": {"max_batch_messages": 5}}
    )


@pytest.fixture
async def services(store: Database, settings: Settings) -> Services:
    return build_services(settings, store, signing=None)


@pytest.fixture
async def injector(services: Services) -> Injector:
    return services.injector


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://kakitome.test") as c:
        yield c


async def _headers(store: Database, *scopes: str) -> dict[str, str]:
    key = await ApiKeyStore(store).create_api_key(
        "test", scopes or ("send", "read"), now=time.time()
    )
    return {"Authorization": f"Bearer {key}"}


def _message(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "from": "書留 <info@example.jp>",
        "to": [f"user{n}@example.com"],
        "subject": f"第{n}号 お知らせ",
        "text": f"{n}番目のメッセージです。",
        **extra,
    }


async def _queued(store: Database) -> int:
    return len(await QueueStore(store).list_deliveries(limit=1000))


async def test_batch_queues_every_message_in_one_commit(
    client: httpx.AsyncClient, store: Database, injector: Injector
) -> None:
    headers = await _headers(store)
    batch = [_message(n) for n in range(4)]
    batch[2]["to"] = ["a@example.com", "b@example.org", "a@EXAMPLE.COM"]
    commits = injector.committer.commits
    response = await client.post(
        "/api/v1/messages/batch", json={"messages": batch}, headers=headers
    )
    assert response.status_code == 202, response.text
    accepted = response.json()["messages"]
    assert [m["recipients"] for m in accepted] == [1, 1, 2, 1]
    assert len({m["id"] for m in accepted}) == 4
    assert injector.committer.commits == commits + 1
    # Each id is its own message, in the order given, with its receipt.
    for n, entry in enumerate(accepted):
        receipt = (await client.get(f"/api/v1/messages/{entry['id']}", headers=headers)).json()
        assert receipt["subject"] == f"第{n}号 お知らせ"
        assert len(receipt["recipients"]) == entry["recipients"]
    assert await _queued(store) == 5


async def test_one_bad_message_refuses_the_batch_and_names_it(
    client: httpx.AsyncClient, store: Database
) -> None:
    headers = await _headers(store)
    cases: list[tuple[dict[str, Any], int, str]] = [
        (_message(1, to=["not an address"]), 422, "invalid_address"),
        (_message(1, to=[]), 422, "invalid_"),
        (_message(1, raw="Subject: x\r\n\r\nbody"), 422, "invalid_request"),
        (_message(1, text="x" * 70_000), 413, "message_too_large"),
        (_message(1, headers={"X-Evil": "a\r\nBcc: victim@example.net"}), 422, "invalid_"),
    ]
    for bad, status, code in cases:
        batch = [_message(0), bad, _message(2)]
        response = await client.post(
            "/api/v1/messages/batch", json={"messages": batch}, headers=headers
        )
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"].startswith(code)
        assert error["message"].startswith("messages[1]: ")
    assert await _queued(store) == 0


async def test_limits_and_scopes(client: httpx.AsyncClient, store: Database) -> None:
    headers = await _headers(store)
    too_many = {"messages": [_message(n) for n in range(6)]}
    response = await client.post("/api/v1/messages/batch", json=too_many, headers=headers)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "batch_too_large"
    empty = await client.post("/api/v1/messages/batch", json={"messages": []}, headers=headers)
    assert empty.status_code == 422
    malformed = {"messages": [_message(0), {"from": "a@example.com", "to": "x", "bogus": 1}]}
    response = await client.post("/api/v1/messages/batch", json=malformed, headers=headers)
    assert response.status_code == 422
    assert "messages.1" in response.json()["error"]["message"]
    read_only = await _headers(store, "read")
    one = {"messages": [_message(0)]}
    assert (await client.post("/api/v1/messages/batch", json=one)).status_code == 401
    response = await client.post("/api/v1/messages/batch", json=one, headers=read_only)
    assert response.status_code == 403
    assert await _queued(store) == 0
