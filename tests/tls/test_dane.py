"""Tests: DANE for SMTP against the local internet's DNS (AD flag per name)."""

from __future__ import annotations

import os

import pytest

from kakitome.delivery.types import Outcome
from kakitome.testing import CertKind, LocalInternet, PeerBehaviour
from kakitome.testing.https import add_mta_sts_host, mta_sts_policy
from kakitome.tls.policy import PolicySource, TLSLevel
from kakitome.tls.receipt import PeerVerification
from tests.delivery.conftest import batch
from tests.fixtures_world import MakeDomain
from tests.tls.conftest import TLSAgentFactory, ca_tlsa, peer_tlsa, publish_dane


@pytest.mark.parametrize("params", ["3 1 1", "3 1 2", "3 0 1", "2 0 1", "2 1 1", "2 0 2"])
async def test_tlsa_records_match(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory, params: str
) -> None:
    """T13, T17: 3 1 1, 3 1 2, 2 0 1 and 2 1 1 (and more) match; SNI is the TLSA base
    domain; the receipt says dane, verified, found securely."""
    usage, selector, matching = (int(p) for p in params.split())
    domain, peer = make_domain()
    data = (
        peer_tlsa(peer, selector, matching) if usage == 3 else ca_tlsa(world.ca, selector, matching)
    )
    publish_dane(world, domain, [(usage, selector, matching, data)])
    [result] = await tls_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None
    assert result.tls.level is TLSLevel.DANE and result.tls.policy_source is PolicySource.DANE
    assert result.tls.verification is PeerVerification.VERIFIED
    assert result.tls.tlsrpt_result == "success"
    [message] = peer.messages()
    assert message.tls and message.sni == domain.mx[0][1]


async def test_wrong_tlsa_defers_and_never_falls_back(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T13: a usable TLSA set that does not match skips the MX: deferred 4.7.5, nothing
    sent, no plaintext retry."""
    domain, peer = make_domain()
    publish_dane(world, domain, [(3, 1, 1, os.urandom(32))])
    agent = tls_agent()
    [result] = await agent.deliver(batch(domain.name))
    assert result.outcome is Outcome.DEFERRED and result.reply.enhanced == "4.7.5"
    assert "TLSA" in result.reply.text
    assert peer.messages() == []
    assert peer.stats().connections == 1
    assert all("MAIL FROM" not in " ".join(c.commands) for c in peer.connections())
    assert result.tls is not None and result.tls.tlsrpt_result == "validation-failure"
    assert len(agent.unverified) == 0  # T40


async def test_unusable_tlsa_means_encrypted_unauthenticated(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T14: TLSA records with only unusable entries (usage 0/1, unknown matching) mean
    mandatory TLS without authentication: a self-signed certificate is accepted."""
    domain, peer = make_domain(PeerBehaviour(cert=CertKind.SELF_SIGNED))
    publish_dane(world, domain, [(1, 1, 1, os.urandom(32)), (3, 1, 9, b"x")])
    [result] = await tls_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None and result.tls.used
    assert result.tls.level is TLSLevel.ENCRYPT and result.tls.policy_source is PolicySource.DANE
    assert result.tls.verification is PeerVerification.UNTRUSTED
    assert peer.stats().connections == 1


async def test_unusable_tlsa_still_refuses_plaintext(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T14: with unusable TLSA a host without STARTTLS is deferred, not used in plaintext."""
    domain, peer = make_domain(PeerBehaviour(starttls=False))
    publish_dane(world, domain, [(0, 0, 1, os.urandom(32))])
    [result] = await tls_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DEFERRED and result.reply.enhanced == "4.7.4"
    assert peer.messages() == []


async def test_tlsa_servfail_defers(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T15: a TLSA lookup that fails (SERVFAIL) means: do not use that MX; defer."""
    domain, peer = make_domain()
    name = publish_dane(world, domain, [])
    world.dns.set_rcode(name, "SERVFAIL")
    [result] = await tls_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DEFERRED and result.reply.enhanced == "4.7.5"
    assert peer.stats().connections == 0
    assert result.tls is not None and result.tls.tlsrpt_result == "dnssec-invalid"


async def test_insecure_tlsa_is_ignored(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T16: TLSA records without the AD bit are ignored (even wrong ones)."""
    domain, _ = make_domain()
    publish_dane(world, domain, [(3, 1, 1, os.urandom(32))], tlsa_secure=False)
    [result] = await tls_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None and result.tls.policy_source is PolicySource.DEFAULT


async def test_tlsa_ignored_when_mx_address_not_validated(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T12: TLSA is used only when the MX host's address records were validated."""
    domain, _ = make_domain()
    publish_dane(world, domain, [(3, 1, 1, os.urandom(32))])
    world.dns.set_ad(domain.mx[0][1], False)
    [result] = await tls_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None and result.tls.policy_source is PolicySource.DEFAULT


async def test_tlsa_ignored_when_resolver_not_trusted(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T12: without dns.trust_ad no AD bit is believed."""
    domain, _ = make_domain()
    publish_dane(world, domain, [(3, 1, 1, os.urandom(32))])
    [result] = await tls_agent(DNS__TRUST_AD="false").deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply


@pytest.mark.parametrize("kind", [CertKind.EXPIRED, CertKind.WRONG_NAME])
async def test_dane_ee_ignores_name_and_expiry(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory, kind: CertKind
) -> None:
    """T17: DANE-EE (3 1 1) matches an expired or wrongly named certificate."""
    domain, peer = make_domain(PeerBehaviour(cert=kind))
    publish_dane(world, domain, [(3, 1, 1, peer_tlsa(peer))])
    [result] = await tls_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None and result.tls.verification is PeerVerification.VERIFIED


@pytest.mark.parametrize("kind", [CertKind.EXPIRED, CertKind.WRONG_NAME])
async def test_dane_ta_requires_name_and_validity(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory, kind: CertKind
) -> None:
    """T17: DANE-TA (2 0 1) does not accept an expired or wrongly named certificate."""
    domain, peer = make_domain(PeerBehaviour(cert=kind))
    publish_dane(world, domain, [(2, 0, 1, ca_tlsa(world.ca, 0, 1))])
    [result] = await tls_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DEFERRED and result.reply.enhanced == "4.7.5"
    assert peer.messages() == []


async def test_dane_overrides_mta_sts(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T25: usable DANE wins over an MTA-STS enforce policy that does not list the MX."""
    domain, peer = make_domain()
    add_mta_sts_host(world, domain.name, mta_sts_policy("enforce", ["mx.elsewhere.test"]))
    publish_dane(world, domain, [(3, 1, 1, peer_tlsa(peer))])
    [result] = await tls_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None and result.tls.policy_source is PolicySource.DANE


async def test_cname_mx_uses_expanded_name(
    world: LocalInternet, fresh_peer: object, tls_agent: TLSAgentFactory, make_domain: MakeDomain
) -> None:
    """T18: an MX host that is a validated CNAME uses the TLSA records at the target
    (RFC 7672 §2.2.2), and the target is the SNI."""
    domain, peer = make_domain()
    mx = domain.mx[0][1]
    target = f"real.{domain.name}"
    world.dns.remove(mx, "A")
    world.dns.add_cname(mx, target)
    world.dns.add_address(target, peer.ip)
    peer.add_names(target)
    for name in (domain.name, mx, target, f"_25._tcp.{target}"):
        world.dns.set_ad(name, True)
    world.dns.add_tlsa(f"_25._tcp.{target}", 3, 1, 1, peer_tlsa(peer), ttl=0)
    [result] = await tls_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None and result.tls.policy_source is PolicySource.DANE
    assert peer.messages()[0].sni == target


async def test_dane_only_without_tlsa_defers(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T13: the dane-only level without usable TLSA never sends."""
    domain, peer = make_domain()
    agent = tls_agent(TLS__POLICY=f'{{"{domain.name}": "dane-only"}}')
    [result] = await agent.deliver(batch(domain.name))
    assert result.outcome is Outcome.DEFERRED and result.reply.enhanced == "4.7.5"
    assert peer.stats().connections == 0
