"""The HTTP API over the group committer: concurrent requests share transactions, 202
still means committed, and a failed commit is a 503 for every request in it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import httpx
import pytest

from kakitome.config import Settings
from kakitome.errors import StorageError
from kakitome.queue.store import QueueStore
from kakitome.queue.types import NewMessage
from kakitome.services import Services, build_services
from kakitome.store.database import Database
from kakitome.web import create_app

SETTINGS = Settings.model_validate({})


def _message(n: int) -> dict[str, object]:
    return {
        "from": "書留 <info@example.jp>",
        "to": [f"山田 <u{n}@example.com>"],
        "subject": f"お知らせ {n}",
        "text": f"本文 {n}",
    }


async def _client(services: Services) -> tuple[httpx.AsyncClient, dict[str, str]]:
    key = await services.api_keys.create_api_key("t", ("send", "read"), now=time.time())
    transport = httpx.ASGITransport(app=create_app(services))
    client = httpx.AsyncClient(transport=transport, base_url="http://kakitome.test")
    return client, {"Authorization": f"Bearer {key}"}


async def test_concurrent_requests_share_commits(store: Database) -> None:
    """100 concurrent POSTs: all 202 with distinct ids whose receipts hold their own
    message, committed in fewer transactions than requests."""
    services = build_services(SETTINGS, store, signing=None)
    injector = services.injector
    client, headers = await _client(services)
    async with client:
        responses = await asyncio.gather(
            *(
                client.post("/api/v1/messages", json=_message(n), headers=headers)
                for n in range(100)
            )
        )
        assert [r.status_code for r in responses] == [202] * 100
        ids = [r.json()["id"] for r in responses]
        assert len(set(ids)) == 100
        for n in (0, 42, 99):
            receipt = (await client.get(f"/api/v1/messages/{ids[n]}", headers=headers)).json()
            assert receipt["subject"] == f"お知らせ {n}"
            assert [r["address"] for r in receipt["recipients"]] == [f"u{n}@example.com"]
    assert injector.committer.committed == 100
    assert injector.committer.commits < 100


async def test_failed_commit_is_503_for_every_request(
    store: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transaction fails: every request that waited on it gets 503, none a 202."""
    services = build_services(SETTINGS, store, signing=None)
    client, headers = await _client(services)
    batches: list[int] = []

    async def broken(batch: Sequence[NewMessage], *, now: float, lifetime: float) -> list[str]:
        batches.append(len(batch))
        await asyncio.sleep(0.01)
        raise StorageError("database did not commit: disk full")

    monkeypatch.setattr(services.queue, "inject_many", broken)
    async with client:
        responses = await asyncio.gather(
            *(client.post("/api/v1/messages", json=_message(n), headers=headers) for n in range(30))
        )
    assert [r.status_code for r in responses] == [503] * 30
    assert all(r.json()["error"]["code"] == "storage_unavailable" for r in responses)
    assert sum(batches) == 30
    monkeypatch.undo()
    assert await QueueStore(store).list_deliveries() == []
