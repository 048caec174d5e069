"""The domains, checker, suppression, SMTP users, routes and webhooks areas of the admin UI:
roles, CSRF, one happy path each, and escaping of what comes from outside (DNS)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete

from kakitome.config import Settings
from kakitome.injection import Injector
from kakitome.store.repository import Store
from kakitome.store.schema_domains import dkim_keys, sending_domains
from kakitome.store.schema_inbound import smtp_users, suppressions
from kakitome.store.web_store import WebStore
from kakitome.testing import LocalInternet
from kakitome.web import create_app

from .conftest import PASSWORD, csrf_of, login_as

XSS = "<script>alert('x')</script>"


@pytest.fixture
def area_settings(world: LocalInternet, tmp_path: Path) -> Settings:
    """Settings on the local internet, with a private data dir (the DKIM key box)."""
    return world.settings(
        {
            "KAKITOME_PATHS__DATA_DIR": str(tmp_path),
            "KAKITOME_CHECKER__PORT": str(world.port),
            "KAKITOME_CHECKER__PROBE_TIMEOUT": "5",
            "KAKITOME_CHECKER__CONNECT_TIMEOUT": "2",
            "KAKITOME_DNS__TIMEOUT": "2",
        }
    )


@pytest.fixture
async def transport(store: Store, web: WebStore, area_settings: Settings) -> httpx.ASGITransport:
    async with store.engine.begin() as conn:
        for table in (dkim_keys, sending_domains, suppressions, smtp_users):
            await conn.execute(delete(table))
    app = create_app(area_settings, store, Injector(store, area_settings))
    return httpx.ASGITransport(app=app)


class Clients:
    def __init__(self, transport: httpx.ASGITransport, web: WebStore) -> None:
        self.transport = transport
        self.web = web
        self.open: list[httpx.AsyncClient] = []

    async def __call__(self, role: str) -> httpx.AsyncClient:
        name = f"{role}{len(self.open)}"
        await self.web.create_user(name, PASSWORD, role, now=time.time())
        client = httpx.AsyncClient(transport=self.transport, base_url="http://kakitome.test")
        self.open.append(client)
        assert (await login_as(client, name)).status_code == 303
        return client


@pytest.fixture
async def as_role(transport: httpx.ASGITransport, web: WebStore) -> AsyncIterator[Clients]:
    clients = Clients(transport, web)
    yield clients
    for c in clients.open:
        await c.aclose()


async def post(client: httpx.AsyncClient, page: str, path: str, **data: str) -> httpx.Response:
    """POST a form of ``page`` with the session's CSRF token."""
    token = csrf_of((await client.get(page)).text)
    return await client.post(path, data={"csrf_token": token, **data})


# -- domains ------------------------------------------------------------------------------


async def test_domains_add_records_verify_and_roles(as_role: Clients) -> None:
    """An admin adds a domain and sees its records with copy buttons; a sender verifies
    (findings with remedies); a viewer may look but not add, verify or remove."""
    admin = await as_role("admin")
    added = await post(admin, "/ui/domains", "/ui/domains", domain="ui-add.test")
    assert added.status_code == 303
    assert added.headers["location"] == "/ui/domains/ui-add.test?added=1"
    page = await admin.get("/ui/domains/ui-add.test")
    assert page.status_code == 200
    assert "_domainkey.ui-add.test" in page.text
    assert 'data-copy="zone-file"' in page.text
    assert "v=DKIM1" in page.text

    sender = await as_role("sender")
    verified = await post(sender, "/ui/domains/ui-add.test", "/ui/domains/ui-add.test/verify", **{})
    assert verified.status_code == 200, verified.text
    assert 'class="record failing"' in verified.text
    assert "How to fix" in verified.text
    partial = await sender.post(
        "/ui/domains/ui-add.test/verify",
        headers={"HX-Request": "true", "X-CSRF-Token": csrf_of(verified.text)},
    )
    assert partial.status_code == 200
    assert partial.text.lstrip().startswith('<section id="verification"')

    viewer = await as_role("viewer")
    assert (await viewer.get("/ui/domains")).status_code == 200
    assert (await viewer.get("/ui/domains/ui-add.test")).status_code == 200
    for path in ("/ui/domains", "/ui/domains/ui-add.test/verify", "/ui/domains/ui-add.test/remove"):
        response = await post(viewer, "/ui/domains", path, domain="x.test")
        assert response.status_code == 403, path
    for path in ("/ui/domains/ui-add.test/rotate", "/ui/domains/ui-add.test/remove"):
        assert (await post(sender, "/ui/domains", path)).status_code == 403, path
    # CSRF: an admin's POST without the token is refused.
    assert (await admin.post("/ui/domains/ui-add.test/remove")).status_code == 403

    rotated = await post(admin, "/ui/domains/ui-add.test", "/ui/domains/ui-add.test/rotate")
    assert rotated.status_code == 200
    assert rotated.text.count("pending") >= 2
    removed = await post(admin, "/ui/domains/ui-add.test", "/ui/domains/ui-add.test/remove")
    assert removed.status_code == 303
    assert "ui-add.test" not in (await admin.get("/ui/domains")).text


async def test_domain_findings_from_dns_are_escaped(as_role: Clients, world: LocalInternet) -> None:
    """A TXT record with a script tag, found by verification, is shown as text."""
    admin = await as_role("admin")
    await post(admin, "/ui/domains", "/ui/domains", domain="ui-xss.test")
    world.dns.add_txt("ui-xss.test", f"v=spf1 {XSS} -all")
    page = await post(admin, "/ui/domains/ui-xss.test", "/ui/domains/ui-xss.test/verify")
    assert page.status_code == 200
    assert XSS not in page.text
    assert "&lt;script&gt;" in page.text


async def test_bad_domain_name_is_refused_with_the_reason(as_role: Clients) -> None:
    admin = await as_role("admin")
    response = await post(admin, "/ui/domains", "/ui/domains", domain="not a domain")
    assert response.status_code == 422
    assert re.search(r'role="alert"', response.text)
