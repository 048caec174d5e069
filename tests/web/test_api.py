"""The HTTP API: submit, receipt, keys, and refusals with nothing queued."""

from __future__ import annotations

import base64
import email
import email.policy
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kakitome.accounts.api_keys import ApiKeyStore
from kakitome.config import Settings
from kakitome.queue.store import QueueStore
from kakitome.services import build_services
from kakitome.store.database import Database
from kakitome.web import create_app
from kakitome.web.app import body_limit

MAX_SIZE = 64 * 1024


@pytest.fixture
def settings() -> Settings:
    return Settings.model_validate({"delivery": {"max_message_size": MAX_SIZE}})


@pytest.fixture
async def client(store: Database, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(build_services(settings, store, signing=None))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://kakitome.test") as c:
        yield c


async def _key(store: Database, *scopes: str) -> dict[str, str]:
    key = await ApiKeyStore(store).create_api_key(
        "test", scopes or ("send", "read", "admin"), now=time.time()
    )
    return {"Authorization": f"Bearer {key}"}


async def _queued(store: Database) -> int:
    return len(await QueueStore(store).list_deliveries(limit=1000))


MESSAGE: dict[str, Any] = {
    "from": "書留 <info@example.jp>",
    "to": ["a@example.com", "b@例え.jp"],
    "cc": ["c@example.com"],
    "bcc": ["hidden@example.org", "a@EXAMPLE.COM"],
    "subject": "ご注文ありがとうございます",
    "text": "山田様\nありがとうございます。",
    "html": "<p>山田様</p>",
    "attachments": [
        {
            "filename": "明細.txt",
            "content_type": "text/plain",
            "content_base64": base64.b64encode("明細".encode()).decode(),
        }
    ],
    "headers": {"X-Campaign": "spring"},
}


async def test_submit_then_receipt(client: httpx.AsyncClient, store: Database) -> None:
    """POST gives 202 with an id once stored; GET gives the receipt with each recipient."""
    headers = await _key(store)
    response = await client.post("/api/v1/messages", json=MESSAGE, headers=headers)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["recipients"] == 4  # a, b (IDN), c, hidden: a@EXAMPLE.COM is a duplicate
    receipt = (await client.get(f"/api/v1/messages/{body['id']}", headers=headers)).json()
    assert receipt["id"] == body["id"]
    assert receipt["from"] == "info@example.jp"
    assert receipt["subject"] == "ご注文ありがとうございます"
    assert receipt["created_at"].endswith("Z")
    addresses = sorted(r["address"] for r in receipt["recipients"])
    assert "b@xn--r8jz45g.jp" in addresses
    for row in receipt["recipients"]:
        assert row["status"] == "queued"
        assert row["attempts"] == 0
        assert row["mx"] is None and row["reply"] is None and row["tls"] is None
        assert row["updated_at"].endswith("Z")
    batches = await QueueStore(store).claim_due(
        "t", now=time.time() + 1, limit=100, lease_seconds=60
    )
    content = batches[0].messages[0].content
    assert b"hidden" not in content
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    assert parsed["Subject"] == MESSAGE["subject"]


async def test_recipients_deduplicated(client: httpx.AsyncClient, store: Database) -> None:
    """The same address in to, cc and bcc (domain case differing) is one delivery."""
    headers = await _key(store)
    response = await client.post(
        "/api/v1/messages",
        json={"from": "info@example.jp", "to": ["a@Example.com"], "cc": ["a@example.COM"],
              "bcc": ["a@EXAMPLE.com"], "text": "x"},
        headers=headers,
    )  # fmt: skip
    assert response.status_code == 202, response.text
    assert response.json()["recipients"] == 1
    assert await _queued(store) == 1


async def test_raw_submission(client: httpx.AsyncClient, store: Database) -> None:
    """A raw message with an envelope is queued to the envelope recipients only."""
    headers = await _key(store)
    raw = "From: info@example.jp\nTo: a@example.com\nSubject: 件名\n\n本文\n"
    response = await client.post(
        "/api/v1/messages",
        json={"raw": raw, "envelope": {"from": "bounces@example.jp", "to": ["z@example.net"]}},
        headers=headers,
    )
    assert response.status_code == 202, response.text
    rows = await QueueStore(store).list_deliveries(message_id=response.json()["id"])
    assert [r.recipient for r in rows] == ["z@example.net"]
    receipt = await QueueStore(store).receipt(response.json()["id"])
    assert receipt.sender == "bounces@example.jp"


async def test_raw_base64_not_utf8(client: httpx.AsyncClient, store: Database) -> None:
    """Non-UTF-8 raw input is a 422 that says so, and nothing is queued."""
    headers = await _key(store)
    raw = b"From: info@example.jp\r\nTo: a@example.com\r\n\r\n\x82\xa0\x82\xa2\r\n"  # Shift_JIS
    response = await client.post(
        "/api/v1/messages",
        json={"raw_base64": base64.b64encode(raw).decode()},
        headers=headers,
    )
    assert response.status_code == 422
    assert "not UTF-8" in response.json()["error"]["message"]
    assert await _queued(store) == 0


async def test_no_key_401(client: httpx.AsyncClient, store: Database) -> None:
    """Without a key, or with a wrong one, the API answers 401 with a Bearer challenge."""
    response = await client.post("/api/v1/messages", json=MESSAGE)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "unauthorized"
    bad = {"Authorization": "Bearer kk_nothere_xxxxxxxxxxxxxxxxxxxxxxxx"}
    assert (await client.get("/api/v1/messages/abc", headers=bad)).status_code == 401
    assert await _queued(store) == 0


async def test_wrong_scope_403(client: httpx.AsyncClient, store: Database) -> None:
    """A read-only key cannot send (403); a send-only key cannot read receipts (403)."""
    reader = await _key(store, "read")
    sender = await _key(store, "send")
    response = await client.post("/api/v1/messages", json=MESSAGE, headers=reader)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    accepted = await client.post("/api/v1/messages", json=MESSAGE, headers=sender)
    assert accepted.status_code == 202
    path = f"/api/v1/messages/{accepted.json()['id']}"
    assert (await client.get(path, headers=sender)).status_code == 403
    assert (await client.get(path, headers=reader)).status_code == 200


async def test_invalid_address_422_nothing_queued(
    client: httpx.AsyncClient, store: Database
) -> None:
    """One bad address among good ones: 422 naming the problem, and nothing is queued."""
    headers = await _key(store)
    payload = {**MESSAGE, "to": ["good@example.com", "bad..address@example.com"]}
    response = await client.post("/api/v1/messages", json=payload, headers=headers)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_address"
    assert "bad..address" in error["message"]
    assert await _queued(store) == 0


@pytest.mark.parametrize(
    "change",
    [
        {"subject": "hello\r\nBcc: victim@example.com"},
        {"from": "Evil\nBcc: victim@example.com <info@example.jp>"},
        {"headers": {"X-Tag": "x\r\nBcc: victim@example.com"}},
        {"headers": {"Bcc": "victim@example.com"}},
    ],
)
async def test_header_injection_refused(
    client: httpx.AsyncClient, store: Database, change: dict[str, Any]
) -> None:
    """CR/LF in the subject, names or headers (or a reserved header) is a 422; nothing queued."""
    headers = await _key(store)
    response = await client.post("/api/v1/messages", json={**MESSAGE, **change}, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] in ("invalid_message", "invalid_address")
    assert await _queued(store) == 0


async def test_oversized_413(
    client: httpx.AsyncClient, store: Database, settings: Settings
) -> None:
    """A message over max_message_size is 413; a body far over it is 413 before reading."""
    headers = await _key(store)
    payload = {**MESSAGE, "text": "x" * (MAX_SIZE + 10)}
    response = await client.post("/api/v1/messages", json=payload, headers=headers)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "message_too_large"
    huge = {**MESSAGE, "text": "x" * (body_limit(settings) + 1)}
    response = await client.post("/api/v1/messages", json=huge, headers=headers)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert await _queued(store) == 0


async def test_bad_requests(client: httpx.AsyncClient, store: Database) -> None:
    """Malformed JSON is 400; missing from, unknown fields, raw mixed with fields are 422."""
    headers = await _key(store)
    response = await client.post(
        "/api/v1/messages",
        content=b"{not json",
        headers={**headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    for payload in (
        {"to": ["a@example.com"], "text": "x"},
        {**MESSAGE, "unknown": 1},
        {"raw": "From: a@example.jp\n\nx", "subject": "mixed"},
        {**MESSAGE, "to": "a@example.com"},
        {**MESSAGE, "attachments": [{"filename": "a", "content_base64": "%%%"}]},
    ):
        response = await client.post("/api/v1/messages", json=payload, headers=headers)
        assert response.status_code == 422, payload
        assert response.json()["error"]["message"]
    assert await _queued(store) == 0


async def test_receipt_not_found(client: httpx.AsyncClient, store: Database) -> None:
    """An unknown id is a 404 in the error shape."""
    headers = await _key(store)
    response = await client.get("/api/v1/messages/nope", headers=headers)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_healthz(client: httpx.AsyncClient) -> None:
    """/healthz answers without a key."""
    response = await client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
