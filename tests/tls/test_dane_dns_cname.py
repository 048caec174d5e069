"""Tests: MX host names that are CNAMEs (T18, RFC 7672 §2.2.2), through the world's DNS
server (AD bit per name), the real resolver and the delivery agent against loopback peers.

The chain in every test: ``mx.<domain>`` (the MX host name) -> optionally
``mid.<domain>`` -> ``real.<domain>`` (the expanded name, with the peer's address).
"""

from __future__ import annotations

import os

from kakitome.delivery.types import Outcome
from kakitome.testing import Domain, LocalInternet, Peer
from kakitome.tls.policy import PolicySource, TLSLevel
from kakitome.tls.receipt import PeerVerification
from tests.delivery.conftest import batch
from tests.fixtures_world import MakeDomain
from tests.tls.conftest import TLSAgentFactory, peer_tlsa


def _alias(
    world: LocalInternet, domain: Domain, peer: Peer, *, via_mid: bool
) -> tuple[str, str, str]:
    """Make the MX host a CNAME (through ``mid`` when asked) to ``real``; every name is
    validated (AD). Returns (mx host, middle name or "", expanded name)."""
    mx = domain.mx[0][1]
    target = f"real.{domain.name}"
    mid = f"mid.{domain.name}" if via_mid else ""
    world.dns.remove(mx, "A")
    world.dns.remove(mx, "AAAA")
    world.dns.add_cname(mx, mid or target)
    if mid:
        world.dns.add_cname(mid, target)
    world.dns.add_address(target, peer.ip)
    peer.add_names(target)
    for name in (domain.name, mx, mid, target):
        if name:
            world.dns.set_ad(name, True)
    return mx, mid, target


def _tlsa(world: LocalInternet, host: str, data: bytes, *, secure: bool = True) -> None:
    name = f"_25._tcp.{host}"
    world.dns.add_tlsa(name, 3, 1, 1, data, ttl=0)
    world.dns.set_ad(name, secure)


async def test_secure_cname_prefers_the_expanded_name(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T18: with a validated chain, TLSA at the expanded name is used first (a wrong
    record at the original name is not even consulted); the expanded name is the SNI."""
    domain, peer = make_domain()
    mx, _, target = _alias(world, domain, peer, via_mid=True)
    _tlsa(world, target, peer_tlsa(peer))
    _tlsa(world, mx, os.urandom(32))
    world.dns.clear_queries()
    [result] = await tls_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None and result.tls.policy_source is PolicySource.DANE
    assert peer.messages()[0].sni == target
    assert not any(q.name == f"_25._tcp.{mx}" for q in world.dns.queries())


async def test_secure_cname_without_tlsa_at_target_uses_the_original_name(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T18: securely no TLSA at the expanded name: TLSA is looked up at the original
    name, which then is the TLSA base domain and the SNI."""
    domain, peer = make_domain()
    mx, _, target = _alias(world, domain, peer, via_mid=False)
    world.dns.set_ad(f"_25._tcp.{target}", True)  # NXDOMAIN, validated
    _tlsa(world, mx, peer_tlsa(peer))
    [result] = await tls_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None
    assert result.tls.level is TLSLevel.DANE and result.tls.policy_source is PolicySource.DANE
    assert result.tls.verification is PeerVerification.VERIFIED
    assert peer.messages()[0].sni == mx


async def test_insecure_link_in_chain_uses_only_the_original_name(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T18: the MX host's own CNAME and the final addresses are validated but a CNAME in
    between is not: the expanded name is not a TLSA base domain (its wrong TLSA record
    is ignored); TLSA at the original name applies, and the original name is the SNI."""
    domain, peer = make_domain()
    mx, mid, target = _alias(world, domain, peer, via_mid=True)
    world.dns.set_ad(mid, False)
    _tlsa(world, target, os.urandom(32))
    _tlsa(world, mx, peer_tlsa(peer))
    world.dns.clear_queries()
    [result] = await tls_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None and result.tls.policy_source is PolicySource.DANE
    assert result.tls.verification is PeerVerification.VERIFIED
    assert peer.messages()[0].sni == mx
    assert not any(q.name == f"_25._tcp.{target}" for q in world.dns.queries())


async def test_insecure_link_in_chain_with_wrong_tlsa_at_original_defers(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T18, T13: in the same chain a non-matching TLSA record at the original name is
    binding: the MX is skipped (4.7.5), never used without DANE."""
    domain, peer = make_domain()
    mx, mid, target = _alias(world, domain, peer, via_mid=True)
    world.dns.set_ad(mid, False)
    _tlsa(world, target, peer_tlsa(peer))
    _tlsa(world, mx, os.urandom(32))
    [result] = await tls_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DEFERRED and result.reply.enhanced == "4.7.5"
    assert peer.messages() == []


async def test_insecure_cname_at_the_mx_host_means_no_dane(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T18, T12: the MX host's own CNAME is not validated: DANE does not apply to that
    host at all, even with validated (and here wrong) TLSA at both names: delivered at
    the default level."""
    domain, peer = make_domain()
    mx, _, target = _alias(world, domain, peer, via_mid=False)
    world.dns.set_ad(mx, False)
    _tlsa(world, target, os.urandom(32))
    _tlsa(world, mx, os.urandom(32))
    [result] = await tls_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None and result.tls.policy_source is PolicySource.DEFAULT
    assert len(peer.messages()) == 1
