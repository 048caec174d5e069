"""Tests (T38, RFC 8058): one-click unsubscribe on a real campaign message, through the
running HTTP service.

Set-up on one SQLite file: a sending domain added with ``DomainService`` (its DKIM records
published in the world's DNS), a list whose From is on it, two subscribers, and a campaign
sent by one ``CampaignService.run_due`` pass with the injector the worker role builds
(``DomainSigning`` as signer). Then ``kakitome serve --role web`` runs as a subprocess
on the same file, and the tests talk to its HTTP port as a mail provider would: with a
fresh client that has no cookies, and never following redirects.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dkim
import dkim.util
import httpx
import pytest
from sqlalchemy import select

from kakitome.config import Settings
from kakitome.domains.service import DomainService
from kakitome.lists import NewList, OptIn
from kakitome.services import build_services, open_services
from kakitome.store.database import Database
from kakitome.store.schema import messages
from kakitome.testing import LocalInternet
from tests.e2e.service import ServiceProcess
from tests.fixtures_world import dkimpy_dns

ONE_CLICK = b"List-Unsubscribe=One-Click"
# What a mail provider's one-click POST looks like (RFC 8058 §3.2): form body, no cookie,
# no Origin or Referer.
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SUBSCRIBERS = ("alice@rcpt.example.jp", "bob@rcpt.example.jp")


@dataclass
class OneClickWorld:
    """The running web service and one signed campaign message per subscriber."""

    world: LocalInternet
    sender: str
    settings: Settings
    service: ServiceProcess
    by_recipient: dict[str, bytes]

    def local(self, https_url: str) -> str:
        """The List-Unsubscribe URL (on the public https name) at the service's own port."""
        assert https_url.startswith(f"https://{self.sender}/unsubscribe/"), https_url
        return self.service.url + https_url.removeprefix(f"https://{self.sender}")


async def _send_campaign(settings: Settings, world: LocalInternet, sender: str) -> dict[str, bytes]:
    """Domain, list, subscribers and one campaign pass; the stored content per recipient."""
    store = await Database.open(settings.database.url, pool_size=2)
    try:
        domains = DomainService(store, settings)
        await domains.add(sender)
        for record in (await domains.records(sender)).to_dict()["records"]:
            if record["purpose"] == "dkim":
                world.dns.add_txt(record["name"], record["value"], ttl=0)
        # The services the worker role runs on (DKIM keys loaded after the domain exists).
        services = await open_services(settings, store=store)
        assert services.signing is not None
        lists = services.lists
        await lists.create_list(
            NewList(
                name="news",
                title="書留通信",
                opt_in="single",
                from_name="書留商店",
                from_address=f"news@{sender}",
                sender_organization="書留商店株式会社",
                sender_postal_address="東京都千代田区千代田1-1",
            )
        )
        for address in SUBSCRIBERS:
            await lists.add_subscriber("news", address, optin=OptIn("cli"))
        campaigns = services.campaigns
        row = await campaigns.create(
            "winter", "news", subject="冬のお知らせ", body="<p>セール</p>", text="セール\n",
            tracking=False,
        )  # fmt: skip
        await campaigns.send_now(row.id)
        await campaigns.run_due()
        async with store.engine.connect() as conn:
            contents = (await conn.execute(select(messages.c.content))).scalars().all()
    finally:
        await store.close()
    by_recipient: dict[str, bytes] = {}
    for content in contents:
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        by_recipient[parsed["To"].addresses[0].addr_spec] = content
    assert sorted(by_recipient) == sorted(SUBSCRIBERS)
    return by_recipient


async def _status(settings: Settings, address: str) -> str:
    store = await Database.open(settings.database.url, pool_size=1)
    try:
        lists = build_services(settings, store, signing=None).lists
        return (await lists.membership("news", address)).status
    finally:
        await store.close()


@pytest.fixture
def one_click(world: LocalInternet, tmp_path: Path) -> Iterator[OneClickWorld]:
    """A campaign sent on a SQLite file, and `kakitome serve --role web` on that file."""
    sender = world.unique_domain("oneclick")
    secret = tmp_path / "secret.key"
    secret.write_text("0123456789abcdef0123456789abcdef\n")
    env = {
        **world.env(),
        "KAKITOME_DATABASE__URL": f"sqlite:///{tmp_path / 'kakitome.db'}",
        "KAKITOME_DOMAINS__KEY_FILE": str(secret),
        "KAKITOME_PATHS__DATA_DIR": str(tmp_path / "var"),
        "KAKITOME_HTTP__PUBLIC_URL": f"https://{sender}",
        "KAKITOME_DNS__TIMEOUT": "1",
    }
    settings = world.settings(env)
    try:
        by_recipient = asyncio.run(_send_campaign(settings, world, sender))
        service = ServiceProcess(env, tmp_path, roles=("web",)).start()
        try:
            yield OneClickWorld(world, sender, settings, service, by_recipient)
        finally:
            service.stop()
    finally:
        world.dns.remove_tree(sender)


def _https_link(content: bytes) -> str:
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    links = [link.strip().strip("<>") for link in str(message["List-Unsubscribe"]).split(",")]
    [https] = [link for link in links if link.startswith("https://")]
    return https


def test_both_rfc8058_headers_are_signed(one_click: OneClickWorld) -> None:
    """T38: on a real campaign message, every DKIM signature (RSA and Ed25519) verifies
    with the keys in DNS, its h= lists List-Unsubscribe and List-Unsubscribe-Post, and a
    second copy of either field, added above the signed ones, fails it."""
    dnsfunc = dkimpy_dns(one_click.world)
    for rcpt, content in one_click.by_recipient.items():
        _https_link(content)
        head = email.message_from_bytes(content, policy=email.policy.compat32)
        fields = head.get_all("DKIM-Signature") or []
        assert len(fields) == 2, rcpt
        for index, field in enumerate(fields):
            tags = dkim.util.parse_tag_value(str(field).replace("\r\n", "").encode())
            assert tags[b"d"] == one_click.sender.encode()
            signed = {h.strip().lower() for h in tags[b"h"].split(b":")}
            assert {b"list-unsubscribe", b"list-unsubscribe-post"} <= signed, signed
            assert dkim.DKIM(content).verify(idx=index, dnsfunc=dnsfunc), (rcpt, index)
            # Over-signed: a List-Unsubscribe(-Post) added on the way breaks the signature.
            for added in (
                b"List-Unsubscribe: <https://attacker.example/u>\r\n",
                b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
            ):
                forged = dkim.DKIM(added + content)
                assert not forged.verify(idx=index, dnsfunc=dnsfunc), (rcpt, index, added)


def test_get_does_not_unsubscribe(one_click: OneClickWorld) -> None:
    """T38: GETs of the List-Unsubscribe URL (a link scanner) answer a page and leave the
    subscriber subscribed; only the POST unsubscribes."""
    rcpt = SUBSCRIBERS[0]
    url = one_click.local(_https_link(one_click.by_recipient[rcpt]))
    with httpx.Client(timeout=10, follow_redirects=False) as client:
        for _ in range(3):
            page = client.get(url)
            assert page.status_code == 200, page.text
            assert asyncio.run(_status(one_click.settings, rcpt)) == "subscribed"
            assert 'method="post"' in page.text  # the page's button is what POSTs


def test_cookieless_one_click_post_unsubscribes_without_redirect(
    one_click: OneClickWorld,
) -> None:
    """T38: a POST with body List-Unsubscribe=One-Click, from a client with no cookie (and
    no Origin or Referer), gets 200 itself, not a redirect, sets no cookie, and
    unsubscribes exactly that subscriber; a second POST answers 200 again."""
    rcpt, other = SUBSCRIBERS
    url = one_click.local(_https_link(one_click.by_recipient[rcpt]))
    with httpx.Client(timeout=10, follow_redirects=False) as client:
        assert not client.cookies
        response = client.post(url, content=ONE_CLICK, headers=FORM)
        assert "cookie" not in {k.lower() for k in response.request.headers}
        assert not response.is_redirect and "location" not in response.headers
        assert response.status_code == 200, response.text
        assert "set-cookie" not in response.headers
        assert asyncio.run(_status(one_click.settings, rcpt)) == "unsubscribed"
        assert asyncio.run(_status(one_click.settings, other)) == "subscribed"
        again = client.post(url, content=ONE_CLICK, headers=FORM)
        assert again.status_code == 200 and not again.is_redirect
