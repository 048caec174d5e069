"""T28 (TRANSPORT-SECURITY.md, issue 4): REQUIRETLS (RFC 8689) on submission.

REQUIRETLS is advertised only inside TLS (after STARTTLS on 587, at once on 465), never on
the MX; ``MAIL FROM:<...> REQUIRETLS`` in plaintext is refused; inside TLS with AUTH it is
taken and the queued message has ``requiretls`` set."""

from __future__ import annotations

import asyncio
import base64

from sqlalchemy import select

from kakitome.inbound.protocol import KakitomeSMTP
from kakitome.store.schema import messages
from tests.inbound.conftest import RawClient, Running, StartInbound
from tests.inbound.test_submission_swaks import PASSWORD, _user

MESSAGE = "Subject: hello\r\nFrom: app@sender.test\r\nTo: someone@example.test\r\n\r\nhi\r\n"
AUTH = "AUTH PLAIN " + base64.b64encode(f"\0app\0{PASSWORD}".encode()).decode()


def _keywords(ehlo: str) -> list[str]:
    return [line[4:].strip().upper() for line in ehlo.splitlines()[1:]]


async def _requiretls_of(running: Running, message_id: str) -> bool:
    async with running.store.engine.connect() as conn:
        row = (
            await conn.execute(select(messages.c.requiretls).where(messages.c.id == message_id))
        ).one()
    return bool(row.requiretls)


async def _send(client: RawClient, mail_from: str, *, auth: bool = True) -> str:
    """AUTH (unless done), MAIL, RCPT, DATA; the id the message was queued as."""
    if auth:
        assert (await client.cmd(AUTH)).startswith("235"), "auth"
    reply = await client.cmd(mail_from)
    assert reply.startswith("250 2.1.0"), reply
    assert (await client.cmd("RCPT TO:<someone@example.test>")).startswith("250")
    assert (await client.cmd("DATA")).startswith("354")
    reply = await client.cmd(MESSAGE + ".")
    assert reply.startswith("250 2.0.0 OK queued as"), reply
    return reply.split("queued as ")[1].split()[0]


async def test_587_advertises_requiretls_only_after_starttls(start_inbound: StartInbound) -> None:
    running = await start_inbound()
    client = await RawClient.connect(running.submission)
    try:
        before = _keywords(await client.cmd("EHLO client.test"))
        assert "STARTTLS" in before
        assert "REQUIRETLS" not in before
        assert (await client.cmd("STARTTLS")).startswith("220")
        await client.starttls()
        after = _keywords(await client.cmd("EHLO client.test"))
        assert "REQUIRETLS" in after
        assert "STARTTLS" not in after
    finally:
        await client.close()


async def test_587_requiretls_in_plaintext_is_refused(start_inbound: StartInbound) -> None:
    running = await start_inbound()
    client = await RawClient.connect(running.submission)
    try:
        await client.cmd("EHLO client.test")
        reply = await client.cmd("MAIL FROM:<app@sender.test> REQUIRETLS")
        assert reply.startswith("530 5.7."), reply
    finally:
        await client.close()


async def test_requiretls_in_plaintext_is_refused_530_5_7_10(
    start_inbound: StartInbound,
) -> None:
    """A submission-type listener without TLS at all (no STARTTLS to require): our own check
    answers, not aiosmtpd's STARTTLS gate."""
    running = await start_inbound()
    loop = asyncio.get_running_loop()
    service = running.service
    server = await loop.create_server(
        lambda: KakitomeSMTP(
            service.submission_handler,
            limits=service.limits,
            tracker=service.tracker,
            hostname="mx.kakitome.test",
            ident="Kakitome ESMTP",
            requiretls=True,
            loop=loop,
        ),
        host="127.0.0.1",
        port=0,
    )
    try:
        client = await RawClient.connect(server.sockets[0].getsockname()[1])
        try:
            assert "REQUIRETLS" not in _keywords(await client.cmd("EHLO client.test"))
            reply = await client.cmd("MAIL FROM:<app@sender.test> REQUIRETLS")
            assert reply.startswith("530 5.7.10 REQUIRETLS requires TLS"), reply
            # Without the parameter, MAIL goes on to the handler (here: no such user's
            # domain, 550), so the 530 was the REQUIRETLS check's.
            reply = await client.cmd("MAIL FROM:<app@sender.test>")
            assert not reply.startswith("530"), reply
        finally:
            await client.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_587_requiretls_over_tls_marks_the_message(start_inbound: StartInbound) -> None:
    running = await start_inbound()
    await _user(running)
    client = await RawClient.connect(running.submission)
    try:
        await client.cmd("EHLO client.test")
        assert (await client.cmd("STARTTLS")).startswith("220")
        await client.starttls()
        await client.cmd("EHLO client.test")
        marked = await _send(client, "MAIL FROM:<app@sender.test> REQUIRETLS")
        # The flag belongs to that transaction only.
        plain = await _send(client, "MAIL FROM:<app@sender.test> SIZE=100", auth=False)
    finally:
        await client.close()
    assert await _requiretls_of(running, marked) is True
    assert await _requiretls_of(running, plain) is False


async def test_465_advertises_and_takes_requiretls(start_inbound: StartInbound) -> None:
    running = await start_inbound()
    await _user(running)
    client = await RawClient.connect(running.submissions, tls=True)
    try:
        assert "REQUIRETLS" in _keywords(await client.cmd("EHLO client.test"))
        assert (await client.cmd(AUTH)).startswith("235")
        reply = await client.cmd("MAIL FROM:<app@sender.test> REQUIRETLS=1")
        assert reply.startswith("501 5.5.4"), reply
        message_id = await _send(
            client, "MAIL FROM:<app@sender.test> SIZE=100 requiretls", auth=False
        )
    finally:
        await client.close()
    assert await _requiretls_of(running, message_id) is True


async def test_mx_does_not_offer_requiretls(start_inbound: StartInbound) -> None:
    """The MX relays nothing over SMTP: no REQUIRETLS, before or after STARTTLS."""
    running = await start_inbound()
    client = await RawClient.connect(running.mx)
    try:
        assert "REQUIRETLS" not in _keywords(await client.cmd("EHLO client.test"))
        assert (await client.cmd("STARTTLS")).startswith("220")
        await client.starttls()
        assert "REQUIRETLS" not in _keywords(await client.cmd("EHLO client.test"))
        reply = await client.cmd("MAIL FROM:<someone@example.test> REQUIRETLS")
        assert reply.startswith("555 5.5.4"), reply
    finally:
        await client.close()
