"""The protocol's departures from aiosmtpd for speed: its own ``__init__`` (no per-connection
introspection), replies held back while pipelined commands wait, STARTTLS on the loop's
``start_tls``."""

from __future__ import annotations

import asyncio
import ssl

from aiosmtpd.smtp import SMTP

from kakitome.inbound.protocol import ConnectionLimits, ConnectionTracker, KakitomeSMTP
from tests.inbound.conftest import INBOUND_DOMAIN, RawClient, StartInbound


class _Handler:
    async def handle_EHLO(
        self, server: object, session: object, envelope: object, hostname: str, responses: list[str]
    ) -> list[str]:
        return responses

    async def handle_DATA(self, *args: object) -> str:
        return "250 OK"

    async def auth_EXTRA(self, *args: object) -> None:
        return None


def _both(**options: object) -> tuple[SMTP, KakitomeSMTP]:
    loop = asyncio.get_running_loop()
    handler = _Handler()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    common: dict[str, object] = {
        "hostname": "mx.test",
        "ident": "Kakitome ESMTP",
        "data_size_limit": 1000,
        "enable_SMTPUTF8": True,
        "tls_context": ctx,
        "loop": loop,
        **options,
    }
    theirs = SMTP(handler, timeout=30.0, **common)  # type: ignore[arg-type]
    ours = KakitomeSMTP(
        handler,
        limits=ConnectionLimits(max_commands=100, max_line_length=1001, idle_timeout=30.0),
        tracker=ConnectionTracker(10, 10),
        **common,  # type: ignore[arg-type]
    )
    return theirs, ours


async def test_init_sets_what_aiosmtpd_sets() -> None:
    """Every attribute aiosmtpd's ``__init__`` sets is set, to the same value where it is a
    plain value, and the command, hook and AUTH tables name the same things."""
    for options in (
        {},
        {"require_starttls": True, "auth_required": True, "auth_exclude_mechanism": ["CRAM-MD5"]},
    ):
        theirs, ours = _both(**options)
        missing = set(vars(theirs)) - set(vars(ours))
        assert not missing, missing
        for name, value in vars(theirs).items():
            if isinstance(value, bool | int | float | str | type(None)):
                assert getattr(ours, name) == value, name
        assert set(ours._smtp_methods) == set(theirs._smtp_methods)
        assert set(ours._handle_hooks) == set(theirs._handle_hooks)
        assert set(ours._auth_methods) == set(theirs._auth_methods)
        for mech, attr in theirs._auth_methods.items():
            assert ours._auth_methods[mech].is_builtin == attr.is_builtin
        assert ours._ehlo_hook_ver == theirs._ehlo_hook_ver
        assert ours.__ident__ == theirs.__ident__
        # Per connection, not aiosmtpd's one dict shared by all connections.
        assert ours.command_size_limits is not theirs.command_size_limits


async def test_pipelined_replies_come_in_one_write(start_inbound: StartInbound) -> None:
    """MAIL, RCPT and DATA in one write: the three replies arrive together; a command that
    is alone in the buffer is answered at once (nobody waits on a held reply)."""
    running = await start_inbound(INBOUND__CHECK_AUTHENTICATION="false")
    client = await RawClient.connect(running.mx)
    await client.cmd("EHLO client.test")
    await client.send(f"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@{INBOUND_DOMAIN}>\r\nDATA\r\n".encode())
    await asyncio.sleep(0.2)
    chunk = await asyncio.wait_for(client.reader.read(4096), 10)
    lines = chunk.split(b"\r\n")
    assert lines[0].startswith(b"250") and lines[1].startswith(b"250")
    assert lines[2].startswith(b"354")
    await client.send(b"Subject: t\r\n\r\nbody\r\n.\r\n")
    assert (await client.reply()).startswith("250 2.0.0")
    # A pipelined group ending in a command that gets an error reply.
    await client.send(b"RSET\r\nBOGUS\r\n")
    assert (await client.reply()).startswith("250")
    assert (await client.reply()).startswith("500")
    assert (await client.cmd("NOOP")).startswith("250")
    await client.close()


async def test_starttls_then_commands_in_the_same_flight(start_inbound: StartInbound) -> None:
    """A client that sends EHLO with its TLS Finished gets it answered (the reader keeps
    what arrived inside TLS before the handshake was reported done)."""
    running = await start_inbound(INBOUND__CHECK_AUTHENTICATION="false")
    for _ in range(5):
        client = await RawClient.connect(running.mx)
        await client.cmd("EHLO client.test")
        assert (await client.cmd("STARTTLS")).startswith("220 2.0.0")
        await client.starttls()
        await client.send(b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\n")
        assert (await client.reply()).startswith("250-")
        assert (await client.reply()).startswith("250")
        await client.close()
