"""The admin UI in a real browser (Playwright driving Debian's Chromium) against a real
``kakitome serve`` delivering into the local internet."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kakitome.testing import Fault, LocalInternet, PeerBehaviour
from tests.e2e.service import ServiceProcess
from tests.fixtures_world import MakeDomain

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
_ADMIN = re.compile(r"Admin login \(shown once, keep it\): user (\S+) password (\S+)")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def service(world: LocalInternet, tmp_path: Path) -> Iterator[ServiceProcess]:
    """``kakitome serve`` on SQLite, pointed at the local internet."""
    env = {
        **world.env(),
        "KAKITOME_DATABASE__URL": f"sqlite:///{tmp_path / 'kakitome.db'}",
        "KAKITOME_QUEUE__POLL_INTERVAL": "0.2",
        "KAKITOME_QUEUE__RETRY_FIRST": "3600",
        "KAKITOME_DELIVERY__HELO_HOSTNAME": "kakitome.test",
        # Unsigned mail from a domain not set up: this test is about the UI, not DKIM.
        "KAKITOME_DOMAINS__ALLOW_UNCONFIGURED_FROM": "true",
    }
    process = ServiceProcess(env, tmp_path, roles=("web", "worker")).start()
    try:
        yield process
    finally:
        process.stop()


def _admin_login(service: ServiceProcess) -> tuple[str, str]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        match = _ADMIN.search(service.log())
        if match:
            return match.group(1), match.group(2)
        time.sleep(0.05)
    raise AssertionError("no admin password printed:\n" + service.log())


def _send(service: ServiceProcess, key: str, to: str, subject: str) -> str:
    response = httpx.post(
        service.url + "/api/v1/messages",
        headers={"Authorization": f"Bearer {key}"},
        json={"from": "news@sender.test", "to": [to], "subject": subject, "text": "本文"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _wait_status(service: ServiceProcess, key: str, message_id: str, status: str) -> Any:
    deadline = time.monotonic() + 30
    receipt: Any = None
    while time.monotonic() < deadline:
        receipt = httpx.get(
            f"{service.url}/api/v1/messages/{message_id}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        ).json()
        if receipt["recipients"][0]["status"] == status:
            return receipt
        time.sleep(0.2)
    raise AssertionError(f"not {status}: {receipt}")


def test_log_in_see_receipt_hold_and_switch_to_japanese(
    chromium_bin: str, service: ServiceProcess, make_domain: MakeDomain
) -> None:
    """Log in, see the dashboard, open a delivered message's TLS receipt (TLSv1.3,
    verified), bulk-hold a deferred message, switch to Japanese."""
    from playwright.sync_api import expect, sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    good, _ = make_domain(prefix="ui-good")
    slow, _ = make_domain(PeerBehaviour(rcpt_fault=Fault("451 4.3.0 try later")), prefix="ui-slow")
    key = service.wait_for_key()
    username, password = _admin_login(service)
    delivered_id = _send(service, key, f"taro@{good.name}", "ご案内 <b>bold?</b>")
    deferred_id = _send(service, key, f"hanako@{slow.name}", "待機するメッセージ")
    _wait_status(service, key, delivered_id, "delivered")
    _wait_status(service, key, deferred_id, "deferred")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(locale="en-GB")
            page.goto(service.url + "/ui/")
            expect(page.get_by_role("heading", name="Log in")).to_be_visible()
            page.get_by_label("User name").fill(username)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="Dashboard", exact=True)).to_be_visible()
            expect(page.locator("svg.chart").first).to_be_visible()
            page.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=True)

            page.get_by_role("link", name="Messages", exact=True).click()
            page.get_by_label("Search", exact=True).fill(f"taro@{good.name}")
            page.get_by_role("button", name="Search").click()
            page.get_by_role("link", name="ご案内 <b>bold?</b>").click()
            expect(page.locator(".tls-protocol").first).to_have_text("TLSv1.3")
            expect(page.locator(".tls-verification").first).to_contain_text("verified")
            expect(page.locator(".badge.delivered").first).to_be_visible()
            page.screenshot(path=str(SCREENSHOTS / "message-receipt.png"), full_page=True)

            page.get_by_role("link", name="Queue", exact=True).click()
            page.get_by_label(f"Select hanako@{slow.name}").check()
            page.get_by_role("button", name="Hold").click()
            expect(page.get_by_role("status")).to_contain_text("Hold: 1")
            expect(page.locator(".badge.held").first).to_be_visible()
            page.screenshot(path=str(SCREENSHOTS / "queue-held.png"), full_page=True)

            page.get_by_role("button", name="日本語").click()
            expect(page.get_by_role("link", name="ダッシュボード")).to_be_visible()
            expect(page.get_by_role("heading", name="キュー")).to_be_visible()
            page.get_by_role("link", name="メッセージ", exact=True).click()
            expect(page.get_by_role("heading", name="メッセージ")).to_be_visible()
            page.screenshot(path=str(SCREENSHOTS / "messages-ja.png"), full_page=True)
            # Keyboard: the first Tab reaches the skip link.
            page.keyboard.press("Tab")
            expect(page.locator(".skip-link")).to_be_focused()
        finally:
            browser.close()
    receipt = _wait_status(service, key, deferred_id, "held")
    assert receipt["recipients"][0]["status"] == "held"
