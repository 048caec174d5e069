"""``/api/v1/webhooks``: an endpoint created through the API gets the secret once, receives
events signed with it (the real dispatcher, a real HTTP receiver on loopback), and its
delivery log pages by cursor; edits and deletion show in the answers. SQLite and
PostgreSQL."""

from __future__ import annotations

import time

import httpx
from sqlalchemy import delete

from kakitome.services import build_services
from kakitome.store.database import Database
from kakitome.store.schema_webhooks import (
    webhook_attempts,
    webhook_cursors,
    webhook_deliveries,
    webhook_endpoints,
)
from kakitome.web import create_app
from kakitome.webhooks.dispatcher import WebhookDispatcher
from tests.api.conftest import BASE, bearer
from tests.fixtures_db import queue_store
from tests.webhooks import test_dispatcher
from tests.webhooks.test_dispatcher import Receiver, drive, fast_settings

# The dispatcher tests' fixture: a real HTTP server on loopback that checks signatures.
receiver = test_dispatcher.receiver


async def _clean(store: Database) -> None:
    async with store.engine.begin() as conn:
        for table in (webhook_attempts, webhook_deliveries, webhook_endpoints, webhook_cursors):
            await conn.execute(delete(table))


async def test_webhook_created_by_api_receives_signed_events(
    store: Database, receiver: Receiver
) -> None:
    await _clean(store)
    settings = fast_settings()
    app = create_app(build_services(settings, store, signing=None))
    h = await bearer(store, "admin")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        made = await c.post(
            "/api/v1/webhooks",
            json={"url": receiver.url, "events": ["delivered", "bounced"], "description": "app"},
            headers=h,
        )
        assert made.status_code == 201, made.text
        endpoint = made.json()
        secret = endpoint["secret"]
        assert secret.startswith("whsec_")
        assert endpoint["events"] == ["delivered", "bounced"] and endpoint["enabled"]
        shown = await c.get(f"/api/v1/webhooks/{endpoint['id']}", headers=h)
        listed = await c.get("/api/v1/webhooks", headers=h)
        for answer in (shown, listed):
            assert answer.status_code == 200
            assert secret not in answer.text and "secret" not in answer.text
        assert [e["id"] for e in listed.json()["items"]] == [endpoint["id"]]

        receiver.secret = secret  # the receiver refuses (401) what is not signed with it
        receiver.fail = 1  # one 500 first: a retry shows in the log
        for n in range(3):
            await queue_store(store).add_event("delivered", now=time.time(), message_id=f"m{n}")
        await queue_store(store).add_event("queued", now=time.time(), message_id="mq")  # not wanted
        dispatcher = WebhookDispatcher(store, settings)
        try:
            await drive(dispatcher)
        finally:
            await dispatcher.aclose()
        assert 401 not in receiver.statuses
        assert sorted(str(e["type"]) for e in receiver.received) == ["delivered"] * 3

        first = await c.get(f"/api/v1/webhooks/{endpoint['id']}/attempts?limit=3", headers=h)
        assert first.status_code == 200, first.text
        rest = await c.get(
            f"/api/v1/webhooks/{endpoint['id']}/attempts?limit=3&cursor={first.json()['next']}",
            headers=h,
        )
        assert rest.json()["next"] is None
        log = first.json()["items"] + rest.json()["items"]
        assert len(log) == 4 and len({a["id"] for a in log}) == 4
        assert [a["id"] for a in log] == sorted((a["id"] for a in log), reverse=True)
        assert sorted(a["status_code"] for a in log) == [200, 200, 200, 500]
        failed = next(a for a in log if a["status_code"] == 500)
        again = [a for a in log if a["delivery_id"] == failed["delivery_id"]]
        assert sorted(a["attempt"] for a in again) == [1, 2]
        assert all(a["event_type"] == "delivered" for a in log)
        assert all(a["event_id"].startswith("evt_") for a in log)

        # Pause it: a new event is not posted.
        paused = await c.patch(
            f"/api/v1/webhooks/{endpoint['id']}",
            json={"enabled": False, "events": ["bounced", "delivered", "bounced"]},
            headers=h,
        )
        assert paused.status_code == 200, paused.text
        assert paused.json()["enabled"] is False
        assert paused.json()["events"] == ["delivered", "bounced"]
        assert paused.json()["url"] == receiver.url and "secret" not in paused.text
        await queue_store(store).add_event("delivered", now=time.time(), message_id="m-late")
        dispatcher = WebhookDispatcher(store, settings)
        try:
            await drive(dispatcher)
        finally:
            await dispatcher.aclose()
        assert len(receiver.received) == 3

        gone = await c.delete(f"/api/v1/webhooks/{endpoint['id']}", headers=h)
        assert gone.status_code == 204
        assert (await c.get(f"/api/v1/webhooks/{endpoint['id']}", headers=h)).status_code == 404
        log_gone = await c.get(f"/api/v1/webhooks/{endpoint['id']}/attempts", headers=h)
        assert log_gone.status_code == 404


async def test_webhook_input_is_checked(client: httpx.AsyncClient, store: Database) -> None:
    """Bad URLs and event types are 422 on create and update, nothing is changed; a read
    key may look but not change; an unknown endpoint is 404."""
    await _clean(store)
    h = await bearer(store, "admin")
    for bad in (
        {"url": "ftp://example.com/x", "events": ["delivered"]},
        {"url": "https:///nohost", "events": ["delivered"]},
        {"url": "https://example.com/x", "events": ["delivered", "sent"]},
        {"url": "https://example.com/x", "events": []},
    ):
        refused = await client.post("/api/v1/webhooks", json=bad, headers=h)
        assert refused.status_code == 422, (bad, refused.text)
    made = await client.post(
        "/api/v1/webhooks",
        json={"url": "https://example.com/x", "events": ["opened"], "enabled": False},
        headers=h,
    )
    assert made.status_code == 201 and made.json()["enabled"] is False
    hook = f"/api/v1/webhooks/{made.json()['id']}"
    before = (await client.get(hook, headers=h)).json()
    for bad in ({"url": "javascript:alert(1)"}, {"events": ["nope"]}, {"enabled": None}):
        refused = await client.patch(hook, json=bad, headers=h)
        assert refused.status_code == 422, (bad, refused.text)
    assert (await client.get(hook, headers=h)).json() == before
    reader = await bearer(store, "read")
    assert (await client.get(hook, headers=reader)).status_code == 200
    assert (await client.patch(hook, json={"enabled": True}, headers=reader)).status_code == 403
    assert (await client.delete(hook, headers=reader)).status_code == 403
    missing = await client.patch("/api/v1/webhooks/999999", json={"enabled": True}, headers=h)
    assert missing.status_code == 404
