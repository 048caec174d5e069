"""Tests: REQUIRETLS (RFC 8689) in delivery, TLS-Required: No, and the redacted DSN."""

from __future__ import annotations

import email
import itertools
from email import policy

import pytest

from kakitome.delivery.agent import tls_required_no
from kakitome.delivery.types import Batch, OutboundMessage, Outcome, Recipient
from kakitome.queue.requiretls_dsn import build_requiretls_dsn, redact_header
from kakitome.queue.types import Bounce
from kakitome.testing import CertKind, LocalInternet, PeerBehaviour
from kakitome.testing.https import add_mta_sts_host, mta_sts_policy
from kakitome.tls.policy import PolicySource
from tests.fixtures_world import MakeDomain
from tests.tls.conftest import TLSAgentFactory, peer_tlsa, publish_dane

_ids = itertools.count(10_000)
BODY = b"From: a@sender.test\r\nTo: bob@x\r\nSubject: secret plans\r\n\r\nhello\r\n"


def message(domain: str, *, requiretls: bool = False, content: bytes = BODY) -> Batch:
    return Batch(
        domain,
        (
            OutboundMessage(
                message_id=f"r{next(_ids)}",
                sender="bounce@sender.test",
                recipients=(Recipient(next(_ids), f"bob@{domain}"),),
                content=content,
                requiretls=requiretls,
            ),
        ),
    )


async def test_requiretls_over_dane_with_advertised_requiretls(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T29: DANE-secured hop, verified, REQUIRETLS advertised: delivered with the
    REQUIRETLS parameter on MAIL FROM."""
    domain, peer = make_domain(PeerBehaviour(requiretls=True))
    publish_dane(world, domain, [(3, 1, 1, peer_tlsa(peer))])
    [result] = await tls_agent().deliver(message(domain.name, requiretls=True))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert "REQUIRETLS" in peer.messages()[0].mail_options


async def test_requiretls_over_mta_sts_enforce(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T29: an MTA-STS enforce hop with a verified certificate that advertises
    REQUIRETLS carries a REQUIRETLS message."""
    domain, _ = make_domain(PeerBehaviour(requiretls=True))
    add_mta_sts_host(world, domain.name, mta_sts_policy("enforce", [domain.mx[0][1]]))
    [result] = await tls_agent().deliver(message(domain.name, requiretls=True))
    assert result.outcome is Outcome.DELIVERED, result.reply


async def test_requiretls_without_secure_policy_bounces(
    make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T29: no DNSSEC/MTA-STS policy: bounced 5.7.30 even though TLS verified and the
    server advertises REQUIRETLS."""
    domain, peer = make_domain(PeerBehaviour(requiretls=True))
    [result] = await tls_agent().deliver(message(domain.name, requiretls=True))
    assert result.outcome is Outcome.BOUNCED and result.reply.enhanced == "5.7.30"
    assert "no DNSSEC" in result.reply.text
    assert peer.messages() == []


async def test_requiretls_under_mta_sts_testing_bounces(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T29: MTA-STS testing is not a secure path."""
    domain, _ = make_domain(PeerBehaviour(requiretls=True))
    add_mta_sts_host(world, domain.name, mta_sts_policy("testing", [domain.mx[0][1]]))
    [result] = await tls_agent().deliver(message(domain.name, requiretls=True))
    assert result.outcome is Outcome.BOUNCED and result.reply.enhanced == "5.7.30"


async def test_requiretls_without_advertisement_bounces(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T29: a secure, verified hop that does not advertise REQUIRETLS: bounced."""
    domain, peer = make_domain(PeerBehaviour(requiretls=False))
    publish_dane(world, domain, [(3, 1, 1, peer_tlsa(peer))])
    [result] = await tls_agent().deliver(message(domain.name, requiretls=True))
    assert result.outcome is Outcome.BOUNCED and result.reply.enhanced == "5.7.30"
    assert "does not advertise REQUIRETLS" in result.reply.text
    assert peer.messages() == []


async def test_requiretls_when_secure_hop_fails_verification_bounces(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T29: an MTA-STS hop whose certificate does not verify cannot take REQUIRETLS mail."""
    domain, peer = make_domain(PeerBehaviour(requiretls=True, cert=CertKind.SELF_SIGNED))
    add_mta_sts_host(world, domain.name, mta_sts_policy("enforce", [domain.mx[0][1]]))
    [result] = await tls_agent().deliver(message(domain.name, requiretls=True))
    assert result.outcome is Outcome.BOUNCED and result.reply.enhanced == "5.7.30"
    assert peer.messages() == []


async def test_tls_required_no_lowers_policy(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T30: TLS-Required: No delivers despite an MTA-STS enforce policy that would defer;
    the receipt names the header as the source. A normal message in the same batch still
    defers."""
    domain, peer = make_domain()
    add_mta_sts_host(world, domain.name, mta_sts_policy("enforce", ["mx.elsewhere.test"]))
    relaxed = message(domain.name, content=b"TLS-Required: No\r\n" + BODY).messages[0]
    normal = message(domain.name).messages[0]
    results = await tls_agent().deliver(Batch(domain.name, (relaxed, normal)))
    assert [r.outcome for r in results] == [Outcome.DELIVERED, Outcome.DEFERRED]
    assert results[0].tls is not None
    assert results[0].tls.policy_source is PolicySource.HEADER
    assert len(peer.messages()) == 1


async def test_requiretls_wins_over_tls_required_no(
    make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T30: a REQUIRETLS message ignores TLS-Required: No."""
    domain, _ = make_domain(PeerBehaviour(requiretls=True))
    batch = message(domain.name, requiretls=True, content=b"TLS-Required: No\r\n" + BODY)
    [result] = await tls_agent().deliver(batch)
    assert result.outcome is Outcome.BOUNCED and result.reply.enhanced == "5.7.30"


def test_tls_required_header_detection() -> None:
    """T30: only the header section counts, case-insensitive."""
    assert tls_required_no(b"tls-required:   no\r\nX: y\r\n\r\nbody")
    assert not tls_required_no(b"X: y\r\n\r\nTLS-Required: No\r\n")
    assert not tls_required_no(b"TLS-Required: Yes\r\n\r\n")


def _bounce(ret: str | None = "FULL") -> Bounce:
    return Bounce(
        delivery_id=1,
        message_id="m1",
        recipient="bob@example.test",
        sender="alice@sender.test",
        reply_code=550,
        reply_enhanced="5.7.30",
        reply_text="REQUIRETLS support required",
        mx_host="mx1.example.test",
        notify=None,
        orcpt=None,
        envid=None,
        ret=ret,
    )


@pytest.mark.parametrize("ret", ["FULL", None])
def test_redacted_dsn(ret: str | None) -> None:
    """T29: the DSN of a REQUIRETLS message returns no body and only Message-ID, Date and
    From of the header, whatever RET asked for."""
    original = (
        b"From: Alice <alice@sender.test>\r\nTo: bob@example.test\r\nSubject: secret plans\r\n"
        b"Message-ID: <abc@sender.test>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        b"X-Secret: folded\r\n value\r\n\r\nthe body\r\n"
    )
    dsn = build_requiretls_dsn([_bounce(ret)], original, reporting_mta="mta.test", now=1e9)
    parsed = email.message_from_bytes(dsn, policy=policy.default)
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    returned = parts[2].get_payload()
    assert "Message-ID: <abc@sender.test>" in str(returned)
    assert b"secret plans" not in dsn and b"the body" not in dsn and b"X-Secret" not in dsn
    assert b"5.7.30" in dsn
    assert redact_header(original).count(b"\r\n") == 3
