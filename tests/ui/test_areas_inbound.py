"""The inbound area of the admin UI: held mail (list, detail, release, delete, bulk) and
received TLS reports; roles, CSRF and escaping. SQLite and PostgreSQL."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import delete

from kakitome.accounts.store import WebStore
from kakitome.config import Settings
from kakitome.inbound.forward import Forwarder
from kakitome.inbound.store import InboundStore, NewInbound, TLSReportRow
from kakitome.services import build_services
from kakitome.store.database import Database
from kakitome.store.schema_inbound import inbound_messages, tlsrpt_received
from kakitome.store.schema_settings import settings_overlay
from kakitome.web import create_app
from tests.fixtures_inbound import Receiver, record_held

from .conftest import PASSWORD, csrf_of, login_as

XSS = "<script>alert('x')</script>"
BODY = "<b>body</b>"  # shown escaped, never as markup


@pytest.fixture
async def settings(hook_receiver: Receiver) -> Settings:
    data: dict[str, Any] = Settings().model_dump(mode="json")
    data["inbound"]["routes"] = [
        {"match": "@in.example.jp", "action": "forward", "url": await hook_receiver.start()},
        {"match": "@other.example.jp", "action": "hold"},
    ]
    return Settings.model_validate(data)


@pytest.fixture
async def transport(store: Database, web: WebStore, settings: Settings) -> httpx.ASGITransport:
    async with store.engine.begin() as conn:
        for table in (tlsrpt_received, inbound_messages, settings_overlay):
            await conn.execute(delete(table))
    return httpx.ASGITransport(app=create_app(build_services(settings, store, signing=None)))


@pytest.fixture
async def as_role(transport: httpx.ASGITransport, web: WebStore) -> AsyncIterator[Any]:
    opened: list[httpx.AsyncClient] = []

    async def make(role: str) -> httpx.AsyncClient:
        name = f"{role}{len(opened)}"
        await web.create_user(name, PASSWORD, role, now=time.time())
        client = httpx.AsyncClient(transport=transport, base_url="http://kakitome.test")
        opened.append(client)
        assert (await login_as(client, name)).status_code == 303
        return client

    yield make
    for c in opened:
        await c.aclose()


async def _actions(client: httpx.AsyncClient, page: str, **data: Any) -> httpx.Response:
    token = csrf_of((await client.get(page)).text)
    return await client.post("/ui/inbound/actions", data={"csrf_token": token, **data})


async def test_viewer_sees_held_mail_escaped_and_cannot_act(as_role: Any, store: Database) -> None:
    inbound = InboundStore(store.engine)
    hostile = await record_held(
        inbound, "info@in.example.jp", XSS, sender=f'"{XSS}" <x@evil.test>', body=BODY
    )
    viewer = await as_role("viewer")
    listing = await viewer.get("/ui/inbound")
    assert listing.status_code == 200
    assert "<script>" not in listing.text
    assert "&lt;script&gt;" in listing.text
    assert f'href="/ui/inbound/{hostile}"' in listing.text
    assert "/ui/inbound/actions" not in listing.text
    shown = await viewer.get(f"/ui/inbound/{hostile}")
    assert shown.status_code == 200
    assert "<script>" not in shown.text and "<b>body</b>" not in shown.text
    assert "&lt;script&gt;alert" in shown.text and "info@in.example.jp" in shown.text
    assert "/ui/inbound/actions" not in shown.text
    assert (await viewer.get("/ui/inbound/nope")).status_code == 404
    refused = await _actions(viewer, "/ui/inbound", action="delete", id=hostile)
    assert refused.status_code == 403
    assert await inbound.get_inbound(hostile) is not None


async def test_admin_deletes_and_releases_with_csrf(
    as_role: Any, store: Database, settings: Settings, hook_receiver: Receiver
) -> None:
    inbound = InboundStore(store.engine)
    first = await record_held(inbound, "info@in.example.jp", "one", body=BODY)
    second = await record_held(inbound, "info@in.example.jp", "two", body=BODY)
    third = await record_held(inbound, "info@in.example.jp", "three", body=BODY)
    unrouted = await record_held(inbound, "info@other.example.jp", "four", body=BODY)
    admin = await as_role("admin")
    page = await admin.get("/ui/inbound")
    assert page.status_code == 200 and 'action="/ui/inbound/actions"' in page.text

    # Without the token (or with another's) nothing happens.
    assert (
        await admin.post("/ui/inbound/actions", data={"action": "delete", "id": first})
    ).status_code == 403
    bad = {"action": "delete", "id": first, "csrf_token": "not-the-token-000000000000000"}
    assert (await admin.post("/ui/inbound/actions", data=bad)).status_code == 403
    assert await inbound.get_inbound(first) is not None

    deleted = await _actions(admin, f"/ui/inbound/{first}", action="delete", id=first)
    assert deleted.status_code == 200 and "Deleted: 1" in deleted.text
    assert await inbound.get_inbound(first) is None

    # Bulk release: two to the forward route by recipient; the unrouted one is refused.
    released = await _actions(admin, "/ui/inbound", action="release", id=[second, third, unrouted])
    assert released.status_code == 200 and "Released: 2" in released.text
    assert "no forward route fits" in released.text
    for inbound_id in (second, third):
        row = await inbound.get_inbound(inbound_id)
        assert row is not None and row.status == "forward" and row.route == "@in.example.jp"
    row = await inbound.get_inbound(unrouted)
    assert row is not None and row.status == "held"
    again = await _actions(admin, "/ui/inbound", action="release", id=second)
    assert again.status_code == 422 and "not held any more" in again.text

    # The forwarder POSTs the released messages to the local receiver.
    assert await Forwarder(inbound, settings.inbound).run_once() == 2
    posted = hook_receiver.bodies
    subjects = sorted(body.split(b"Subject: ")[1].split(b"\r\n")[0] for _, body in posted)
    assert subjects == [b"three", b"two"]

    # Bulk delete of the one left.
    gone = await _actions(admin, "/ui/inbound", action="delete", id=[unrouted])
    assert gone.status_code == 200 and await inbound.get_inbound(unrouted) is None
    assert "No mail is held." in (await admin.get("/ui/inbound")).text


async def test_tls_reports_listed_and_shown(as_role: Any, store: Database) -> None:
    inbound = InboundStore(store.engine)
    now = time.time()
    report = {
        "organization-name": XSS,
        "policies": [
            {
                "policy": {"policy-type": "sts", "policy-domain": "mail.example.jp"},
                "summary": {"total-successful-session-count": 7, "total-failure-session-count": 2},
            }
        ],
    }
    await inbound.record_inbound(
        NewInbound(
            received_at=now,
            listener="mx",
            kind="tlsrpt",
            status="processed",
            content=b"Subject: Report\r\n\r\n{}\r\n",
            recipients=("tlsrpt@example.jp",),
            tls_report=TLSReportRow(
                organization=XSS,
                report_id="r-1",
                period_start=now - 86400,
                period_end=now,
                contact="ops@reporter.test",
                successful=7,
                failed=2,
                report=report,
            ),
        )
    )
    viewer = await as_role("viewer")
    listing = await viewer.get("/ui/inbound/tls-reports")
    assert listing.status_code == 200
    assert "mail.example.jp" in listing.text and "<script>" not in listing.text
    assert "<td>7</td><td>2</td>" in listing.text
    link = re.search(r'href="/ui/inbound/tls-reports/(\d+)"', listing.text)
    assert link
    shown = await viewer.get(f"/ui/inbound/tls-reports/{link.group(1)}")
    assert shown.status_code == 200
    assert "r-1" in shown.text and "ops@reporter.test" in shown.text
    assert "<script>" not in shown.text and "&lt;script&gt;" in shown.text
    assert (await viewer.get("/ui/inbound/tls-reports/999999")).status_code == 404


async def test_inbound_page_in_japanese(as_role: Any) -> None:
    viewer = await as_role("viewer")
    token = csrf_of((await viewer.get("/ui/inbound")).text)
    await viewer.post("/ui/language", data={"csrf_token": token, "lang": "ja"})
    page = await viewer.get("/ui/inbound")
    assert page.status_code == 200
    assert "保留中のメールはありません。" in page.text
    assert "TLS レポート" in (await viewer.get("/ui/inbound/tls-reports")).text
