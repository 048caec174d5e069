"""A site's connection limit holds across worker processes (the sink counts)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kakitome.testing import LocalInternet, Peer, PeerBehaviour

from .helpers import inject, wait_for, worker_env
from .test_many_workers import _start_workers

pytestmark = pytest.mark.heavy

TOTAL = 1_000
LIMIT = 3


@pytest.fixture
def one_site(world: LocalInternet) -> Iterator[tuple[list[str], Peer, str]]:
    """Six domains whose MX hosts are two names of one provider (one site), one peer."""
    peer = world.add_peer(behaviour=PeerBehaviour(transcript=False, delay=0.002))
    provider = world.unique_domain("provider")
    hosts = [f"mx{i}.{provider}" for i in (1, 2)]
    for host in hosts:
        world.dns.add_address(host, peer.ip)
    peer.add_names(*hosts)
    domains = []
    for i in range(6):
        name = world.unique_domain("hosted")
        world.add_domain(name, mx=[(10, hosts[i % 2])])
        domains.append(name)
    yield domains, peer, provider
    for name in [*domains, provider]:
        world.remove_domain(name)
    world.remove_peer(peer)


@pytest.mark.slow
@pytest.mark.postgres
def test_site_connection_limit_across_workers(
    world: LocalInternet, pg_url: str, one_site: tuple[list[str], Peer, str], tmp_path: Path
) -> None:
    """T40: with max_connections=3 for the site, two workers never hold more than 3
    connections to its MX at once, though 6 domains x 8 per-domain connections could."""
    domains, peer, provider = one_site
    asyncio.run(inject(pg_url, TOTAL, domains))
    env = worker_env(
        world.env(),
        pg_url,
        # The provider's two MX names are one site only when the provider is known.
        KAKITOME_SHAPING__PROVIDERS=json.dumps({provider: provider}),
        KAKITOME_SHAPING__SITES=json.dumps(
            {provider: {"max_connections": LIMIT, "messages_per_connection": 100_000}}
        ),
        KAKITOME_DELIVERY__MESSAGES_PER_CONNECTION="100000",
    )
    workers = _start_workers(env, tmp_path, count=2)
    try:
        counts = wait_for([peer], TOTAL, timeout=300)
        assert len(counts) == TOTAL, workers[0].log()[-3000:]
    finally:
        for worker in workers:
            worker.stop()
    stats = peer.stats()
    most = stats.max_concurrent_connections
    print(f"\n[site-limit] {stats.connections} connections, at most {most} at once")
    assert 1 <= stats.max_concurrent_connections <= LIMIT
