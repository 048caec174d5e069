"""Fixtures of the scale tests: an empty database on the shared PostgreSQL, a private
PostgreSQL that a test may stop, and fresh peers/domains in the local internet."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from kakitome.testing import LocalInternet, Peer, PeerBehaviour

from ..fixtures_db import _truncate
from .helpers import PrivatePostgres


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The session's migrated database on the shared server, emptied."""
    _truncate(pg_database)
    return pg_database


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of this test alone (skipped without root)."""
    pg = PrivatePostgres()
    try:
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def sink(world: LocalInternet) -> Iterator[Callable[[int], tuple[list[str], list[Peer]]]]:
    """``sink(n)``: n domains spread over two fast peers that keep bodies, no transcripts."""
    made: list[tuple[list[str], list[Peer]]] = []

    def make(n: int) -> tuple[list[str], list[Peer]]:
        behaviour = PeerBehaviour(transcript=False)
        peers = [world.add_peer(behaviour=behaviour) for _ in range(2)]
        domains = []
        for i in range(n):
            name = world.unique_domain("scale")
            world.add_domain(name, mx=[(10, peers[i % 2])])
            domains.append(name)
        made.append((domains, peers))
        return domains, peers

    yield make
    for domains, peers in made:
        for name in domains:
            world.remove_domain(name)
        for peer in peers:
            world.remove_peer(peer)
