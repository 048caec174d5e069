"""Kakitome delivers to a real Postfix (Debian's package) over STARTTLS, and the TLS receipt
agrees with what Postfix itself logged about the same session."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kakitome.delivery.agent import DeliveryAgent
from kakitome.delivery.pool import ConnectionPool
from kakitome.dns.resolver import Resolver
from kakitome.injection import Injector
from kakitome.queue.scheduler import Worker
from kakitome.store.database import Database
from kakitome.testing import LocalInternet
from kakitome.testing.postfix import PostfixInstance, make_instance_root, receiving_instance
from tests.fixtures_db import queue_store

pytestmark = pytest.mark.postfix

# Each instance gets its own address: a stopped Postfix may hold its port for a moment.
_POSTFIX_IPS = itertools.cycle(f"127.0.0.{n}" for n in range(240, 248))


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture
def postfix_mx(
    postfix_bin: str, world: LocalInternet
) -> Iterator[tuple[str, PostfixInstance, Path]]:
    """A receiving Postfix on 127.0.0.24x at the world's SMTP port, its MX name in the world's
    DNS and its certificate from the world's CA."""
    domain = world.unique_domain("postfix")
    mx_name = f"mx.{domain}"
    postfix_ip = next(_POSTFIX_IPS)
    assert _port_is_free(postfix_ip, world.port)
    root = make_instance_root()
    cert = world.ca.issue([mx_name])
    instance = receiving_instance(
        root / "mx",
        listen=(postfix_ip, world.port),
        cert_file=cert.cert_file,
        key_file=cert.key_file,
        domains=[domain],
        mailbox_dir=root / "mail" / "inbox",
        hostname=mx_name,
    )
    world.dns.add_a(mx_name, postfix_ip)
    world.dns.add_mx(domain, 10, mx_name)
    try:
        with instance:
            yield domain, instance, root / "mail" / "inbox" / "new"
    finally:
        world.remove_domain(domain)
        shutil.rmtree(root, ignore_errors=True)


async def test_receipt_matches_postfix_log(
    world: LocalInternet, store: Database, postfix_mx: tuple[str, PostfixInstance, Path]
) -> None:
    """T8: the receipt's TLS version and cipher are what Postfix logged for the session."""
    domain, instance, mailbox = postfix_mx
    settings = world.settings({"KAKITOME_DELIVERY__HELO_HOSTNAME": "out.kakitome.test"})
    pool = ConnectionPool(settings)
    agent = DeliveryAgent(settings, Resolver(settings), pool)
    injector = Injector(queue_store(store), settings)
    worker = Worker(settings, queue_store(store), agent.deliver, injector=injector)
    try:
        message_id = await injector.submit_fields(
            from_="news@sender.test",
            to=[f"yamada@{domain}"],
            subject="配信テスト",
            text="Postfix との相互運用テストです。\n",
        )
        assert await worker.run_once() == 1
    finally:
        await pool.aclose()
    row = (await queue_store(store).receipt(message_id)).recipients[0]
    assert row.status == "delivered", row.reply
    assert row.tls is not None and row.tls["used"] is True
    assert row.tls["verification"] == "verified"
    assert row.mx is not None and row.mx["host"] == f"mx.{domain}"
    # Postfix logs the session when the handshake completes; give the log a moment.
    await asyncio.to_thread(_wait_for, lambda: bool(instance.tls_sessions("from")))
    sessions = instance.tls_sessions("from")
    assert len(sessions) == 1, instance.maillog_tail()
    assert sessions[0].protocol == row.tls["version"]
    assert sessions[0].cipher == row.tls["cipher"]
    # And the message really arrived, with Postfix's Received header saying ESMTPS.
    await asyncio.to_thread(_wait_for, lambda: mailbox.exists() and any(mailbox.iterdir()))
    files = list(mailbox.iterdir())
    assert len(files) == 1
    received = files[0].read_bytes()
    assert b"with ESMTPS" in received
    assert "配信テスト".encode() not in received  # the subject travels as an encoded word
