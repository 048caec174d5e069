"""Tests: the client session and stream over real loopback sockets (scripted servers)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from kakitome.config import TLSSettings
from kakitome.smtp.client import MailSpec, RcptSpec, SMTPClientSession, Timeouts
from kakitome.smtp.exceptions import SMTPProtocolError, SMTPTimeout
from kakitome.smtp.stream import SMTPStream
from kakitome.testing import CertKind, TestCA
from kakitome.tls.contexts import ClientContexts, ContextKind

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    """``port = await serve(handler)``: a one-off asyncio server on 127.0.0.1."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield start
    for server in servers:
        server.close()


async def _session(port: int, command_timeout: float = 5.0) -> SMTPClientSession:
    stream = await SMTPStream.connect("127.0.0.1", port, time_limit=5)
    return SMTPClientSession(stream, helo_name="client.test", timeouts=Timeouts(command_timeout))


async def test_bytes_after_starttls_220_are_discarded(
    serve: Callable[[Handler], Awaitable[int]], ca: TestCA
) -> None:
    """T3: a reply injected behind the 220 to STARTTLS is thrown away, not read as a
    reply inside TLS; capabilities come from the EHLO inside TLS only (T1)."""
    cert = ca.issue(["mx.inject.test"], CertKind.VALID)
    server_ctx = cert.server_context()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mx.inject.test ESMTP\r\n")
        await reader.readline()  # EHLO
        writer.write(b"250-mx.inject.test\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n")
        await reader.readline()  # STARTTLS
        writer.write(b"220 go ahead\r\n250-injected\r\n250 INJECTED\r\n")
        await writer.drain()
        await writer.start_tls(server_ctx)
        await reader.readline()  # EHLO again
        writer.write(b"250-mx.inject.test\r\n250 PIPELINING\r\n")
        await reader.readline()  # QUIT
        writer.write(b"221 bye\r\n")
        await writer.drain()
        writer.close()

    port = await serve(handler)
    session = await _session(port)
    await session.greet()
    await session.ehlo()
    assert session.supports("AUTH")
    contexts = ClientContexts(TLSSettings(ca_file=str(ca.ca_file), ca_file_only=True))
    reply, info = await session.starttls(
        contexts.get(ContextKind.MANDATORY_VERIFYING), "mx.inject.test"
    )
    assert reply.code == 220 and info is not None and info.chain_verified
    assert session.stream.discarded_before_tls > 0
    assert session.ehlo_reply is not None and session.ehlo_reply.code == 250
    assert set(session.capabilities) == {"PIPELINING"}
    await session.quit()


async def test_helo_fallback_and_lockstep_transaction(
    serve: Callable[[Handler], Awaitable[int]],
) -> None:
    """EHLO refused with 5xx falls back to HELO; without PIPELINING commands go one by
    one; content is dot-stuffed with CRLF line ends (T10)."""
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 old.test\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            received.append(line)
            if verb == b"EHLO":
                writer.write(b"502 5.5.1 what\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go\r\n")
                body = await reader.readuntil(b"\r\n.\r\n")
                received.append(body)
                writer.write(b"250 2.0.0 queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 ok\r\n")
        writer.close()

    port = await serve(handler)
    session = await _session(port)
    await session.greet()
    reply = await session.ehlo()
    assert reply.code == 250 and not session.esmtp
    result = await session.send_mail(
        MailSpec("a@x.test", size=10), [RcptSpec("b@y.test")], b".dot\nline\r\n"
    )
    assert result.final[0].code == 250 and result.final[0].enhanced == "2.0.0"
    await session.quit()
    assert received[1].startswith(b"HELO")
    assert received[2] == b"MAIL FROM:<a@x.test>\r\n"  # no SIZE: not advertised
    assert received[5] == b"..dot\r\nline\r\n.\r\n"


async def test_reply_timeout_and_garbage(serve: Callable[[Handler], Awaitable[int]]) -> None:
    """A silent server times out; a server speaking garbage is a protocol error."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n")
        await asyncio.sleep(1)

    session = await _session(await serve(silent), command_timeout=0.2)
    with pytest.raises(SMTPTimeout):
        await session.greet()
    session.stream.abort()
    session = await _session(await serve(garbage))
    with pytest.raises(SMTPProtocolError):
        await session.greet()
    session.stream.abort()
