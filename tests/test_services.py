"""Every producer of mail goes through the one ``Injector`` of ``kakitome.services``.

One ``open_services`` (the production wiring: overlay applied, DKIM keys loaded) on SQLite,
one sending domain added with its DKIM records published in the test world's DNS; then
each producer is driven through its real entry point:

- the HTTP API (``POST /api/v1/messages``),
- SMTP submission (587: STARTTLS, AUTH, into our own listener),
- a campaign (created and sent through the API, queued by the worker role's runner),
- a campaign test send (API),
- a double opt-in confirmation (a subscriber added through the API),
- a bounce notice (a DSN: the worker, with a delivery that the receiver refused),
- a TLS-RPT report mail (the worker role's reporting task).

Each queued message must verify with dkimpy against the keys in DNS, signed ``d=`` the
sending domain; each carries the domain's VERP return path (``bounce+…@``), except the
DSN, which RFC 3464 sends from the null sender. The list of producers is checked too, so
a new producer that is not added here shows up as a missing source.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import time
from collections.abc import Sequence
from pathlib import Path

import dkim
import httpx
from sqlalchemy import select

from kakitome.delivery.tlsrpt_task import tlsrpt_task
from kakitome.delivery.types import Batch, Outcome, RecipientResult
from kakitome.dns.resolver import Resolver
from kakitome.domains.keybox import KeyBox
from kakitome.domains.verp import parse_return_path
from kakitome.inbound.server import InboundService
from kakitome.queue.scheduler import Progress, Worker
from kakitome.services import Services, open_services
from kakitome.smtp.replies import Reply
from kakitome.store.schema import messages
from kakitome.testing import LocalInternet
from kakitome.tls.tlsrpt import ReportPolicy, SessionRecord
from kakitome.web import create_app
from tests.e2e.service import free_port
from tests.fixtures_world import dkimpy_dns

BASE = "http://kakitome.test"
WAIT = 20.0


async def _wait_for(services: Services, count: int) -> list[dict[str, object]]:
    """The queued messages, once there are at least ``count`` of them."""
    deadline = time.monotonic() + WAIT
    while True:
        async with services.store.engine.connect() as conn:
            rows = (await conn.execute(select(messages))).mappings().all()
        if len(rows) >= count or time.monotonic() > deadline:
            return [dict(r) for r in rows]
        await asyncio.sleep(0.05)


async def test_every_producer_of_mail_is_signed_and_has_the_verp_return_path(
    world: LocalInternet, tmp_path: Path
) -> None:
    domain = world.unique_domain("producers")
    policy_domain = world.unique_domain("rptpol")
    world.dns.add_txt(
        f"_smtp._tls.{policy_domain}", f"v=TLSRPTv1; rua=mailto:reports@{policy_domain}", ttl=0
    )
    secret = tmp_path / "secret.key"
    secret.write_text("0123456789abcdef0123456789abcdef\n")
    settings = world.settings(
        {
            "KAKITOME_DATABASE__URL": f"sqlite:///{tmp_path / 'db' / 'kakitome.db'}",
            "KAKITOME_PATHS__DATA_DIR": str(tmp_path / "var"),
            "KAKITOME_DOMAINS__KEY_FILE": str(secret),
            "KAKITOME_DELIVERY__HELO_HOSTNAME": f"mta.{domain}",
            "KAKITOME_HTTP__PUBLIC_URL": "https://news.example.jp",
            "KAKITOME_DNS__TIMEOUT": "1",
            "KAKITOME_TLSRPT__SENDER": f"tlsrpt@{domain}",
            "KAKITOME_TLSRPT__INTERVAL": "0.2",
            "KAKITOME_INBOUND__BIND_HOST": "127.0.0.1",
            "KAKITOME_INBOUND__MX_PORT": "0",
            "KAKITOME_INBOUND__SUBMISSION_PORT": str(free_port()),
            "KAKITOME_INBOUND__SUBMISSIONS_PORT": "0",
            "KAKITOME_INBOUND__AUTH_FAILURE_DELAY": "0.01",
        }
    )
    services = await open_services(settings)
    stop = asyncio.Event()
    inbound = InboundService(services, follow_settings=False, forward=False)
    try:
        # `kakitome domain add`, its DKIM records published; the signer reloads its keys.
        await services.domains.add(domain)
        for record in (await services.domains.records(domain)).to_dict()["records"]:
            if record["purpose"] == "dkim":
                world.dns.add_txt(record["name"], record["value"], ttl=0)
        assert services.signing is not None
        await services.signing.refresh(services.store)
        await services.tls_store.record_sessions(
            [SessionRecord("2024-05-01", ReportPolicy(policy_domain), "mx", "192.0.2.7", None)]
        )
        key = await services.api_keys.create_api_key(
            "producers", ["send", "read", "admin"], now=time.time()
        )
        h = {"Authorization": f"Bearer {key}"}
        transport = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            # 1. The HTTP API.
            sent = await client.post(
                "/api/v1/messages",
                json={
                    "from": f"app@{domain}",
                    "to": ["api@example.com"],
                    "subject": "api",
                    "text": "hello\n",
                },
                headers=h,
            )
            assert sent.status_code == 202, sent.text
            # 2. A double opt-in confirmation, and 3. a campaign with 4. its test send.
            ids = {}
            for name, opt_in in (("confirm", "double"), ("news", "single")):
                made = await client.post(
                    "/api/v1/lists",
                    json={
                        "name": name,
                        "opt_in": opt_in,
                        "from_address": f"news@{domain}",
                        "sender_organization": "書留商店",
                        "sender_postal_address": "東京都千代田区1-1",
                    },
                    headers=h,
                )
                assert made.status_code == 201, made.text
                ids[name] = made.json()["id"]
                added = await client.post(
                    f"/api/v1/lists/{ids[name]}/subscribers",
                    json={"email": f"{name}@example.com"},
                    headers=h,
                )
                assert added.status_code == 201, added.text
            campaign = await client.post(
                "/api/v1/campaigns",
                json={
                    "name": "spring",
                    "list_id": ids["news"],
                    "subject": "campaign",
                    "body": "<p>Hello</p>",
                },
                headers=h,
            )
            assert campaign.status_code == 201, campaign.text
            cid = campaign.json()["id"]
            test = await client.post(
                f"/api/v1/campaigns/{cid}/test", json={"to": ["test@example.com"]}, headers=h
            )
            assert test.status_code == 200, test.text
            started = await client.post(f"/api/v1/campaigns/{cid}/send", headers=h)
            assert started.status_code == 200, started.text
            # 5. SMTP submission.
            user = await client.post("/api/v1/smtp-users", json={"username": "app"}, headers=h)
            assert user.status_code == 201, user.text
            password = user.json()["password"]
        report = await services.campaigns.run_due()  # what the worker role's runner does
        assert report.queued == 1
        await inbound.start()
        port = inbound.ports["submission"]

        def submit() -> None:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # our own listener's self-signed certificate
            with smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as smtp:
                smtp.starttls(context=context)
                smtp.login("app", password)
                smtp.sendmail(
                    f"app@{domain}",
                    ["smtp@example.com"],
                    f"From: app@{domain}\r\nTo: smtp@example.com\r\nSubject: smtp\r\n\r\nhi\r\n",
                )

        await asyncio.to_thread(submit)

        # 6. A bounce notice: the worker, its delivery refused by the receiver.
        async def refuse(batch: Batch, progress: Progress) -> list[RecipientResult]:
            refused = [
                RecipientResult(r.delivery_id, Outcome.BOUNCED, Reply(550, "5.1.1", "no user"))
                for m in batch.messages
                for r in m.recipients
            ]
            await asyncio.sleep(0)
            return refused

        before = len(await _wait_for(services, 5))
        assert before == 5
        worker = Worker(
            services.settings,
            services.queue,
            refuse,
            injector=services.injector,
            clock=services.clock,
        )
        # 7. The TLS-RPT report mail, from the worker role's task.
        tasks = [
            asyncio.create_task(worker.run(stop)),
            asyncio.create_task(tlsrpt_task(services, Resolver(settings.dns), stop)),
        ]
        # Each message bounces once (a DSN each), the report too; DSNs get no DSN.
        rows = await _wait_for(services, before * 2 + 2)
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        await inbound.stop()
        await services.close()

    lookup = dkimpy_dns(world)
    verp_key = KeyBox.from_settings(settings).verp_key
    producers = {
        "api": "api",
        "smtp": "smtp",
        "campaign": "campaign",
        "[TEST] campaign": "campaign test send",
        "Undelivered Mail Returned to Sender": "bounce notice (DSN)",
    }
    seen: set[str] = set()
    assert len(rows) == 12
    for row in rows:
        subject = str(row["subject"])
        content = row["content"]
        assert isinstance(content, bytes)
        name = producers.get(subject)
        if name is None and "登録確認" in subject:
            name = "double opt-in confirmation"
        if name is None and subject.startswith("Report Domain:"):
            name = "TLS-RPT report"
        assert name is not None, f"a producer this test does not know: {subject!r}"
        seen.add(name)
        assert dkim.verify(content, dnsfunc=lookup), f"{name}: DKIM does not verify"
        signatures = _dkim_domains(content)
        assert signatures and set(signatures) == {domain}, (name, signatures)
        sender = str(row["sender"])
        if name == "bounce notice (DSN)":
            assert sender == "", "a DSN goes from the null sender (RFC 3464)"
        else:
            parsed = parse_return_path(verp_key, sender)
            assert parsed is not None and sender.startswith("bounce+"), (name, sender)
    assert seen == {
        "api",
        "smtp",
        "campaign",
        "campaign test send",
        "double opt-in confirmation",
        "bounce notice (DSN)",
        "TLS-RPT report",
    }


def _dkim_domains(content: bytes) -> Sequence[str]:
    import email
    from email import policy

    message = email.message_from_bytes(content, policy=policy.compat32)
    found = []
    for field in message.get_all("DKIM-Signature") or []:
        tags = dict(
            part.strip().split("=", 1) for part in "".join(str(field).split()).split(";") if part
        )
        found.append(tags["d"])
    return found

