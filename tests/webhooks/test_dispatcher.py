"""Webhooks end to end: events from the store are POSTed, signed, to a real HTTP receiver
on 127.0.0.1, retried after a 500, and the attempts appear in the UI's delivery log."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from sqlalchemy import delete

from kakitome.accounts.store import WebStore
from kakitome.config import Settings
from kakitome.services import build_services
from kakitome.store.database import Database
from kakitome.store.schema_webhooks import (
    webhook_attempts,
    webhook_cursors,
    webhook_deliveries,
    webhook_endpoints,
)
from kakitome.web import create_app
from kakitome.webhooks.dispatcher import WebhookDispatcher, backoff
from kakitome.webhooks.signing import HEADER, sign, verify
from kakitome.webhooks.store import WebhooksStore
from tests.fixtures_db import queue_store
from tests.ui.conftest import PASSWORD, login_as


@dataclass
class Receiver:
    """An HTTP server that checks each request's signature; fails the first ``fail``."""

    secret: str = ""
    fail: int = 1
    received: list[dict[str, object]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            good = verify(state.secret, self.headers.get(HEADER, ""), body, now=time.time())
            if not good:
                status = 401
            elif state.fail > 0:
                state.fail -= 1
                status = 500
            else:
                status = 200
                state.received.append(json.loads(body))
            state.statuses.append(status)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def hooks(store: Database) -> AsyncIterator[WebhooksStore]:
    async with store.engine.begin() as conn:
        for table in (webhook_attempts, webhook_deliveries, webhook_endpoints, webhook_cursors):
            await conn.execute(delete(table))
    yield WebhooksStore(store.engine)


def fast_settings() -> Settings:
    return Settings.model_validate(
        {"webhooks": {"retry_first": 0.05, "retry_max": 0.2, "timeout": 5, "max_attempts": 3}}
    )


async def drive(dispatcher: WebhookDispatcher, until: float = 10.0) -> None:
    """Rounds until nothing is pending (or ``until`` seconds)."""
    deadline = time.monotonic() + until
    while time.monotonic() < deadline:
        await dispatcher.run_once()
        if await dispatcher.store.next_due() is None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("deliveries still pending")


def test_signature_round_trip_and_refusals() -> None:
    body = b'{"id":"evt_e1"}'
    header = sign("s3cret", body, 1_700_000_000)
    assert verify("s3cret", header, body, now=1_700_000_100)
    assert not verify("other", header, body, now=1_700_000_100)
    assert not verify("s3cret", header, body + b" ", now=1_700_000_100)
    assert not verify("s3cret", header, body, now=1_700_000_000 + 301)  # replayed late
    assert not verify("s3cret", "garbage", body, now=1_700_000_000)


def test_backoff_doubles_and_is_capped() -> None:
    settings = Settings().webhooks
    waits = [backoff(settings, n) for n in range(1, 12)]
    assert waits[:3] == [30.0, 60.0, 120.0]
    assert max(waits) == settings.retry_max


async def test_events_are_signed_retried_and_logged(
    store: Database, hooks: WebhooksStore, receiver: Receiver
) -> None:
    """A delivered event (TLS downgraded) and a domain state change reach the receiver
    after one 500; the endpoint that wants only bounces gets nothing; the UI log shows
    the 500 and the 200 attempts."""
    settings = fast_settings()
    endpoint = await hooks.create_endpoint(
        receiver.url, ["delivered", "tls_downgrade", "domain_dns_changed"], now=time.time()
    )
    await hooks.create_endpoint("http://127.0.0.1:9/never", ["bounced"], now=time.time())
    receiver.secret = endpoint.secret
    await queue_store(store).add_event(
        "delivered",
        now=time.time(),
        message_id="m1",
        data={"tls": {"used": True, "downgraded": True}},
    )
    await queue_store(store).add_event("internal_thing", now=time.time())
    await queue_store(store).add_event(
        "domain_state", now=time.time(), data={"domain": "x.test", "from": "a", "to": "b"}
    )
    dispatcher = WebhookDispatcher(store, settings)
    try:
        await drive(dispatcher)
    finally:
        await dispatcher.aclose()
    assert receiver.statuses[0] == 500
    assert 401 not in receiver.statuses
    types = sorted(str(e["type"]) for e in receiver.received)
    assert types == ["delivered", "domain_dns_changed", "tls_downgrade"]
    delivered = next(e for e in receiver.received if e["type"] == "delivered")
    assert delivered["data"]["message_id"] == "m1"  # type: ignore[index]
    log = await hooks.attempts(endpoint_id=endpoint.id)
    # Attempts of one round run concurrently, so their ids interleave across events; the
    # event that met the 500 has exactly that attempt and then a 200.
    failed = next(a for a in log if a.status_code == 500)
    retried = [a for a in reversed(log) if a.delivery_id == failed.delivery_id]
    assert [a.status_code for a in retried] == [500, 200]
    assert [a.attempt for a in retried] == [1, 2]
    assert sorted(a.status_code or 0 for a in log) == [200, 200, 200, 500]
    assert all(a.duration_ms >= 0 for a in log)
    assert await hooks.delivery_counts() == {"delivered": 3}

    # The UI's delivery log shows both attempts of the first event.
    app = create_app(build_services(settings, store, signing=None))
    name = f"viewer{time.time_ns()}"
    await WebStore(store.engine).create_user(name, PASSWORD, "viewer", now=time.time())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://kakitome.test") as c:
        assert (await login_as(c, name)).status_code == 303
        page = await c.get("/ui/webhooks")
    assert page.status_code == 200
    assert f"evt_{failed.event_key}" in page.text
    assert '<td class="status-code">500</td>' in page.text
    assert '<td class="status-code">200</td>' in page.text
    assert endpoint.secret not in page.text  # the secret is shown once, at creation


async def test_gives_up_after_max_attempts(
    store: Database, hooks: WebhooksStore, receiver: Receiver
) -> None:
    settings = fast_settings()
    endpoint = await hooks.create_endpoint(receiver.url, ["queued"], now=time.time())
    receiver.secret = endpoint.secret
    receiver.fail = 100
    await queue_store(store).add_event("queued", now=time.time(), message_id="m2")
    dispatcher = WebhookDispatcher(store, settings)
    try:
        await drive(dispatcher)
    finally:
        await dispatcher.aclose()
    assert receiver.statuses == [500, 500, 500]
    assert await hooks.delivery_counts() == {"failed": 1}


async def test_history_before_the_first_endpoint_is_not_posted(
    store: Database, hooks: WebhooksStore, receiver: Receiver
) -> None:
    await queue_store(store).add_event("queued", now=time.time(), message_id="old")
    endpoint = await hooks.create_endpoint(receiver.url, ["queued"], now=time.time())
    receiver.secret, receiver.fail = endpoint.secret, 0
    await queue_store(store).add_event("queued", now=time.time(), message_id="new")
    dispatcher = WebhookDispatcher(store, fast_settings())
    try:
        await drive(dispatcher)
    finally:
        await dispatcher.aclose()
    assert [e["data"]["message_id"] for e in receiver.received] == ["new"]  # type: ignore[index]
