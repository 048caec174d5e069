"""STARTTLS injection, STARTTLS/AUTH ordering, and SMTP smuggling on the listeners."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kakitome.config import load_settings
from kakitome.inbound.handler import has_bare_cr_or_lf
from kakitome.inbound.server import InboundService
from kakitome.services import open_services
from kakitome.store.database import Database
from kakitome.testing import LocalInternet
from tests.inbound.conftest import (
    HOSTNAME,
    INBOUND_DOMAIN,
    RawClient,
    StartInbound,
    free_port,
)


async def test_plaintext_pipelined_with_starttls_is_not_executed(
    start_inbound: StartInbound,
) -> None:
    """`STARTTLS\\r\\nHELP\\r\\n` in one write: HELP is never answered inside TLS (T2).

    HELP's reply (the command list) is unlike NOOP's, so the first reply inside TLS tells
    which command it answers; the EHLO after it checks that no reply is left over."""
    running = await start_inbound(INBOUND__CHECK_AUTHENTICATION="false")
    client = await RawClient.connect(running.mx)
    await client.cmd("EHLO client.test")
    await client.send(b"STARTTLS\r\nHELP\r\n")
    assert (await client.reply()).startswith("220 2.0.0")
    await client.starttls()
    # The first reply inside TLS must answer our NOOP, not the injected HELP.
    first = await client.cmd("NOOP")
    assert first == "250 2.0.0 OK\r\n", first
    reply = await client.cmd("EHLO client.test")
    assert reply.startswith(f"250-{HOSTNAME}\r\n"), reply
    assert "STARTTLS" not in reply  # T4: not advertised inside TLS
    assert "AUTH" not in reply  # the MX takes no AUTH
    assert (await client.cmd("STARTTLS")).startswith("503 5.5.1")  # T4: refused inside TLS
    await client.close()


async def test_injected_command_answer_count(start_inbound: StartInbound) -> None:
    """After the injection, exactly one reply per command sent inside TLS, and each the
    reply to that command (T2)."""
    running = await start_inbound(INBOUND__CHECK_AUTHENTICATION="false")
    client = await RawClient.connect(running.mx)
    await client.cmd("EHLO client.test")
    await client.send(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n")
    assert (await client.reply()).startswith("220 2.0.0")
    await client.starttls()
    # Had the injected MAIL run inside TLS (a new session, no EHLO yet), its 503 5.5.1
    # "send HELO first" would be the first reply here, and every reply after it one late.
    ehlo = await client.cmd("EHLO client.test")
    assert ehlo.startswith(f"250-{HOSTNAME}\r\n"), ehlo
    mail = await client.cmd("MAIL FROM:<a@b.test>")
    assert mail.startswith("250 2.1.0"), mail
    noop = await client.cmd("NOOP")
    assert noop == "250 2.0.0 OK\r\n", noop
    await client.close()


async def test_starttls_with_argument_gets_501(start_inbound: StartInbound) -> None:
    """`STARTTLS foo` is a syntax error (T4)."""
    running = await start_inbound()
    client = await RawClient.connect(running.mx)
    await client.cmd("EHLO client.test")
    assert (await client.cmd("STARTTLS foo")).startswith("501 5.5.4")
    await client.close()


async def test_mx_auth_refused_before_and_after_tls(start_inbound: StartInbound) -> None:
    """Port 25: AUTH before TLS is 530 5.7.0 (T5); after TLS it is not offered at all."""
    running = await start_inbound()
    client = await RawClient.connect(running.mx)
    assert "AUTH" not in await client.cmd("EHLO client.test")
    assert (await client.cmd("AUTH PLAIN AGEAYg==")).startswith("530 5.7.0")
    await client.cmd("STARTTLS")
    await client.starttls()
    await client.cmd("EHLO client.test")
    assert (await client.cmd("AUTH PLAIN AGEAYg==")).startswith("503 5.5.1")
    await client.close()


SMUGGLED = b"MAIL FROM:<admin@victim.test>\r\nRCPT TO:<info@" + INBOUND_DOMAIN.encode() + b">\r\n"


async def _smuggle(running_port: int, ending: bytes) -> tuple[str, str]:
    client = await RawClient.connect(running_port)
    await client.cmd("EHLO client.test")
    await client.cmd("MAIL FROM:<a@sender.test>")
    await client.cmd(f"RCPT TO:<info@{INBOUND_DOMAIN}>")
    assert (await client.cmd("DATA")).startswith("354")
    body = b"Subject: x\r\n\r\nhello" + ending + SMUGGLED + b"DATA\r\n\r\nsmuggled\r\n.\r\n"
    await client.send(body)
    first = await client.reply()
    after = await client.cmd("NOOP")
    await client.close()
    return first, after


async def test_smuggling_variants_are_refused(start_inbound: StartInbound) -> None:
    """`\\n.\\n`, `\\r.\\r`, `\\n.\\r\\n`, `\\r\\n.\\n`, `\\r.\\r\\n` never end DATA; the
    message carrying them is refused whole and nothing is stored (T10)."""
    running = await start_inbound(INBOUND__CHECK_AUTHENTICATION="false")
    for ending in (b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"):
        first, after = await _smuggle(running.mx, ending)
        assert first.startswith("550 5.5.2"), (ending, first)
        assert after.startswith("250"), (ending, after)
    assert await running.inbound.count_inbound() == 0


async def test_only_crlf_dot_crlf_ends_data(start_inbound: StartInbound) -> None:
    """A clean message ends at <CRLF>.<CRLF> and is stored with its dots unstuffed (T10)."""
    running = await start_inbound(INBOUND__CHECK_AUTHENTICATION="false")
    client = await RawClient.connect(running.mx)
    await client.cmd("EHLO client.test")
    await client.cmd("MAIL FROM:<a@sender.test>")
    await client.cmd(f"RCPT TO:<info@{INBOUND_DOMAIN}>")
    await client.cmd("DATA")
    await client.send(b"Subject: x\r\n\r\n..leading dot\r\n.\r\n")
    assert (await client.reply()).startswith("250 2.0.0")
    await client.close()
    (row,) = await running.inbound.list_inbound()
    assert row.content.endswith(b"\r\n.leading dot\r\n")


async def test_limits_recipients_commands_connections(start_inbound: StartInbound) -> None:
    """Recipients per transaction (452 4.5.3), commands per connection and connections per
    client address (421 4.7.0) are bounded."""
    running = await start_inbound(
        INBOUND__MAX_RECIPIENTS="2",
        INBOUND__MAX_COMMANDS="10",
        INBOUND__MAX_CONNECTIONS_PER_IP="2",
    )
    client = await RawClient.connect(running.mx)
    await client.cmd("EHLO client.test")
    await client.cmd("MAIL FROM:<a@sender.test>")
    for _ in range(2):
        assert (await client.cmd(f"RCPT TO:<info@{INBOUND_DOMAIN}>")).startswith("250")
    assert (await client.cmd(f"RCPT TO:<info@{INBOUND_DOMAIN}>")).startswith("452 4.5.3")
    second = await RawClient.connect(running.mx)
    reader, writer = await asyncio.open_connection("127.0.0.1", running.mx)
    assert (await reader.readline()).startswith(b"421 4.7.0")
    writer.close()
    for _ in range(5):
        await client.cmd("NOOP")
    assert (await client.cmd("NOOP")).startswith("421 4.7.0")
    await client.close()
    await second.close()


@given(st.binary(max_size=200))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_bare_cr_lf_detector_agrees_with_crlf_pairs(data: bytes) -> None:
    """Fuzz: the T10 detector flags data exactly when a CR or LF is outside a CRLF pair."""
    stripped = data.replace(b"\r\n", b"")
    assert has_bare_cr_or_lf(data) == (b"\r" in stripped or b"\n" in stripped)


_LINE = st.lists(
    st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b" ", b"MAIL FROM:<x@y>", b"DATA"]),
    max_size=12,
).map(b"".join)


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory, world: LocalInternet) -> Iterator[int]:
    """One MX on a loop thread for the whole fuzz run; yields its port."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    tmp = tmp_path_factory.mktemp("fuzz")
    issued = world.ca.issue(["mx.kakitome.test"])
    port = free_port()
    env = {
        **world.env(),
        "KAKITOME_DATABASE__URL": f"sqlite:///{tmp / 'k.db'}",
        "KAKITOME_PATHS__DATA_DIR": str(tmp),
        "KAKITOME_INBOUND__BIND_HOST": "127.0.0.1",
        "KAKITOME_INBOUND__MX_PORT": str(port),
        "KAKITOME_INBOUND__SUBMISSION_PORT": "0",
        "KAKITOME_INBOUND__SUBMISSIONS_PORT": "0",
        "KAKITOME_INBOUND__CERT_FILE": str(issued.cert_file),
        "KAKITOME_INBOUND__KEY_FILE": str(issued.key_file),
        "KAKITOME_INBOUND__DOMAINS": INBOUND_DOMAIN,
        "KAKITOME_INBOUND__CHECK_AUTHENTICATION": "false",
    }

    async def start() -> tuple[Database, InboundService]:
        settings = load_settings(environ=env)
        store = await Database.open(settings.database.url)
        service = InboundService(await open_services(settings, store=store))
        await service.start()
        return store, service

    store, service = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    FUZZ_STATE["inbound"] = service.inbound_store
    FUZZ_STATE["loop"] = loop
    yield port

    async def stop() -> None:
        await service.stop()
        await store.close()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


FUZZ_STATE: dict[str, Any] = {}


def _session(port: int, payload: bytes) -> list[bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        file = sock.makefile("rb")

        def reply() -> bytes:
            line = file.readline()
            while line[3:4] == b"-":
                line = file.readline()
            return line

        reply()
        for command in (
            b"EHLO client.test",
            b"MAIL FROM:<a@sender.test>",
            b"RCPT TO:<info@" + INBOUND_DOMAIN.encode() + b">",
            b"DATA",
        ):
            sock.sendall(command + b"\r\n")
            reply()
        sock.sendall(payload + b"\r\n.\r\nQUIT\r\n")
        replies = []
        try:
            while True:
                line = reply()
                if not line:
                    break
                replies.append(line)
        except OSError:
            pass
        return replies


@given(st.lists(_LINE, min_size=1, max_size=4))
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_fuzzed_data_never_smuggles_a_second_message(fuzz_target: int, chunks: list[bytes]) -> None:
    """Fuzz DATA with CR/LF/dot/command mixes: one reply per DATA, a 250 only for data
    without bare CR or LF, and never a second transaction from inside the data (T10)."""
    # A client dot-stuffs lines that start with a dot (RFC 5321 4.5.2); bare CR/LF dots are
    # the attack and are left alone.
    payload = b"".join(chunks).replace(b"\r\n.", b"\r\n..")
    if payload.startswith(b"."):
        payload = b"." + payload
    loop = FUZZ_STATE["loop"]
    inbound = FUZZ_STATE["inbound"]
    before = asyncio.run_coroutine_threadsafe(inbound.count_inbound(), loop).result(10)
    replies = _session(fuzz_target, payload)
    after = asyncio.run_coroutine_threadsafe(inbound.count_inbound(), loop).result(10)
    data_replies = [r for r in replies if not r.startswith(b"221")]
    assert len(data_replies) == 1, replies
    clean = not has_bare_cr_or_lf(payload + b"\r\n")
    if clean:
        assert data_replies[0].startswith(b"250"), (payload, replies)
        assert after == before + 1
    else:
        assert data_replies[0].startswith(b"550 5.5.2"), (payload, replies)
        assert after == before
