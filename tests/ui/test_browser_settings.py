"""Routes and settings edited in a real browser (Playwright driving Debian's Chromium)
against a real ``kakitome serve`` whose MX takes the change without a restart."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kakitome.testing import LocalInternet
from tests.e2e.service import ServiceProcess, free_port
from tests.ui.test_browser import CHROMIUM_ARGS, SCREENSHOTS, _admin_login

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DOMAIN = "in.browser.test"


@pytest.fixture
def service(world: LocalInternet, tmp_path: Path) -> Iterator[ServiceProcess]:
    """``kakitome serve`` (web and smtp) on SQLite with the MX on a free loopback port."""
    env = {
        **world.env(),
        "KAKITOME_DATABASE__URL": f"sqlite:///{tmp_path / 'kakitome.db'}",
        "KAKITOME_PATHS__DATA_DIR": str(tmp_path / "data"),
        "KAKITOME_INBOUND__BIND_HOST": "127.0.0.1",
        "KAKITOME_INBOUND__MX_PORT": str(free_port()),
        "KAKITOME_INBOUND__DOMAINS": DOMAIN,
        "KAKITOME_INBOUND__CHECK_AUTHENTICATION": "false",
    }
    process = ServiceProcess(env, tmp_path, roles=("web", "smtp")).start()
    try:
        yield process
    finally:
        process.stop()


def _rcpt(port: int, recipient: str) -> int:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("probe.test")
        client.mail("someone@probe.test")
        return client.rcpt(recipient)[0]


def _until(port: int, recipient: str, code: int) -> None:
    deadline = time.monotonic() + 15
    while _rcpt(port, recipient) != code:
        assert time.monotonic() < deadline, f"RCPT {recipient} is not {code} after 15 s"
        time.sleep(0.3)


def test_add_a_route_and_refuse_a_bad_setting_in_the_browser(
    chromium_bin: str, service: ServiceProcess
) -> None:
    """An admin adds a reject route with the form and the running MX refuses that address
    within seconds; a negative retry time is refused in Japanese and nothing is saved."""
    from playwright.sync_api import expect, sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    mx = int(service.env["KAKITOME_INBOUND__MX_PORT"])
    sales = f"sales@{DOMAIN}"
    username, password = _admin_login(service)
    assert _rcpt(mx, sales) == 250

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_bin, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(locale="en-GB")
            page.goto(service.url + "/ui/")
            page.get_by_label("User name").fill(username)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Log in").click()
            page.get_by_role("link", name="Routes", exact=True).click()
            form = page.locator("#route-add")
            form.get_by_label("Match").fill(sales)
            form.get_by_label("Action").select_option("reject")
            form.get_by_role("button", name="Add route").click()
            expect(page.get_by_role("status")).to_have_text("Route added.")
            expect(page.locator("table.routes")).to_contain_text(sales)
            page.screenshot(path=str(SCREENSHOTS / "routes-added.png"), full_page=True)
            _until(mx, sales, 550)
            assert _rcpt(mx, f"other@{DOMAIN}") == 250

            page.get_by_role("button", name="日本語").click()
            page.get_by_role("link", name="設定", exact=True).click()
            page.locator("[id='v-queue.retry_first']").fill("-1")
            page.locator("#settings-form").get_by_role("button", name="保存").click()
            expect(page.get_by_role("alert")).to_contain_text(
                "queue.retry_first: 0 以上の値にしてください。"
            )
            expect(page.locator("[id='v-queue.retry_first']")).to_have_value("-1")
            page.screenshot(path=str(SCREENSHOTS / "settings-refused-ja.png"))
            page.goto(service.url + "/ui/settings")
            row = page.locator("tr[data-key='queue.retry_first']")
            expect(row).to_contain_text("既定値")
        finally:
            browser.close()
