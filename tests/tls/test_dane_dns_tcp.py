"""Tests: DANE with TLSA answers too large for UDP (T12), through the world's DNS server,
the real resolver and the delivery agent against a loopback peer."""

from __future__ import annotations

import os

from kakitome.delivery.types import Outcome
from kakitome.testing import LocalInternet
from kakitome.tls.policy import PolicySource, TLSLevel
from kakitome.tls.receipt import PeerVerification
from tests.delivery.conftest import batch
from tests.fixtures_world import MakeDomain
from tests.tls.conftest import TLSAgentFactory, peer_tlsa, publish_dane

# 19 decoys and the real record: about 940 bytes of answer, well over the 512 bytes a UDP
# answer without EDNS may carry (and within dane.MAX_TLSA).
DECOYS = 19


async def test_large_tlsa_rrset_is_fetched_over_tcp(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T12: a TLSA RRset too large for UDP comes back truncated (TC=1); the resolver asks
    again over TCP and DANE uses the whole set: the one matching record, published last,
    authenticates the peer."""
    domain, peer = make_domain()
    records = [(3, 1, 1, os.urandom(32)) for _ in range(DECOYS)]
    name = publish_dane(world, domain, [*records, (3, 1, 1, peer_tlsa(peer))])
    world.dns.clear_queries()
    [result] = await tls_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None
    assert result.tls.level is TLSLevel.DANE and result.tls.policy_source is PolicySource.DANE
    assert result.tls.verification is PeerVerification.VERIFIED
    transports = [q.transport for q in world.dns.queries() if q.name == name]
    assert transports[:2] == ["udp", "tcp"], transports
    [message] = peer.messages()
    assert message.tls and message.sni == domain.mx[0][1]


async def test_truncated_tlsa_answer_without_tcp_defers(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T12, T15: a truncated UDP answer is never taken as "no TLSA": when TCP does not
    answer either, the TLSA lookup has failed and the MX is not used (4.7.5)."""
    domain, peer = make_domain()
    name = publish_dane(world, domain, [(3, 1, 1, peer_tlsa(peer))])
    world.dns.set_truncate(name)
    world.dns.set_hang(name, transport="tcp")
    [result] = await tls_agent(DNS__TIMEOUT="1").deliver(batch(domain.name))
    assert result.outcome is Outcome.DEFERRED and result.reply.enhanced == "4.7.5"
    assert peer.stats().connections == 0
    assert {q.transport for q in world.dns.queries() if q.name == name} == {"udp", "tcp"}
