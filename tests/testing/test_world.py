"""LocalInternet as a whole: life cycle, use from other loops and processes, public API."""

from __future__ import annotations

import asyncio
import inspect
import socket
import subprocess
import sys

import pytest

import kakitome.testing
from kakitome.testing import LocalInternet, TestCA
from tests.fixtures_world import MakeDomain


def test_all_lists_the_public_names() -> None:
    """__all__ names exactly the public names the package exports."""
    public = {
        name
        for name, value in vars(kakitome.testing).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert set(kakitome.testing.__all__) == public


def test_ca_file_holds_only_the_test_ca(ca: TestCA) -> None:
    """The CA file is one PEM certificate, and the client context trusts exactly that CA."""
    pem = ca.ca_file.read_bytes()
    assert pem.count(b"BEGIN CERTIFICATE") == 1
    assert len(ca.client_context().get_ca_certs()) == 1


async def test_peer_usable_from_another_event_loop(make_domain: MakeDomain) -> None:
    """A coroutine on the test's own loop talks SMTP to a peer served by the world's thread."""
    domain, peer = make_domain()
    reader, writer = await asyncio.open_connection(peer.ip, peer.port)
    assert (await reader.readline()).startswith(b"220")
    writer.write(
        b"HELO c.test\r\nMAIL FROM:<a@src.test>\r\n"
        + f"RCPT TO:<b@{domain.name}>\r\n".encode()
        + b"DATA\r\n"
    )
    for expected in (b"250", b"250", b"250", b"354"):
        assert (await reader.readline()).startswith(expected)
    writer.write(b"Subject: async\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    assert (await reader.readline()).startswith(b"250")
    writer.close()
    async with asyncio.timeout(5):
        messages = await peer.await_messages(1)
    assert messages[0].data == b"Subject: async\r\n\r\nhi\r\n"


def test_subprocess_resolves_through_env(make_domain: MakeDomain, world: LocalInternet) -> None:
    """A child process given env() finds the domain's MX and its address in the world's DNS."""
    domain, peer = make_domain()
    script = (
        "import os, dns.resolver\n"
        "host, port = os.environ['KAKITOME_DNS__NAMESERVERS'].rsplit(':', 1)\n"
        "r = dns.resolver.Resolver(configure=False); r.nameservers = [host]; r.port = int(port)\n"
        f"mx = r.resolve('{domain.name}', 'MX')[0].exchange\n"
        "print(mx, r.resolve(mx, 'A')[0].address)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env=world.env(), capture_output=True, text=True, timeout=30
    )
    assert out.stdout.split() == [domain.mx[0][1] + ".", peer.ip], out.stderr


def test_close_stops_everything() -> None:
    """After close() the peers and the DNS server no longer listen."""
    with LocalInternet() as internet:
        peer = internet.add_peer()
        address = (peer.ip, peer.port)
        socket.create_connection(address, timeout=2).close()
        dns_port = internet.dns.port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=2)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", dns_port), timeout=2)


def test_peers_get_distinct_addresses_and_share_the_port(world: LocalInternet) -> None:
    """Each peer has its own 127.0.0.x (never .1) and all use the world's SMTP port."""
    peers = [world.add_peer() for _ in range(3)]
    try:
        assert len({p.ip for p in peers}) == 3
        assert all(p.ip != "127.0.0.1" and p.ip.startswith("127.") for p in peers)
        assert {p.port for p in peers} == {world.port}
    finally:
        for p in peers:
            world.remove_peer(p)
