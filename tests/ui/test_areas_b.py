"""Admin UI areas for newsletters (lists, subscribers, segments, campaigns, step mail) and
the public pages (preference page, archive, MTA-STS policy file): roles, CSRF, XSS,
happy paths."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kakitome.config import Settings
from kakitome.lists.model import NewList, OptIn
from kakitome.lists.service import ListService
from kakitome.store.database import Database
from kakitome.web.ui.areas import campaigns as campaigns_area
from kakitome.web.ui.areas import lists as lists_area
from kakitome.web.ui.areas import sequences as sequences_area
from tests.fixtures_db import queue_store

from .conftest import Login, csrf_of

XSS = "<script>alert('x')</script>"


async def _list(store: Database, name: str = "news") -> int:
    service = ListService(store, Settings())
    try:
        return (await service.get_list(name)).id
    except Exception:
        pass
    created = await service.create_list(
        NewList(
            name=name,
            title="ニュース",
            opt_in="single",
            from_name="Shop",
            from_address="news@sender.test",
            sender_organization="株式会社テスト",
            sender_postal_address="東京都千代田区1-1",
        )
    )
    return created.id


def test_area_catalogues_have_the_same_keys() -> None:
    for module in (lists_area, campaigns_area, sequences_area):
        assert set(module.EN) == set(module.JA), module.__name__


async def test_lists_pages_roles_and_csrf(user_client: Login, store: Database) -> None:
    admin = await user_client("admin", "admin")
    viewer = await user_client("viewer", "viewer")
    page = await admin.get("/ui/lists")
    assert page.status_code == 200
    token = csrf_of(page.text)
    no_csrf = await admin.post("/ui/lists", data={"name": "weekly"})
    assert no_csrf.status_code == 403
    created = await admin.post(
        "/ui/lists",
        data={
            "csrf_token": token,
            "name": "weekly",
            "title": "週刊メルマガ",
            "opt_in": "single",
            "from_address": "news@sender.test",
            "sender_organization": "株式会社テスト",
            "sender_postal_address": "東京都",
            "time_zone": "Asia/Tokyo",
            "encoding": "utf-8",
        },
    )
    assert created.status_code == 303, created.text
    list_url = created.headers["location"].split("?")[0]
    detail = await admin.get(list_url)
    assert "週刊メルマガ" in detail.text
    # the viewer reads but cannot change
    viewer_page = await viewer.get(list_url)
    assert viewer_page.status_code == 200
    refused = await viewer.post(
        list_url + "/subscribers",
        data={"csrf_token": csrf_of(viewer_page.text), "address": "a@example.com"},
    )
    assert refused.status_code == 403
    edit = await admin.post(
        list_url,
        data={"csrf_token": token, "title": "新タイトル", "opt_in": "double", "encoding": "utf-8",
              "time_zone": "Asia/Tokyo", "quiet_start": "22:00", "quiet_end": "07:00"},
    )  # fmt: skip
    assert edit.status_code == 303, edit.text
    assert "新タイトル" in (await admin.get(list_url)).text


async def test_subscriber_xss_search_edit_export_import(
    user_client: Login, store: Database
) -> None:
    list_id = await _list(store)
    sender = await user_client("sender", "sender")
    page = await sender.get(f"/ui/lists/{list_id}")
    token = csrf_of(page.text)
    added = await sender.post(
        f"/ui/lists/{list_id}/subscribers",
        data={"csrf_token": token, "address": "x@example.com", "name": XSS, "confirmed": "1"},
    )
    assert added.status_code == 303, added.text
    page = await sender.get(f"/ui/lists/{list_id}?q=x%40example")
    assert XSS not in page.text
    assert "&lt;script&gt;" in page.text
    sid = re.search(rf"/ui/lists/{list_id}/subscribers/(\d+)", page.text)
    assert sid
    url = f"/ui/lists/{list_id}/subscribers/{sid.group(1)}"
    saved = await sender.post(
        url, data={"csrf_token": token, "name": "山田太郎", "attributes": '{"plan": "gold"}',
                   "status": "subscribed"},
    )  # fmt: skip
    assert saved.status_code == 303, saved.text
    assert "山田太郎" in (await sender.get(url)).text
    bad = await sender.post(url, data={"csrf_token": token, "name": "x", "attributes": "[1"})
    assert bad.status_code == 422
    count = await sender.post(
        f"/ui/lists/{list_id}/segments/test",
        data={"csrf_token": token, "expression": 'attr.plan = "gold"'},
    )
    assert "1" in count.text and count.status_code == 200, count.text
    wrong = await sender.post(
        f"/ui/lists/{list_id}/segments/test", data={"csrf_token": token, "expression": "(("}
    )
    assert wrong.status_code == 422
    csv = "email,name\nhanako@example.com,花子\nnot-an-address,x\n".encode()
    no_token = await sender.post(
        f"/ui/lists/{list_id}/import", files={"file": ("a.csv", csv, "text/csv")}
    )
    assert no_token.status_code == 403
    started = await sender.post(
        f"/ui/lists/{list_id}/import",
        data={"csrf_token": token},
        files={"file": ("a.csv", csv, "text/csv")},
    )
    assert started.status_code == 303, started.text
    progress = started.headers["location"]
    for _ in range(100):
        body = (await sender.get(progress, headers={"HX-Request": "true"})).text
        if "import-summary" in body:
            break
        await asyncio.sleep(0.05)
    assert "import-summary" in body
    assert "not-an-address" in body  # the rejected row, with its line number
    exported = await sender.get(f"/ui/lists/{list_id}/export")
    assert exported.status_code == 200
    assert "hanako@example.com" in exported.content.decode("utf-8-sig")
    removed = await sender.post(url + "/remove", data={"csrf_token": token})
    assert removed.status_code == 303


async def test_campaign_editor_preview_errors_and_xss(user_client: Login, store: Database) -> None:
    list_id = await _list(store)
    sender = await user_client("sender", "sender")
    viewer = await user_client("viewer", "viewer")
    token = csrf_of((await sender.get("/ui/campaigns")).text)
    broken = await sender.post(
        "/ui/campaigns",
        data={"csrf_token": token, "list_id": str(list_id), "subject": "x",
              "body": "<p>{{ nope }}</p>", "body_format": "html"},
    )  # fmt: skip
    assert broken.status_code == 422
    assert "nope" in broken.text
    created = await sender.post(
        "/ui/campaigns",
        data={"csrf_token": token, "list_id": str(list_id), "subject": XSS,
              "body": "<p>{{ name | honorific }}、こんにちは</p>", "body_format": "html"},
    )  # fmt: skip
    assert created.status_code == 303, created.text
    url = created.headers["location"]
    for page in (await sender.get("/ui/campaigns"), await sender.get(url)):
        assert XSS not in page.text
        assert "&lt;script&gt;" in page.text
    preview = await sender.get(url + "/preview?part=html")
    assert preview.status_code == 200
    assert "お客様" in preview.text
    assert "default-src 'none'" in preview.headers["content-security-policy"]
    assert preview.headers["x-frame-options"] == "SAMEORIGIN"
    text = await sender.get(url + "/preview?part=text")
    assert "お客様" in text.text
    # an edit that breaks the template is refused and shown, the campaign keeps its body
    bad = await sender.post(
        url, data={"csrf_token": token, "subject": "s", "body": "{% if %}", "body_format": "html"}
    )
    assert bad.status_code == 422
    assert "template-error" in bad.text
    assert "お客様" in (await sender.get(url + "/preview?part=html")).text
    # viewers cannot send
    refused = await viewer.post(
        url + "/send", data={"csrf_token": csrf_of((await viewer.get(url)).text)}
    )
    assert refused.status_code == 403
    no_csrf = await sender.post(url + "/send")
    assert no_csrf.status_code == 403
    scheduled = await sender.post(
        url + "/schedule", data={"csrf_token": token, "at": "2099-01-01T09:00"}
    )
    assert scheduled.status_code == 303, scheduled.text
    page = await sender.get(url)
    assert "2099-01-01T09:00" in page.text
    paused = await sender.post(url + "/pause", data={"csrf_token": token})
    assert paused.status_code == 303
    cancelled = await sender.post(url + "/cancel", data={"csrf_token": token})
    assert cancelled.status_code == 303
    assert "campaign-cancelled" in (await sender.get(url)).text


async def test_sequences_steps(user_client: Login, store: Database) -> None:
    list_id = await _list(store)
    sender = await user_client("sender", "sender")
    token = csrf_of((await sender.get("/ui/sequences")).text)
    created = await sender.post(
        "/ui/sequences", data={"csrf_token": token, "name": "welcome", "list_id": str(list_id)}
    )
    assert created.status_code == 303, created.text
    url = created.headers["location"]
    step = {"csrf_token": token, "delay_days": "1", "send_hour": "9", "subject": "ようこそ",
            "body": "<p>{{ name | honorific }}</p>", "body_format": "html"}  # fmt: skip
    added = await sender.post(url + "/steps", data=step)
    assert added.status_code == 303, added.text
    page = await sender.get(url)
    assert "ようこそ" in page.text
    step_id = re.search(rf"{url}/steps/(\d+)/remove", page.text)
    assert step_id
    edited = await sender.post(
        f"{url}/steps/{step_id.group(1)}", data={**step, "subject": "二通目"}
    )
    assert edited.status_code == 303, edited.text
    assert "二通目" in (await sender.get(url)).text
    bad = await sender.post(url + "/steps", data={**step, "body": "{{ x"})
    assert bad.status_code == 422
    removed = await sender.post(
        f"{url}/steps/{step_id.group(1)}/remove", data={"csrf_token": token}
    )
    assert removed.status_code == 303


async def test_mta_sts_policy_per_host(store: Database) -> None:
    from fastapi import FastAPI

    from kakitome.services import build_services
    from kakitome.web.public import router

    settings = Settings(inbound={"domains": ("example.jp",), "hostname": "mx.example.jp"})
    app = FastAPI()
    app.state.services = build_services(settings, store, signing=None)
    app.include_router(router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as c:
        ok = await c.get("/.well-known/mta-sts.txt", headers={"Host": "mta-sts.example.jp"})
        assert ok.status_code == 200
        assert ok.headers["content-type"].startswith("text/plain")
        assert ok.text.startswith("version: STSv1\r\nmode: testing\r\n")
        assert "mx: mx.example.jp\r\n" in ok.text and "max_age: 604800" in ok.text
        with_port = await c.get(
            "/.well-known/mta-sts.txt", headers={"Host": "MTA-STS.example.jp:8443"}
        )
        assert with_port.status_code == 200
        for host in ("mta-sts.other.jp", "example.jp", "mta-sts.example.jp.evil.test"):
            other = await c.get("/.well-known/mta-sts.txt", headers={"Host": host})
            assert other.status_code == 404, host


async def test_preference_page_and_archive(store: Database) -> None:
    from fastapi import FastAPI

    from kakitome.campaigns.service import CampaignService
    from kakitome.injection import Injector
    from kakitome.services import build_services
    from kakitome.web.public import router

    settings = Settings()
    list_id = await _list(store, "prefs")
    service = ListService(store, settings)
    member = await service.add_subscriber(
        list_id, "p@example.com", name="花子", optin=OptIn("admin"), confirmed=True
    )
    token = service.unsubscribe_token(list_id, member.subscriber.id)
    app = FastAPI()
    archive = Settings(lists={"public_archive": ("prefs",)})
    app.state.services = build_services(archive, store, signing=None)
    app.include_router(router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as c:
        page = await c.get(f"/preferences/{token}?lang=ja")
        assert page.status_code == 200 and "花子" in page.text
        assert (await service.membership(list_id, member.subscriber.id)).status == "subscribed"
        saved = await c.post(f"/preferences/{token}", data={"name": "<b>Hana</b>"})
        assert saved.status_code == 200
        assert "<b>Hana</b>" not in saved.text and "&lt;b&gt;Hana&lt;/b&gt;" in saved.text
        assert not c.cookies
        after = await service.membership(list_id, member.subscriber.id)
        assert after.status == "unsubscribed"
        assert after.subscriber.name == "<b>Hana</b>"
        bad = await c.get("/preferences/not-a-token")
        assert bad.status_code == 400
        # the archive: only finished campaigns of listed lists, without personal data
        campaigns = CampaignService(
            store, settings, service, Injector(queue_store(store), settings)
        )
        row = await campaigns.create(
            "a", list_id, subject="第1号", body="<p>{{ name | honorific }}へ</p>"
        )
        assert "第1号" not in (await c.get("/archive/prefs")).text
        await campaigns.db.transition(row.id, from_=("draft",), to="finished", now=time.time())
        index = await c.get("/archive/prefs")
        assert "第1号" in index.text
        item = await c.get(f"/archive/prefs/{row.id}")
        assert item.status_code == 200 and "お客様へ" in item.text
        assert "sandbox" in item.headers["content-security-policy"]
        assert (await c.get("/archive/news")).status_code == 404


@pytest.fixture
def newsletter_service(world: Any, tmp_path: Path) -> Iterator[Any]:
    """``kakitome serve`` (web + worker) on SQLite, delivering into the local internet."""
    from tests.e2e.service import ServiceProcess

    env = {
        **world.env(),
        "KAKITOME_DATABASE__URL": f"sqlite:///{tmp_path / 'kakitome.db'}",
        "KAKITOME_QUEUE__POLL_INTERVAL": "0.2",
        "KAKITOME_CAMPAIGNS__POLL_INTERVAL": "0.5",
        "KAKITOME_DELIVERY__HELO_HOSTNAME": "kakitome.test",
        "KAKITOME_DOMAINS__ALLOW_UNCONFIGURED_FROM": "true",
    }
    process = ServiceProcess(env, tmp_path, roles=("web", "worker")).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.browser
@pytest.mark.slow
def test_browser_newsletter_import_send_unsubscribe(
    chromium_bin: str, newsletter_service: Any, make_domain: Any
) -> None:
    """Log in, create a list, import a CSV with Japanese names (progress and report),
    create a campaign, preview it, send it to the local internet, see its statistics;
    open the unsubscribe link of a delivered message, confirm, see the member unsubscribed."""
    from playwright.sync_api import expect, sync_playwright

    from tests.ui.test_browser import CHROMIUM_ARGS, SCREENSHOTS, _admin_login

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    good, peer = make_domain(prefix="nl")
    username, password = _admin_login(newsletter_service)
    csv = (
        f"email,name\ntaro@{good.name},山田太郎\nhanako@{good.name},佐藤花子\nbroken-row,x\n"
    ).encode()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(locale="en-GB")
            page.goto(newsletter_service.url + "/ui/login")
            page.get_by_label("User name").fill(username)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Log in").click()
            page.get_by_role("link", name="Lists", exact=True).click()
            page.get_by_label("Name (for URLs and addresses)").fill("news")
            page.get_by_label("Title", exact=True).fill("書留ニュース")
            page.get_by_label("single opt-in", exact=True).check()
            page.get_by_label("Sender address").fill("news@sender.test")
            page.get_by_label("Organisation (sender, for the legal footer)").fill("株式会社書留")
            page.get_by_label("Postal address (for the legal footer)").fill("東京都千代田区1-1")
            page.get_by_role("button", name="Create").click()
            expect(page.get_by_role("heading", name="書留ニュース")).to_be_visible()
            page.get_by_role("link", name="Import CSV").click()
            page.get_by_label("CSV file (UTF-8, UTF-8 with BOM or Shift_JIS)").set_input_files(
                {"name": "members.csv", "mimeType": "text/csv", "buffer": csv}
            )
            page.get_by_role("button", name="Import CSV").click()
            expect(page.locator("progress#import-progress")).to_be_visible()
            expect(page.locator(".import-summary")).to_contain_text("2 new", timeout=15_000)
            expect(page.locator("table.rejected")).to_contain_text("broken-row")
            page.screenshot(path=str(SCREENSHOTS / "list-import.png"), full_page=True)
            page.get_by_role("link", name="Back to the list").click()
            expect(page.locator(".subscriber-name").first).to_have_text("山田太郎")

            page.get_by_role("link", name="Campaigns", exact=True).click()
            page.get_by_label("Subject").fill("書留ニュース 第1号")
            page.get_by_label("Body (template)").fill("<p>{{ name | honorific }}、こんにちは。</p>")
            page.get_by_role("button", name="Create").click()
            expect(page.get_by_role("heading", name="書留ニュース 第1号")).to_be_visible()
            frame = page.frame_locator("iframe.preview-desktop")
            expect(frame.locator("body")).to_contain_text("お客様、こんにちは。")
            page.screenshot(path=str(SCREENSHOTS / "campaign-preview.png"), full_page=True)
            page.get_by_role("button", name="Send now").click()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                page.reload()
                if page.locator(".stat-delivered").inner_text().strip() == "2":
                    break
                time.sleep(1)
            expect(page.locator(".stat-delivered")).to_have_text("2")
            expect(page.locator(".stat-verified")).to_have_text("100.0%")
            page.screenshot(path=str(SCREENSHOTS / "campaign-stats.png"), full_page=True)

            received = [m for m in peer.messages() if f"taro@{good.name}" in m.rcpt_tos]
            assert received, "the campaign did not reach the peer"
            import email as email_lib
            import email.policy

            message = email_lib.message_from_bytes(received[-1].data, policy=email.policy.default)
            link = re.search(
                r"<(https?://[^>]+/unsubscribe/[^>]+)>", str(message["List-Unsubscribe"])
            )
            assert link, message["List-Unsubscribe"]
            page.goto(link.group(1) + "?lang=en")
            page.get_by_role("button", name="Unsubscribe").click()
            expect(page.get_by_role("heading", name="You are unsubscribed")).to_be_visible()
            page.screenshot(path=str(SCREENSHOTS / "unsubscribed.png"), full_page=True)

            page.goto(newsletter_service.url + "/ui/lists")
            page.get_by_role("link", name="書留ニュース").click()
            page.get_by_label("Search address or name").fill("taro@")
            page.get_by_role("button", name="Search").click()
            expect(page.locator("#members .badge.unsubscribed")).to_be_visible()
            page.screenshot(path=str(SCREENSHOTS / "list-unsubscribed.png"), full_page=True)
        finally:
            browser.close()
