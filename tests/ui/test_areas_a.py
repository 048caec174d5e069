"""The domains, checker, suppression, SMTP users, routes and webhooks areas of the admin UI:
roles, CSRF, one happy path each, and escaping of what comes from outside (DNS)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete

from kakitome.accounts.store import WebStore
from kakitome.config import Settings
from kakitome.inbound.store import InboundStore
from kakitome.services import build_services
from kakitome.store.database import Database
from kakitome.store.schema_domains import dkim_keys, sending_domains
from kakitome.store.schema_inbound import smtp_users, suppressions
from kakitome.testing import LocalInternet
from kakitome.web import create_app
from tests.e2e.service import ServiceProcess
from tests.fixtures_world import MakeDomain

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
async def transport(store: Database, web: WebStore, area_settings: Settings) -> httpx.ASGITransport:
    async with store.engine.begin() as conn:
        for table in (dkim_keys, sending_domains, suppressions, smtp_users):
            await conn.execute(delete(table))
    app = create_app(build_services(area_settings, store, signing=None))
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


# -- checker --------------------------------------------------------------------------------


async def test_checker_domain_report_and_list(as_role: Clients, make_domain: MakeDomain) -> None:
    """A sender checks a world domain (grade, findings) and a pasted list; a viewer may not."""
    good, _ = make_domain(prefix="ui-chk")
    sender = await as_role("sender")
    page = await post(sender, "/ui/checker", "/ui/checker/domain", domain=good.name)
    assert page.status_code == 200, page.text
    assert 'class="grade"' in page.text
    assert "STARTTLS" in page.text
    listed = await post(
        sender, "/ui/checker", "/ui/checker/list", csv=f"email\na@{good.name}\nnot-an-address\n"
    )
    assert listed.status_code == 200, listed.text
    assert "Lines that are not addresses: 1" in listed.text
    viewer = await as_role("viewer")
    assert (await viewer.get("/ui/checker")).status_code == 403
    assert (
        await post(viewer, "/ui/domains", "/ui/checker/domain", domain="x.test")
    ).status_code == 403
    assert (await sender.post("/ui/checker/domain", data={"domain": "x.test"})).status_code == 403


# -- suppression, SMTP users, routes --------------------------------------------------------


async def test_suppression_add_search_import_remove(as_role: Clients, store: Database) -> None:
    admin = await as_role("admin")
    added = await post(admin, "/ui/suppression", "/ui/suppression", address="Taro@Example.COM")
    assert added.status_code == 200
    assert "taro@example.com is suppressed" in added.text
    imported = await post(
        admin,
        "/ui/suppression",
        "/ui/suppression/import",
        csv=f"email,name\nhanako@example.jp,x\ntaro@example.com,y\nbroken,z\n{XSS}@x.test,w\n",
    )
    assert "1 added, 1 already there, 2 not addresses" in imported.text
    found = await admin.get("/ui/suppression", params={"q": "hanako"})
    assert "hanako@example.jp" in found.text and "taro@example.com" not in found.text
    inbound = InboundStore(store.engine)
    assert await inbound.suppressed_among(["hanako@example.jp"]) == {"hanako@example.jp"}
    removed = await post(
        admin, "/ui/suppression", "/ui/suppression/remove", address="hanako@example.jp"
    )
    assert removed.status_code == 200
    assert not await inbound.suppressed_among(["hanako@example.jp"])

    sender = await as_role("sender")
    assert (await sender.get("/ui/suppression")).status_code == 200
    forbidden = await post(sender, "/ui/suppression", "/ui/suppression", address="a@b.test")
    assert forbidden.status_code == 403
    assert (await admin.post("/ui/suppression", data={"address": "a@b.test"})).status_code == 403


async def test_smtp_users_password_shown_once(as_role: Clients, store: Database) -> None:
    admin = await as_role("admin")
    created = await post(admin, "/ui/smtp-users", "/ui/smtp-users", username="mailer")
    assert created.status_code == 201
    password = re.search(r'id="new-password" readonly value="([^"]+)"', created.text)
    assert password
    listing = await admin.get("/ui/smtp-users")
    assert "mailer" in listing.text and password.group(1) not in listing.text
    again = await post(admin, "/ui/smtp-users", "/ui/smtp-users", username="mailer")
    assert again.status_code == 409
    assert await InboundStore(store.engine).smtp_user_hash("mailer") is not None
    sender = await as_role("sender")
    assert (await sender.get("/ui/smtp-users")).status_code == 403
    assert (
        await admin.post("/ui/smtp-users/remove", data={"username": "mailer"})
    ).status_code == 403
    removed = await post(admin, "/ui/smtp-users", "/ui/smtp-users/remove", username="mailer")
    assert removed.status_code == 200
    assert await InboundStore(store.engine).smtp_user_hash("mailer") is None


async def test_routes_viewer_reads_only(as_role: Clients) -> None:
    """A viewer sees the routes page without its forms (editing: test_areas_settings)."""
    viewer = await as_role("viewer")
    page = await viewer.get("/ui/routes")
    assert page.status_code == 200
    assert "<h1>Routes</h1>" in page.text
    assert 'id="route-add"' not in page.text


async def test_webhooks_crud_roles_and_csrf(as_role: Clients) -> None:
    admin = await as_role("admin")
    created = await post(
        admin,
        "/ui/webhooks",
        "/ui/webhooks",
        url="https://hooks.example/k",
        event="delivered",
    )
    assert created.status_code == 201
    assert re.search(r'id="new-secret" readonly value="whsec_', created.text)
    bad = await post(
        admin, "/ui/webhooks", "/ui/webhooks", url="javascript:alert(1)", event="queued"
    )
    assert bad.status_code == 422
    endpoint_id = re.search(r'action="/ui/webhooks/(\d+)/remove"', created.text)
    assert endpoint_id
    path = f"/ui/webhooks/{endpoint_id.group(1)}"
    sender = await as_role("sender")
    assert (await sender.get("/ui/webhooks")).status_code == 200
    assert (await post(sender, "/ui/webhooks", path + "/remove")).status_code == 403
    assert (await admin.post(path + "/remove")).status_code == 403
    disabled = await post(admin, "/ui/webhooks", path + "/enabled", enabled="0")
    assert disabled.status_code == 303
    assert "disabled" in (await admin.get("/ui/webhooks")).text
    assert (await post(admin, "/ui/webhooks", path + "/remove")).status_code == 303
    assert "hooks.example" not in (await admin.get("/ui/webhooks")).text


# -- in a real browser ----------------------------------------------------------------------


@pytest.fixture
def service(world: LocalInternet, tmp_path: Path) -> Iterator[ServiceProcess]:
    """``kakitome serve`` (web and worker) on SQLite, pointed at the local internet."""
    env = {
        **world.env(),
        "KAKITOME_DATABASE__URL": f"sqlite:///{tmp_path / 'kakitome.db'}",
        "KAKITOME_PATHS__DATA_DIR": str(tmp_path),
        "KAKITOME_DELIVERY__HELO_HOSTNAME": "kakitome.test",
    }
    process = ServiceProcess(env, tmp_path, roles=("web", "worker")).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.browser
@pytest.mark.slow
def test_browser_add_domain_copy_records_and_verify(
    chromium_bin: str, service: ServiceProcess, world: LocalInternet
) -> None:
    """Log in, add a domain, see its records and a copy button, publish one record, run
    the verification and see a check mark on it and remedies for the others."""
    from playwright.sync_api import expect, sync_playwright

    from tests.ui.test_browser import CHROMIUM_ARGS, SCREENSHOTS, _admin_login

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    username, password = _admin_login(service)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_bin, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(locale="en-GB")
            page.goto(service.url + "/ui/")
            page.get_by_label("User name").fill(username)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Log in").click()
            page.get_by_role("link", name="Domains", exact=True).click()
            page.get_by_label("Domain name").fill("ui-browser.test")
            page.get_by_role("button", name="Add and show its records").click()
            expect(page.get_by_role("heading", name="ui-browser.test")).to_be_visible()
            expect(page.get_by_role("button", name="Copy the zone snippet")).to_be_visible()
            expect(page.locator("#zone-file")).to_contain_text("_domainkey.ui-browser.test")
            page.get_by_role("button", name="Copy the zone snippet").click()
            expect(page.get_by_role("button", name="Copied")).to_be_visible()
            page.screenshot(path=str(SCREENSHOTS / "domain-records.png"), full_page=True)

            name = page.locator("#rec-0-name").input_value()
            value = page.locator("#rec-0-value").input_value()
            world.dns.add_txt(name, value)
            page.get_by_role("button", name="Verify now").click()
            expect(page.locator("#verification [role=status]")).to_contain_text(
                "Verification done."
            )
            expect(page.locator("tr.record.ok").first).to_be_visible()
            expect(page.locator("tr.record.failing").first).to_be_visible()
            expect(page.locator(".remedy").first).to_contain_text("How to fix")
            page.screenshot(path=str(SCREENSHOTS / "domain-verified.png"), full_page=True)
        finally:
            browser.close()
