"""Subject search from the Messages page and GET /api/v1/messages (trigram index)."""

from __future__ import annotations

import time

import httpx
import pytest

from kakitome.accounts.api_keys import ApiKeyStore
from kakitome.queue.store import QueueStore
from kakitome.store import search
from kakitome.store.database import Database
from tests.store.helpers import message
from tests.ui.conftest import Login


async def _inject(store: Database, *subjects: str) -> list[str]:
    ids: list[str] = []
    for n, subject in enumerate(subjects):
        batch = [message(f"r{n}@dest.example", subject=subject)]
        ids += await QueueStore(store).inject_many(batch, now=time.time() + n, lifetime=3600)
    return ids


async def test_ui_finds_japanese_subject(store: Database, user_client: Login) -> None:
    """「お知らせ」 finds the subject containing it and no other."""
    await _inject(store, "【重要】12月のお知らせ", "お知り合いの方へ", "Monthly newsletter")
    client = await user_client("viewer1", "viewer")
    page = await client.get("/ui/messages", params={"q": "お知らせ"})
    assert page.status_code == 200
    assert "【重要】12月のお知らせ" in page.text
    assert "お知り合いの方へ" not in page.text and "Monthly newsletter" not in page.text
    assert 'class="notice" role="status"' not in page.text


async def test_ui_says_when_a_short_query_searched_a_window(
    store: Database, user_client: Login, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-character query examines a window and says so, with a link to older ones."""
    monkeypatch.setattr(search, "SHORT_QUERY_WINDOW", 2)
    ids = await _inject(store, "月報", "x", "y")
    client = await user_client("viewer2", "viewer")
    page = await client.get("/ui/messages", params={"q": "月"})
    assert page.status_code == 200
    assert "this page looked at 2 messages only" in page.text
    assert f"before={ids[1]}" in page.text
    older = await client.get("/ui/messages", params={"q": "月", "before": ids[1]})
    assert "月報" in older.text


async def test_api_subject_search(client: httpx.AsyncClient, store: Database) -> None:
    """The API searches subjects through the same index: case-insensitive, Japanese."""
    ids = await _inject(store, "Invoice ready", "請求書のお知らせ", "INVOICE reminder")
    key = await ApiKeyStore(store).create_api_key("t", ["read"], now=time.time())
    headers = {"Authorization": f"Bearer {key}"}
    found = (await client.get("/api/v1/messages", params={"q": "invoice"}, headers=headers)).json()
    assert [m["id"] for m in found["items"]] == [ids[2], ids[0]]
    assert found["query_kind"] == "subject" and found["searched_window"] == 0
    found = (await client.get("/api/v1/messages", params={"q": "請求書"}, headers=headers)).json()
    assert [m["id"] for m in found["items"]] == [ids[1]]
