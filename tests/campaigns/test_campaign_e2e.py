"""The issue's campaign test, end to end: ``kakitome serve`` in a subprocess sends a campaign
to 3,000 subscribers (``KAKITOME_TEST_CAMPAIGN_TOTAL``; the first version ran 10,000,
which proves nothing more than 3,000 and took three times as long) on the local internet,
is SIGKILLed when about half have been queued, and is restarted.

Set-up (in this process, on the same database): a sending domain added with
``DomainService`` (as ``kakitome domain add`` does) whose DNS records are published into
the world's DNS; a list whose From is on that domain; the subscribers imported from
CSV, spread over four recipient domains on two MX peers; a campaign, validated and
started with ``send_now``. The service's worker role does the rest (campaign runner,
DKIM signing, delivery).

What is checked after the restart:

- every subscriber got the campaign, and exactly ONE campaign message: one distinct
  Message-ID per recipient (the checkpoint and ``campaign_sends`` key hold across the
  kill). The SMTP layer may have to hand the *same* message over again: a message the
  peer accepted in the instant before the kill, whose result was not yet committed, is
  sent again after the restart (RFC 5321 §6.1 accepts such duplicates). Those copies are
  counted and bounded by what can be in flight (one transaction per connection, plus a
  margin for the group-commit window: see IN_FLIGHT) and printed; with the kill
  landing while the worker waits for the campaign runner there are none;
- each message is personalised: the subscriber's name in the Subject and their own code
  in the body;
- DKIM: both signatures of ~50 sampled messages verify with dkimpy against the TXT
  records in the world's DNS, and the signed header list (h=) covers List-Unsubscribe and
  List-Unsubscribe-Post;
- RFC 8058: a cookie-less one-click POST to the message's List-Unsubscribe URL (through
  the service's own HTTP port) unsubscribes that subscriber.
"""

from __future__ import annotations

import asyncio
import email
import email.header
import email.policy
import io
import os
import random
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

import dkim
import httpx
import pytest
import sqlalchemy

from kakitome.auth.dkim_verify import parse_tag_list
from kakitome.campaigns.service import CampaignService
from kakitome.config import Settings, load_settings
from kakitome.domains.service import DomainService
from kakitome.injection import Injector
from kakitome.lists import ListService, NewList
from kakitome.queue.scheduler import RECORD_BACKLOG
from kakitome.store.database import Database
from kakitome.testing import LocalInternet, Peer, PeerBehaviour
from tests.e2e.service import ServiceProcess
from tests.fixtures_db import queue_store
from tests.fixtures_load import CPUHog
from tests.fixtures_world import dkimpy_dns

pytestmark = pytest.mark.heavy

TOTAL = int(os.environ.get("KAKITOME_TEST_CAMPAIGN_TOTAL", "3000"))
DOMAINS = 4
CONNECTIONS_PER_DOMAIN = 8  # delivery.per_destination_concurrency (default)
# What a crash can make us send twice, by the mechanism (queue/scheduler.py): the worker records
# each result as the server answers (ResultRecorder, group commits 5 ms apart), and once
# RECORD_BACKLOG results are delivered but not yet committed every connection waits before
# its next transaction; results that cannot be committed are kept and retried, never given
# up while their deliveries stay leased. So at the kill at most RECORD_BACKLOG results are
# uncommitted, plus the one transaction each connection to the destinations (4 domains x 8
# connections, one recipient per message here) had on the wire. The CPU hog beside the test
# makes commits slow, so the backlog really fills: measured 200-290 copies with it, ages
# 0.1-0.3 s. Copies marked "BB" or "AA" below (both before the kill, or both after the
# restart) are not in flight at all: the worker sent a message twice on its own (a lease
# that lapsed and was claimed again while still in flight), which the bound also counts.
IN_FLIGHT = DOMAINS * CONNECTIONS_PER_DOMAIN * 1
REDELIVERY_BOUND = RECORD_BACKLOG + IN_FLIGHT
DKIM_SAMPLE = 50

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)
_SUBJECT = re.compile(rb"^Subject: (.*(?:\r\n[ \t].*)*)\r$", re.MULTILINE)
_CODE = re.compile("会員番号 (K\\d{5})".encode())


def _address(i: int, domains: list[str]) -> str:
    return f"member{i}@{domains[i % len(domains)]}"


def _csv(domains: list[str]) -> bytes:
    lines = ["email,name,code"]
    lines += [f"{_address(i, domains)},利用者{i:05d},K{i:05d}" for i in range(TOTAL)]
    return ("\n".join(lines) + "\n").encode()


async def _prepare(
    settings: Settings, world: LocalInternet, sender: str, domains: list[str]
) -> int:
    """Domain with keys published, list, subscribers, campaign started; its id."""
    store = await Database.open(settings.database.url, pool_size=5)
    try:
        domain_service = DomainService(store, settings)
        await domain_service.add(sender)
        records = (await domain_service.records(sender)).to_dict()
        for record in records["records"]:
            if record["type"] == "TXT":
                world.dns.add_txt(record["name"], record["value"])
            elif record["type"] == "MX":
                preference, _, host = record["value"].partition(" ")
                world.dns.add_mx(record["name"], int(preference), host)
        injector = Injector(queue_store(store), settings)
        lists = ListService(store, settings, injector=injector)
        await lists.create_list(
            NewList(
                name="news",
                title="書留通信",
                opt_in="single",
                from_name="書留商店",
                from_address=f"news@{sender}",
                sender_organization="書留商店株式会社",
                sender_postal_address="東京都千代田区千代田1-1",
                mail_domain=sender,
            )
        )
        report = await lists.import_csv("news", io.BytesIO(_csv(domains)))
        assert report.inserted == TOTAL and not report.rejected, report.to_dict()
        campaigns = CampaignService(store, settings, lists, injector)
        row = await campaigns.create(
            "spring",
            "news",
            subject="{{ name | honorific }}へ 春のお知らせ",
            body="<h1>{{ honorific(name) }}</h1><p>会員番号 {{ attributes.code }}</p>"
            '<p><a href="https://shop.example.jp/new">新商品</a></p>',
            text="{{ honorific(name) }}\n\n会員番号 {{ attributes.code }}\n\n"
            "新商品: https://shop.example.jp/new\n",
            # Tracking has its own tests; here it would only add CPU time per message.
            tracking=False,
        )
        await campaigns.send_now(row.id)
        return row.id
    finally:
        await store.close()


async def _campaign_progress(url: str, campaign_id: int) -> tuple[str, int, int]:
    store = await Database.open(url, pool_size=1)
    try:
        from kakitome.campaigns.store import CampaignStore

        row = await CampaignStore(store).get_campaign(campaign_id)
        return row.status, row.sent, row.checkpoint
    finally:
        await store.close()


async def _member_status(url: str, settings: Settings, address: str) -> str:
    store = await Database.open(url, pool_size=1)
    try:
        lists = ListService(store, settings)
        return (await lists.membership("news", address)).status
    finally:
        await store.close()


def _decoded(field: bytes) -> str:
    return str(email.header.make_header(email.header.decode_header(field.decode("ascii"))))


def _text_parts(data: bytes) -> list[bytes]:
    """The decoded bodies of the text/* parts (compat32: the quick parser)."""
    parsed = email.message_from_bytes(data)
    out: list[bytes] = []
    for part in parsed.walk():
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out.append(payload)
    return out


def _sync_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def _wait_until_queued(url: str, campaign_id: int, count: int, timeout: float) -> int:
    """Poll the campaign's ``sent`` counter (a plain read; WAL lets it run beside the
    service) until it reaches ``count``; returns the last value."""
    engine = sqlalchemy.create_engine(_sync_url(url))
    query = sqlalchemy.text("SELECT sent FROM campaigns WHERE id = :id")
    try:
        deadline = time.monotonic() + timeout
        sent = 0
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                sent = int(conn.execute(query, {"id": campaign_id}).scalar_one())
            if sent >= count:
                break
            time.sleep(0.05)
        return sent
    finally:
        engine.dispose()


def _arrived(peers: list[Peer]) -> int:
    return sum(len(p.messages()) for p in peers)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_campaign_to_thousands_of_subscribers_survives_sigkill(
    world: LocalInternet, database_url: str, tmp_path: Path, cpu_hog: CPUHog
) -> None:
    """Exactly one personalised, DKIM-signed message each, with working RFC 8058 headers,
    across a SIGKILL half-way and a restart."""
    sender = world.unique_domain("shop")
    # No transcripts: thousands of connections' command lines are only memory and CPU here.
    quiet = PeerBehaviour(transcript=False)
    peers = [world.add_peer(behaviour=quiet), world.add_peer(behaviour=quiet)]
    domains = [world.unique_domain("members") for _ in range(DOMAINS)]
    for index, name in enumerate(domains):
        world.add_domain(name, mx=[(10, peers[index % len(peers)])])
    secret = tmp_path / "keys.secret"
    secret.write_text("0123456789abcdef0123456789abcdef\n")
    env = {
        **world.env(),
        "KAKITOME_DATABASE__URL": database_url,
        "KAKITOME_PATHS__DATA_DIR": str(tmp_path / "var"),
        "KAKITOME_DOMAINS__KEY_FILE": str(secret),
        "KAKITOME_DOMAINS__VERIFY_INTERVAL": "0",
        "KAKITOME_DELIVERY__HELO_HOSTNAME": "mail.kakitome.test",
        "KAKITOME_HTTP__PUBLIC_URL": f"https://{sender}",
        "KAKITOME_CAMPAIGNS__POLL_INTERVAL": "0.2",
        "KAKITOME_QUEUE__POLL_INTERVAL": "0.5",
        "KAKITOME_QUEUE__LEASE_SECONDS": "3",
        "KAKITOME_QUEUE__RETRY_FIRST": "1",
        "KAKITOME_LOG__LEVEL": "warning",
    }
    settings = load_settings(environ=env)
    started = time.monotonic()
    campaign_id = asyncio.run(_prepare(settings, world, sender, domains))
    prepared = time.monotonic() - started

    # The machine is busy from the start of sending to the kill: that is where the bound
    # on what a crash sends twice must hold.
    cpu_hog.start()
    service = ServiceProcess(env, tmp_path).start()
    try:
        # Kill half-way through the campaign: half the audience queued (the checkpoint
        # is tested), part of it delivered and more in flight (the queue is tested).
        queued_at_kill = _wait_until_queued(database_url, campaign_id, TOTAL // 2, 180)
        service.kill()
        cpu_hog.stop()
        killed_at = time.time()
        at_kill = _arrived(peers)
        per_peer_at_kill = [len(p.messages()) for p in peers]
        killed_after = time.monotonic() - started
        status, queued_at_kill, _ = asyncio.run(_campaign_progress(database_url, campaign_id))
        assert status == "sending" and queued_at_kill < TOTAL, "the kill came too late"
        assert 0 < at_kill < TOTAL, f"nothing was delivered before the kill:\n{service.log()}"

        service = ServiceProcess({**env, "KAKITOME_HTTP__PORT": str(service.port)}, tmp_path)
        service.start()
        expected = {_address(i, domains): i for i in range(TOTAL)}
        deadline = time.monotonic() + 360
        reported = time.monotonic()
        while time.monotonic() < deadline:
            recipients = {r for p in peers for m in p.messages() for r in m.rcpt_tos}
            if len(recipients) >= TOTAL:
                break
            if time.monotonic() - reported > 15:
                reported = time.monotonic()
                print(f"[campaign-e2e] {reported - started:.0f} s: {len(recipients)} reached")
            time.sleep(0.2)
        received = [m for p in peers for m in p.messages()]
        print(
            f"\n[campaign-e2e:{database_url.split(':')[0]}] prepared in {prepared:.1f} s; "
            f"killed at {killed_after:.1f} s: {at_kill} arrived, {queued_at_kill} queued; "
            f"after restart: {len(received)} arrived in all, "
            f"{time.monotonic() - started:.1f} s since the start"
        )

        # -- exactly one campaign message each --------------------------------------------
        copies: dict[str, Counter[bytes]] = defaultdict(Counter)
        by_recipient: dict[str, bytes] = {}
        for message in received:
            assert len(message.rcpt_tos) == 1, message.rcpt_tos
            [rcpt] = message.rcpt_tos
            match = _MESSAGE_ID.search(message.data)
            assert match, message.data[:2000]
            copies[rcpt][match.group(1)] += 1
            by_recipient[rcpt] = message.data
        missing = set(expected) - set(copies)
        assert not missing, f"{len(missing)} subscribers got nothing:\n{service.log()[-5000:]}"
        assert set(copies) == set(expected), set(copies) - set(expected)
        several = {r: c for r, c in copies.items() if len(c) != 1}
        assert not several, f"subscribers with two different campaign messages: {several}"
        redelivered = sum(n - 1 for c in copies.values() for n in c.values())
        # Where the copies of each re-delivered message arrived: before the kill (B) or
        # after the restart (A), per peer.
        places: Counter[str] = Counter()
        for peer, cut in zip(peers, per_peer_at_kill, strict=True):
            seen: dict[bytes, list[str]] = defaultdict(list)
            for position, message in enumerate(peer.messages()):
                match = _MESSAGE_ID.search(message.data)
                assert match
                seen[match.group(1)].append("B" if position < cut else "A")
            places.update("".join(v) for v in seen.values() if len(v) > 1)
        print(f"[campaign-e2e] copies before (B) / after (A) the kill: {dict(places)}")
        first: dict[bytes, float] = {}
        for message in received:
            match = _MESSAGE_ID.search(message.data)
            assert match
            first.setdefault(match.group(1), message.received_at)
        ages = sorted(
            round(killed_at - first[mid], 3)
            for c in copies.values() for mid, n in c.items() if n > 1 and first[mid] <= killed_at
        )  # fmt: skip
        print(f"[campaign-e2e] first copy's age at the kill (s): {ages[:3]} .. {ages[-3:]}")
        print(f"[campaign-e2e] one message each; SMTP re-deliveries of in-flight messages: "
              f"{redelivered} (bound {REDELIVERY_BOUND}; {cpu_hog})")  # fmt: skip
        assert redelivered <= REDELIVERY_BOUND, (redelivered, dict(places), ages[-5:])
        assert "BB" not in places and "AA" not in places, dict(places)
        progress = asyncio.run(_campaign_progress(database_url, campaign_id))
        assert progress[:2] == ("finished", TOTAL), progress

        # -- personalised -------------------------------------------------------------
        for rcpt, data in by_recipient.items():
            index = expected[rcpt]
            subject = _SUBJECT.search(data)
            assert subject, rcpt
            assert _decoded(subject.group(1)) == f"利用者{index:05d}様へ 春のお知らせ", rcpt
            codes = [_CODE.findall(part) for part in _text_parts(data)]
            assert codes == [[f"K{index:05d}".encode()]] * 2, (rcpt, codes)  # text and HTML
        for rcpt in random.Random(5).sample(sorted(by_recipient), DKIM_SAMPLE):
            index = expected[rcpt]
            msg = email.message_from_bytes(by_recipient[rcpt], policy=email.policy.default)
            text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            assert f"利用者{index:05d}様\n\n会員番号 K{index:05d}\n" in text, text

        # -- DKIM over the RFC 8058 headers --------------------------------------------
        dnsfunc = dkimpy_dns(world)
        sample = random.Random(7).sample(sorted(by_recipient), DKIM_SAMPLE)
        for rcpt in sample:
            data = by_recipient[rcpt]
            assert data.count(b"DKIM-Signature:") == 2, rcpt
            checker = dkim.DKIM(data)
            for index in range(2):
                assert checker.verify(idx=index, dnsfunc=dnsfunc), (rcpt, index)
            head = email.message_from_bytes(data, policy=email.policy.compat32)
            for field in head.get_all("DKIM-Signature") or []:
                tags = parse_tag_list(str(field))
                assert tags["d"] == sender
                signed = {h.strip().lower() for h in tags["h"].split(":")}
                assert {"list-unsubscribe", "list-unsubscribe-post", "from",
                        "subject"} <= signed, signed  # fmt: skip

        # -- one-click unsubscribe through the service ---------------------------------
        rcpt = sample[0]
        msg = email.message_from_bytes(by_recipient[rcpt], policy=email.policy.default)
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        https = next(
            link.strip().strip("<>")
            for link in str(msg["List-Unsubscribe"]).split(",")
            if link.strip().startswith("<https://")
        )
        assert https.startswith(f"https://{sender}/unsubscribe/")
        local = service.url + https.removeprefix(f"https://{sender}")
        assert asyncio.run(_member_status(database_url, settings, rcpt)) == "subscribed"
        with httpx.Client(timeout=10) as client:
            response = client.post(
                local,
                content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        assert response.status_code == 200, response.text
        assert not response.cookies
        assert asyncio.run(_member_status(database_url, settings, rcpt)) == "unsubscribed"
        other = sample[1]
        assert asyncio.run(_member_status(database_url, settings, other)) == "subscribed"
    finally:
        service.stop()
        for name in (sender, *domains):
            world.dns.remove_tree(name)
        for peer in peers:
            world.remove_peer(peer)
