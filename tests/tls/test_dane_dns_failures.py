"""Tests: TLSA lookups that fail (T15) - timeouts, SERVFAIL, bogus - through the world's
DNS server, the real resolver and the delivery agent against loopback peers."""

from __future__ import annotations

import time
from collections.abc import Callable

from kakitome.delivery.types import Outcome
from kakitome.testing import LocalInternet, Peer
from kakitome.tls.policy import PolicySource
from tests.delivery.conftest import batch
from tests.fixtures_world import MakeDomain
from tests.tls.conftest import TLSAgentFactory, peer_tlsa, publish_dane

DNS_TIMEOUT = 1.0
# The lookup gives up after DNS_TIMEOUT; the rest is slack for a loaded machine.
BOUND = DNS_TIMEOUT + 4.0


async def test_tlsa_timeout_defers_without_sending(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T15: a TLSA lookup that times out (the server never answers for that name) means
    the MX is not used: deferred 4.7.5 as for SERVFAIL, no connection at all (so nothing
    in plaintext), within a bounded time."""
    domain, peer = make_domain()
    name = publish_dane(world, domain, [(3, 1, 1, peer_tlsa(peer))])
    world.dns.set_hang(name)
    agent = tls_agent(DNS__TIMEOUT=str(DNS_TIMEOUT))
    started = time.monotonic()
    [result] = await agent.deliver(batch(domain.name))
    elapsed = time.monotonic() - started
    assert result.outcome is Outcome.DEFERRED and result.reply.enhanced == "4.7.5"
    assert "TLSA" in result.reply.text
    assert peer.stats().connections == 0
    assert peer.messages() == []
    assert result.tls is not None and result.tls.tlsrpt_result == "dnssec-invalid"
    assert elapsed < BOUND, elapsed
    assert any(q.name == name for q in world.dns.queries())


async def test_tlsa_timeout_on_one_mx_uses_the_other(
    world: LocalInternet,
    make_domain: MakeDomain,
    fresh_peer: Callable[..., Peer],
    tls_agent: TLSAgentFactory,
) -> None:
    """T15: only the MX whose TLSA lookup timed out is skipped; a second MX with DANE
    that works gets the message, and the first never sees a connection."""
    domain, first = make_domain()
    second = fresh_peer()
    backup = f"mx2.{domain.name}"
    world.dns.add_mx(domain.name, 20, backup)
    world.dns.add_address(backup, second.ip)
    second.add_names(backup)
    name = publish_dane(world, domain, [(3, 1, 1, peer_tlsa(first))])
    world.dns.set_hang(name)
    world.dns.set_ad(backup, True)
    world.dns.add_tlsa(f"_25._tcp.{backup}", 3, 1, 1, peer_tlsa(second), ttl=0)
    world.dns.set_ad(f"_25._tcp.{backup}", True)
    [result] = await tls_agent(DNS__TIMEOUT=str(DNS_TIMEOUT)).deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None and result.tls.policy_source is PolicySource.DANE
    assert first.stats().connections == 0
    assert len(second.messages()) == 1


async def test_tlsa_servfail_for_bogus_data_defers(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T15: bogus TLSA data, as a validating resolver reports it (SERVFAIL; the signed
    case runs against unbound in test_dane_unbound.py), with a record that would match:
    still not used, deferred 4.7.5, no connection."""
    domain, peer = make_domain()
    name = publish_dane(world, domain, [(3, 1, 1, peer_tlsa(peer))])
    world.dns.set_rcode(name, "SERVFAIL")
    [result] = await tls_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DEFERRED and result.reply.enhanced == "4.7.5"
    assert peer.stats().connections == 0
