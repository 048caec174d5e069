"""Fixtures: the local internet (``kakitome.testing``).

- ``world``: one ``LocalInternet`` for the whole session (DNS, CA, MX peers on loopback);
- ``ca``: its test CA;
- ``make_domain``: a fresh, unique mail domain per call, with its own fresh peer (so the
  peer's records and fault counters belong to the test alone);
- ``fresh_peer``: a fresh peer with a chosen behaviour.

Peers and domains made by these factories are removed when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import pytest

from kakitome.testing import Domain, LocalInternet, Peer, PeerBehaviour, TestCA


class MakeDomain(Protocol):
    def __call__(
        self, behaviour: PeerBehaviour | None = None, *, prefix: str = "d"
    ) -> tuple[Domain, Peer]: ...


@pytest.fixture(scope="session")
def world() -> Iterator[LocalInternet]:
    """The session's local internet."""
    with LocalInternet() as internet:
        yield internet


@pytest.fixture(scope="session")
def ca(world: LocalInternet) -> TestCA:
    """The world's test CA (its PEM is ``ca.ca_file``)."""
    return world.ca


@pytest.fixture
def fresh_peer(world: LocalInternet) -> Iterator[Callable[..., Peer]]:
    """``fresh_peer(behaviour)``: a new peer for this test alone."""
    made: list[Peer] = []

    def make(behaviour: PeerBehaviour | None = None) -> Peer:
        peer = world.add_peer(behaviour=behaviour)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        world.remove_peer(peer)


@pytest.fixture
def make_domain(world: LocalInternet) -> Iterator[MakeDomain]:
    """``make_domain(behaviour)``: a unique domain whose single MX is a fresh peer."""
    made: list[tuple[Domain, Peer]] = []

    def make(behaviour: PeerBehaviour | None = None, *, prefix: str = "d") -> tuple[Domain, Peer]:
        peer = world.add_peer(behaviour=behaviour)
        domain = world.add_domain(world.unique_domain(prefix), mx=[(10, peer)])
        made.append((domain, peer))
        return domain, peer

    yield make
    for domain, peer in made:
        world.remove_domain(domain.name)
        world.remove_peer(peer)


def dkimpy_dns(world: LocalInternet) -> Callable[..., bytes | None]:
    """dkimpy's TXT look-up (``dnsfunc``), answered by the world's DNS server."""
    import dns.exception
    import dns.resolver

    host, _, port = world.nameserver.rpartition(":")
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host.strip("[]")]
    resolver.port = int(port)

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
        except dns.exception.DNSException:
            return None
        return b"".join(answer[0].strings)

    return lookup
