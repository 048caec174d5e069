"""Submission on 587 and 465 and the MX's relay refusal, with swaks (Debian) as the client."""

from __future__ import annotations

import asyncio

from kakitome.domains.service import DomainService
from kakitome.inbound.users import hash_password
from tests.fixtures_db import queue_store
from tests.inbound.conftest import INBOUND_DOMAIN, RawClient, Running, StartInbound, run_swaks

PASSWORD = "correct horse battery staple"
MESSAGE = "Subject: hello\r\nFrom: app@sender.test\r\nTo: someone@example.test\r\n\r\nhi\r\n"


async def _user(running: Running, name: str = "app", domain: str = "sender.test") -> None:
    """An SMTP user, and ``domain`` as a configured sending domain (submission takes From
    domains that are configured, and no others)."""
    await running.inbound.create_smtp_user(name, hash_password(PASSWORD), now=0.0)
    await DomainService(running.store, running.settings).add(domain)


async def test_starttls_then_auth_on_587_queues_the_message(
    start_inbound: StartInbound, swaks_bin: str
) -> None:
    """587: STARTTLS, then AUTH PLAIN; the message goes through the injector (T11, T9)."""
    running = await start_inbound()
    await _user(running)
    code, out = await run_swaks(
        swaks_bin,
        "--server",
        "127.0.0.1",
        "--port",
        str(running.submission),
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "app",
        "--auth-password",
        PASSWORD,
        "--from",
        "app@sender.test",
        "--to",
        "someone@example.test",
        "--ehlo",
        "client.test",
        "--data",
        MESSAGE,
    )
    assert code == 0, out
    assert "235 2.7.0" in out
    assert "250 2.0.0 OK queued as" in out
    message_id = out.split("queued as ")[1].split()[0]
    receipt = await queue_store(running.store).receipt(message_id)
    assert [r.recipient for r in receipt.recipients] == ["someone@example.test"]
    events = await queue_store(running.store).events_for(message_id)
    assert events[0]["data"]["source"] == "smtp"


async def test_auth_before_starttls_is_refused_530(
    start_inbound: StartInbound, swaks_bin: str
) -> None:
    """587 without TLS: AUTH is not advertised, and MAIL/AUTH get 530 5.7.0 (T5, T11)."""
    running = await start_inbound()
    await _user(running)
    code, out = await run_swaks(
        swaks_bin,
        "--server",
        "127.0.0.1",
        "--port",
        str(running.submission),
        "--auth-optional",
        "--auth-user",
        "app",
        "--auth-password",
        PASSWORD,
        "--from",
        "app@sender.test",
        "--to",
        "someone@example.test",
        "--ehlo",
        "client.test",
    )
    assert code != 0
    assert "AUTH" not in "".join(line for line in out.splitlines() if line.startswith("<-  250"))
    assert "530 5.7.0" in out
    client = await RawClient.connect(running.submission)
    assert (await client.cmd("EHLO client.test")).startswith("250")
    assert (await client.cmd("AUTH PLAIN AGFwcABwYXNz")).startswith("530 5.7.0")
    await client.close()


async def test_implicit_tls_on_465(start_inbound: StartInbound, swaks_bin: str) -> None:
    """465 is TLS from the first byte; STARTTLS is not offered inside it (T11, T4)."""
    running = await start_inbound()
    await _user(running)
    code, out = await run_swaks(
        swaks_bin,
        "--server",
        "127.0.0.1",
        "--port",
        str(running.submissions),
        "--tls-on-connect",
        "--auth",
        "LOGIN",
        "--auth-user",
        "app",
        "--auth-password",
        PASSWORD,
        "--from",
        "app@sender.test",
        "--to",
        "someone@example.test",
        "--ehlo",
        "client.test",
        "--data",
        MESSAGE,
    )
    assert code == 0, out
    assert "STARTTLS" not in out
    assert "250 2.0.0 OK queued as" in out


async def test_relay_without_auth_is_refused(start_inbound: StartInbound, swaks_bin: str) -> None:
    """The MX takes mail for its own domains only; anything else is 550 5.7.1 (never a relay)."""
    running = await start_inbound()
    code, out = await run_swaks(
        swaks_bin,
        "--server",
        "127.0.0.1",
        "--port",
        str(running.mx),
        "--tls",
        "--from",
        "someone@elsewhere.test",
        "--to",
        "victim@example.org",
        "--ehlo",
        "client.test",
    )
    assert code != 0
    assert "550 5.7.1" in out
    code, out = await run_swaks(
        swaks_bin,
        "--server",
        "127.0.0.1",
        "--port",
        str(running.submission),
        "--tls",
        "--from",
        "someone@elsewhere.test",
        "--to",
        "victim@example.org",
        "--ehlo",
        "client.test",
    )
    assert code != 0
    assert "530 5.7.0" in out
    assert await running.inbound.count_inbound() == 0


async def test_mx_takes_mail_for_inbound_domain_without_tls(
    start_inbound: StartInbound, swaks_bin: str
) -> None:
    """Port 25 offers STARTTLS but never requires it; held mail says ESMTP (T11, T9)."""
    running = await start_inbound(INBOUND__CHECK_AUTHENTICATION="false")
    code, out = await run_swaks(
        swaks_bin,
        "--server",
        "127.0.0.1",
        "--port",
        str(running.mx),
        "--from",
        "someone@elsewhere.test",
        "--to",
        f"info@{INBOUND_DOMAIN}",
        "--ehlo",
        "client.test",
    )
    assert code == 0, out
    assert "STARTTLS" in out
    rows = await running.inbound.list_inbound()
    assert [r.status for r in rows] == ["held"]
    assert b"with ESMTP id" in rows[0].content


async def test_oversized_refused_at_size_and_at_data(
    start_inbound: StartInbound, swaks_bin: str
) -> None:
    """SIZE= over the limit gets 552 at MAIL; a message over the limit gets 552 at DATA."""
    running = await start_inbound(INBOUND__MAX_MESSAGE_SIZE="2048")
    await _user(running)
    big = MESSAGE + ("x" * 70 + "\r\n") * 60
    code, out = await run_swaks(
        swaks_bin,
        "--server",
        "127.0.0.1",
        "--port",
        str(running.submission),
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "app",
        "--auth-password",
        PASSWORD,
        "--from",
        "app@sender.test",
        "--to",
        "someone@example.test",
        "--ehlo",
        "client.test",
        "--data",
        big,
    )
    assert code != 0
    assert "552 5.3.4" in out
    client = await RawClient.connect(running.submission)
    await client.cmd("EHLO client.test")
    await client.cmd("STARTTLS")
    await client.starttls()
    ehlo = await client.cmd("EHLO client.test")
    assert "SIZE 2048" in ehlo
    assert "AUTH" in ehlo
    assert (await client.cmd("AUTH PLAIN AGFwcABjb3JyZWN0IGhvcnNlIGJhdHRlcnkgc3RhcGxl")).startswith(
        "235"
    )
    assert (await client.cmd("MAIL FROM:<app@sender.test> SIZE=100000")).startswith("552 5.3.4")
    await client.close()


def _swaks_submit(running: Running, envelope_from: str, data: str) -> list[str]:
    return [
        "--server",
        "127.0.0.1",
        "--port",
        str(running.submission),
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "app",
        "--auth-password",
        PASSWORD,
        "--from",
        envelope_from,
        "--to",
        "someone@example.test",
        "--ehlo",
        "client.test",
        "--data",
        data,
    ]


async def test_submission_from_only_configured_sending_domains(
    database_url: str, start_inbound: StartInbound, swaks_bin: str
) -> None:
    """An authenticated user may send From configured sending domains only: another domain
    in MAIL FROM or in the From field gets 550 5.7.1 with the reason; nothing is queued.
    On both engines; the domain list is read from the database."""
    running = await start_inbound(database_url)
    await _user(running)
    forged = MESSAGE.replace("From: app@sender.test", "From: ceo@bank.test")
    code, out = await run_swaks(swaks_bin, *_swaks_submit(running, "app@bank.test", MESSAGE))
    assert code != 0, out
    assert "550 5.7.1 Sender domain bank.test not allowed for this user (MAIL FROM)" in out
    assert "kakitome domain add bank.test" in out
    code, out = await run_swaks(swaks_bin, *_swaks_submit(running, "app@sender.test", forged))
    assert code != 0, out
    assert "550 5.7.1 Sender domain bank.test not allowed for this user (header From)" in out
    assert "queued as" not in out
    # Upper case and a domain added while the service runs (found on the next miss).
    await DomainService(running.store, running.settings).add("other.test")
    await asyncio.sleep(2.1)
    other = MESSAGE.replace("From: app@sender.test", "From: News <news@OTHER.test>")
    code, out = await run_swaks(swaks_bin, *_swaks_submit(running, "app@Sender.TEST", other))
    assert code == 0, out
    message_id = out.split("queued as ")[1].split()[0]
    receipt = await queue_store(running.store).receipt(message_id)
    assert [r.recipient for r in receipt.recipients] == ["someone@example.test"]
