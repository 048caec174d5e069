"""Tests: the delivery agent against the local internet — TLS levels and receipts."""

from __future__ import annotations

import ssl

from kakitome.delivery.types import Outcome
from kakitome.testing import CertKind, PeerBehaviour, StartTLSFailure
from kakitome.tls.policy import PolicySource, TLSLevel
from kakitome.tls.receipt import PeerVerification
from tests.delivery.conftest import AgentFactory, batch
from tests.fixtures_world import MakeDomain


async def test_valid_certificate_gives_verified_tls13(
    make_agent: AgentFactory, make_domain: MakeDomain
) -> None:
    """T8: a valid certificate gives a TLS 1.3, verified receipt with the leaf SHA-256."""
    domain, peer = make_domain()
    [result] = await make_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply
    receipt = result.tls
    assert receipt is not None and receipt.used
    assert receipt.version == "TLSv1.3"
    assert receipt.verification is PeerVerification.VERIFIED
    assert receipt.level is TLSLevel.MAY and receipt.policy_source is PolicySource.DEFAULT
    assert receipt.peer_certificate_sha256 is not None
    assert len(receipt.peer_certificate_sha256) == 64
    assert not receipt.downgraded and receipt.verify_error is None
    [message] = peer.messages()
    assert message.tls and message.rcpt_tos == (f"bob@{domain.name}",)
    assert message.sni == domain.mx[0][1]


async def test_policy_table_source_is_recorded(
    make_agent: AgentFactory, make_domain: MakeDomain
) -> None:
    """T8: a table entry's level and source 'table' appear in the receipt."""
    domain, _ = make_domain()
    agent = make_agent(TLS__POLICY=f'{{"{domain.name}": "verify"}}')
    [result] = await agent.deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None
    assert result.tls.level is TLSLevel.VERIFY and result.tls.policy_source is PolicySource.TABLE


async def test_bad_certificates_are_untrusted_under_may(
    make_agent: AgentFactory, make_domain: MakeDomain
) -> None:
    """T8: self-signed and expired certificates still encrypt under may, recorded as
    untrusted with OpenSSL's reason; a wrong name is trusted, not verified."""
    agent = make_agent()
    for kind, expected in [
        (CertKind.SELF_SIGNED, PeerVerification.UNTRUSTED),
        (CertKind.EXPIRED, PeerVerification.UNTRUSTED),
        (CertKind.WRONG_NAME, PeerVerification.TRUSTED),
    ]:
        domain, peer = make_domain(PeerBehaviour(cert=kind))
        [result] = await agent.deliver(batch(domain.name))
        assert result.outcome is Outcome.DELIVERED, (kind, result.reply)
        assert result.tls is not None and result.tls.used, kind
        assert result.tls.verification is expected, kind
        assert result.tls.verify_error, kind
        assert peer.cert is not None
        assert result.tls.peer_certificate_sha256 == _sha256(peer.cert.der)
        assert peer.messages()[0].tls


async def test_untrusted_certificate_is_remembered(
    make_agent: AgentFactory, make_domain: MakeDomain
) -> None:
    """T8: after one verification failure the next connection goes straight to
    unverified TLS (one connection, not two) and still records the real certificate."""
    agent = make_agent(DELIVERY__IDLE_TIMEOUT="0")
    domain, peer = make_domain(PeerBehaviour(cert=CertKind.SELF_SIGNED))
    [first] = await agent.deliver(batch(domain.name))
    assert peer.stats().connections == 2
    [second] = await agent.deliver(batch(domain.name))
    assert peer.stats().connections == 3
    assert second.tls == first.tls
    assert second.tls is not None and second.tls.verification is PeerVerification.UNTRUSTED


async def test_bad_certificates_defer_under_verify(
    make_agent: AgentFactory, make_domain: MakeDomain
) -> None:
    """T7: under verify a certificate that does not verify or match defers with 4.7.5,
    and nothing is sent."""
    agent = make_agent(TLS__DEFAULT_LEVEL="verify")
    for kind in (CertKind.SELF_SIGNED, CertKind.EXPIRED, CertKind.WRONG_NAME):
        domain, peer = make_domain(PeerBehaviour(cert=kind))
        [result] = await agent.deliver(batch(domain.name))
        assert result.outcome is Outcome.DEFERRED, kind
        assert result.reply.enhanced == "4.7.5", (kind, result.reply)
        assert peer.messages() == []


async def test_secure_matches_next_hop_domain(
    make_agent: AgentFactory, make_domain: MakeDomain
) -> None:
    """T8: secure requires the next-hop domain in the certificate; the MX name is not enough."""
    domain, peer = make_domain()
    agent = make_agent(TLS__DEFAULT_LEVEL="secure")
    [result] = await agent.deliver(batch(domain.name))
    assert result.outcome is Outcome.DEFERRED and result.reply.enhanced == "4.7.5"
    peer.add_names(domain.name)
    [result] = await agent.deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None and result.tls.verified


async def test_no_starttls_is_plaintext_under_may(
    make_agent: AgentFactory, make_domain: MakeDomain
) -> None:
    """T8: a server without STARTTLS gets plaintext under may, receipt used=False."""
    domain, peer = make_domain(PeerBehaviour(starttls=False))
    [result] = await make_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED
    assert result.tls is not None and not result.tls.used and not result.tls.downgraded
    assert result.tls.verification is PeerVerification.NONE
    assert not peer.messages()[0].tls


async def test_no_starttls_defers_under_encrypt(
    make_agent: AgentFactory, make_domain: MakeDomain
) -> None:
    """T7: under encrypt a server without STARTTLS is never sent plaintext: 4.7.x."""
    domain, peer = make_domain(PeerBehaviour(starttls=False))
    [result] = await make_agent(TLS__DEFAULT_LEVEL="encrypt").deliver(batch(domain.name))
    assert result.outcome is Outcome.DEFERRED
    assert result.reply.enhanced is not None and result.reply.enhanced.startswith("4.7.")
    assert peer.messages() == []


async def test_level_none_never_starttls(make_agent: AgentFactory, make_domain: MakeDomain) -> None:
    """T8: level none sends in plaintext even when STARTTLS is offered."""
    domain, peer = make_domain()
    [result] = await make_agent(TLS__DEFAULT_LEVEL="none").deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED
    assert result.tls is not None and not result.tls.used
    assert "STARTTLS" not in peer.connections()[0].commands


async def test_failed_handshake_falls_back_to_plaintext_under_may(
    make_agent: AgentFactory, make_domain: MakeDomain
) -> None:
    """T6: a failing handshake under may retries in plaintext on a new connection and the
    receipt says downgraded."""
    for failure in (StartTLSFailure.CLOSE, StartTLSFailure.GARBAGE):
        domain, peer = make_domain(PeerBehaviour(starttls_failure=failure))
        [result] = await make_agent().deliver(batch(domain.name))
        assert result.outcome is Outcome.DELIVERED, (failure, result.reply)
        assert result.tls is not None and not result.tls.used and result.tls.downgraded
        assert peer.stats().connections == 2
        assert not peer.messages()[0].tls


async def test_failed_handshake_defers_under_encrypt(
    make_agent: AgentFactory, make_domain: MakeDomain
) -> None:
    """T7: under encrypt a failed handshake defers with 4.7.5, never plaintext."""
    domain, peer = make_domain(PeerBehaviour(starttls_failure=StartTLSFailure.GARBAGE))
    [result] = await make_agent(TLS__DEFAULT_LEVEL="encrypt").deliver(batch(domain.name))
    assert result.outcome is Outcome.DEFERRED and result.reply.enhanced == "4.7.5"
    assert peer.messages() == []


async def test_tls10_server_refused_under_encrypt_accepted_under_may(
    make_agent: AgentFactory, make_domain: MakeDomain
) -> None:
    """T7: a server that only speaks TLS 1.0 is deferred under encrypt; under may the
    message goes encrypted anyway if OpenSSL allows it, else plaintext with a downgrade."""
    behaviour = PeerBehaviour(
        tls_max_version=ssl.TLSVersion.TLSv1, tls_min_version=ssl.TLSVersion.TLSv1
    )
    domain, peer = make_domain(behaviour)
    [result] = await make_agent(TLS__DEFAULT_LEVEL="encrypt").deliver(batch(domain.name))
    assert result.outcome is Outcome.DEFERRED and result.reply.enhanced == "4.7.5"
    assert peer.messages() == []
    [result] = await make_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED
    assert result.tls is not None
    assert result.tls.version == "TLSv1" or result.tls.downgraded


def _sha256(der: bytes) -> str:
    import hashlib

    return hashlib.sha256(der).hexdigest()
