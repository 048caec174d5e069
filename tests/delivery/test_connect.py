"""Tests: the secure connection (``delivery.connect``) on its own, against the local
internet — one MX address opened under each TLS level, once where it succeeds and once
where the policy must refuse (a ``HostFailure``, never a plaintext connection).

No ``DeliveryAgent``: the policy is resolved with the real resolver and ``PolicyResolver``
on the world's DNS (and its HTTPS server for MTA-STS), then handed to ``Connector.open``.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from kakitome.delivery.connect import Connector
from kakitome.delivery.outcomes import HostFailure
from kakitome.delivery.pool import Connection, ConnectionPool
from kakitome.delivery.tls_ledger import TLSLedger
from kakitome.delivery.types import MXUsed
from kakitome.dns.resolver import Resolver
from kakitome.testing import CertKind, Domain, LocalInternet, Peer, PeerBehaviour
from kakitome.testing.https import add_mta_sts_host, mta_sts_policy
from kakitome.tls.policy import PolicySource, TLSLevel
from kakitome.tls.receipt import PeerVerification
from kakitome.tls.resolution import DestinationPolicy, PolicyResolver
from kakitome.tls.state import MemoryTLSState
from tests.fixtures_world import MakeDomain
from tests.tls.conftest import ca_tlsa, peer_tlsa, publish_dane, tls_env


@dataclass
class Opened:
    result: Connection | HostFailure
    connector: Connector
    ledger: TLSLedger
    destination: DestinationPolicy


class OpenFirst(Protocol):
    async def __call__(
        self,
        domain: Domain,
        *,
        state: MemoryTLSState | None = None,
        requiretls: bool = False,
        **env: Any,
    ) -> Opened: ...


@pytest.fixture
async def open_first(world: LocalInternet) -> AsyncIterator[OpenFirst]:
    """``open_first(domain, **env)``: resolve the domain's policy and open its first MX
    address with a fresh ``Connector``; connections are closed when the test ends."""
    pools: list[ConnectionPool] = []
    connections: list[Connection] = []

    async def open_(
        domain: Domain,
        *,
        state: MemoryTLSState | None = None,
        requiretls: bool = False,
        **env: Any,
    ) -> Opened:
        settings = tls_env(world, **env)
        state = state if state is not None else MemoryTLSState()
        pool = ConnectionPool(settings)
        pools.append(pool)
        resolver = Resolver(settings)
        connector = Connector(settings, pool, tls_state=state)
        mx = await resolver.resolve_mx(domain.name)
        destination = await PolicyResolver(settings, resolver, state, time.time).resolve(
            domain.name, mx
        )
        host = mx.hosts[0]
        ledger = connector.ledger(domain.name, requiretls=requiretls)
        hp = destination.host(host.name)
        result = await connector.open(MXUsed(host.name, host.addresses[0]), hp, ledger)
        if isinstance(result, Connection):
            connections.append(result)
        return Opened(result, connector, ledger, destination)

    yield open_
    for conn in connections:
        await conn.session.quit()
    for pool in pools:
        await pool.aclose()


def opened(result: Connection | HostFailure) -> Connection:
    assert isinstance(result, Connection), result
    return result


def refused(result: Connection | HostFailure, enhanced: str, *words: str) -> HostFailure:
    """A policy failure with this enhanced code and these words in its reply."""
    assert isinstance(result, HostFailure), result.receipt
    assert result.kind == HostFailure.POLICY, result.reply
    assert result.reply.code == 451 and result.reply.enhanced == enhanced, result.reply
    for word in words:
        assert word in result.reply.text, result.reply
    return result


SET_UP = {"EHLO", "HELO", "STARTTLS", "QUIT"}


def never_sent_in_plaintext(peer: Peer, connections: int = 1) -> None:
    """The peer saw ``connections`` connections (no plaintext retry on a new one), and
    none without TLS went further than setting up and closing."""
    records = peer.connections()
    assert len(records) == connections, records
    for conn in records:
        if not conn.tls:
            assert {c.split()[0].upper() for c in conn.commands} <= SET_UP, conn.commands


# -- none and may ---------------------------------------------------------------------------


async def test_none_opens_plaintext(make_domain: MakeDomain, open_first: OpenFirst) -> None:
    """Level none: plaintext although STARTTLS is offered, the rule in the receipt."""
    domain, peer = make_domain()
    conn = opened((await open_first(domain, TLS__DEFAULT_LEVEL="none")).result)
    assert conn.context_kind is None and not conn.receipt.used
    assert conn.receipt.level is TLSLevel.NONE
    assert conn.receipt.plaintext_reason and "level none" in conn.receipt.plaintext_reason
    assert not any("STARTTLS" in c.upper() for c in peer.connections()[0].commands)


async def test_none_refused_for_requiretls(make_domain: MakeDomain, open_first: OpenFirst) -> None:
    """Level none, but every message requires TLS: refused before connecting."""
    domain, peer = make_domain()
    result = (await open_first(domain, requiretls=True, TLS__DEFAULT_LEVEL="none")).result
    refused(result, "4.7.4", "REQUIRETLS")
    assert peer.stats().connections == 0


async def test_may_uses_tls_and_counts_the_session(
    make_domain: MakeDomain, open_first: OpenFirst
) -> None:
    """Level may: verified TLS when the certificate is good; one TLS-RPT session and the
    host's observation in the ledger."""
    domain, peer = make_domain()
    attempt = await open_first(domain)
    conn = opened(attempt.result)
    assert conn.receipt.used and conn.receipt.verification is PeerVerification.VERIFIED
    assert conn.receipt.level is TLSLevel.MAY and conn.receipt.policy_source is PolicySource.DEFAULT
    assert [s.result_type for s in attempt.ledger.sessions] == [None]
    assert attempt.ledger.observations[domain.mx[0][1]].verified
    assert peer.connections()[0].tls


async def test_may_refuses_plaintext_after_tls_was_seen(
    make_domain: MakeDomain, open_first: OpenFirst
) -> None:
    """Level may: a host that offered STARTTLS before and now does not is suspected
    stripping: refused, not used in plaintext (T44)."""
    domain, peer = make_domain()
    state = MemoryTLSState()
    first = await open_first(domain, state=state)
    opened(first.result)
    await first.connector.book.remember(first.destination, [first.ledger])
    peer.set_behaviour(PeerBehaviour(starttls=False))
    failure = refused((await open_first(domain, state=state)).result, "4.7.4", "stripping")
    assert failure.receipt is not None and failure.receipt.stripping_suspected
    never_sent_in_plaintext(peer, connections=2)


# -- encrypt --------------------------------------------------------------------------------


async def test_encrypt_accepts_any_certificate(
    make_domain: MakeDomain, open_first: OpenFirst
) -> None:
    """Level encrypt: TLS with a self-signed certificate, recorded untrusted."""
    domain, _ = make_domain(PeerBehaviour(cert=CertKind.SELF_SIGNED))
    conn = opened((await open_first(domain, TLS__DEFAULT_LEVEL="encrypt")).result)
    assert conn.receipt.used and conn.receipt.verification is PeerVerification.UNTRUSTED
    assert conn.receipt.level is TLSLevel.ENCRYPT


async def test_encrypt_refuses_a_host_without_starttls(
    make_domain: MakeDomain, open_first: OpenFirst
) -> None:
    """Level encrypt: no STARTTLS offered means 4.7.4, never plaintext (T7)."""
    domain, peer = make_domain(PeerBehaviour(starttls=False))
    result = (await open_first(domain, TLS__DEFAULT_LEVEL="encrypt")).result
    failure = refused(result, "4.7.4", "level encrypt", "does not offer STARTTLS")
    assert failure.receipt is not None and failure.receipt.tlsrpt_result == "starttls-not-supported"
    never_sent_in_plaintext(peer)


# -- verify (PKIX) --------------------------------------------------------------------------


async def test_verify_accepts_a_valid_certificate(
    make_domain: MakeDomain, open_first: OpenFirst
) -> None:
    """Level verify: the certificate chains and names the MX host."""
    domain, _ = make_domain()
    conn = opened((await open_first(domain, TLS__DEFAULT_LEVEL="verify")).result)
    assert conn.receipt.verification is PeerVerification.VERIFIED
    assert conn.receipt.level is TLSLevel.VERIFY


@pytest.mark.parametrize(
    ("kind", "words"),
    [(CertKind.WRONG_NAME, "does not match"), (CertKind.EXPIRED, "does not verify")],
)
async def test_verify_refuses_a_wrong_certificate(
    make_domain: MakeDomain, open_first: OpenFirst, kind: CertKind, words: str
) -> None:
    """Level verify: a certificate for another name (chain fine) or an expired one is
    4.7.5, with no unverified or plaintext retry."""
    domain, peer = make_domain(PeerBehaviour(cert=kind))
    attempt = await open_first(domain, TLS__DEFAULT_LEVEL="verify")
    failure = refused(attempt.result, "4.7.5", words)
    assert failure.receipt is not None and failure.receipt.verification is not (
        PeerVerification.VERIFIED
    )
    assert len(attempt.connector.unverified) == 0
    never_sent_in_plaintext(peer)


# -- MTA-STS enforce ------------------------------------------------------------------------


async def test_mta_sts_enforce_verifies(
    world: LocalInternet, make_domain: MakeDomain, open_first: OpenFirst
) -> None:
    """MTA-STS enforce listing the MX: verified TLS, source mta-sts, found securely."""
    domain, _ = make_domain()
    add_mta_sts_host(world, domain.name, mta_sts_policy("enforce", [domain.mx[0][1]]))
    conn = opened((await open_first(domain)).result)
    assert conn.receipt.policy_source is PolicySource.MTA_STS
    assert conn.receipt.level is TLSLevel.VERIFY
    assert conn.receipt.verification is PeerVerification.VERIFIED and conn.secure


async def test_mta_sts_enforce_refuses_a_wrong_name(
    world: LocalInternet, make_domain: MakeDomain, open_first: OpenFirst
) -> None:
    """MTA-STS enforce: a certificate that does not name the MX is 4.7.5, reported as a
    host mismatch, and the host is not remembered as having a bad certificate (T40)."""
    domain, peer = make_domain(PeerBehaviour(cert=CertKind.WRONG_NAME))
    add_mta_sts_host(world, domain.name, mta_sts_policy("enforce", [domain.mx[0][1]]))
    attempt = await open_first(domain)
    failure = refused(attempt.result, "4.7.5", "does not match")
    assert failure.receipt is not None
    assert failure.receipt.policy_source is PolicySource.MTA_STS
    assert failure.receipt.tlsrpt_result == "certificate-host-mismatch"
    assert len(attempt.connector.unverified) == 0
    never_sent_in_plaintext(peer)


# -- DANE -----------------------------------------------------------------------------------


async def test_dane_ee_matches(
    world: LocalInternet, make_domain: MakeDomain, open_first: OpenFirst
) -> None:
    """DANE-EE (3 1 1): the leaf matches; SNI is the TLSA base domain."""
    domain, peer = make_domain()
    publish_dane(world, domain, [(3, 1, 1, peer_tlsa(peer))])
    conn = opened((await open_first(domain)).result)
    assert conn.receipt.level is TLSLevel.DANE and conn.receipt.policy_source is PolicySource.DANE
    assert conn.receipt.verification is PeerVerification.VERIFIED and conn.secure
    assert peer.connections()[0].sni == domain.mx[0][1]


async def test_dane_ee_refuses_a_mismatch(
    world: LocalInternet, make_domain: MakeDomain, open_first: OpenFirst
) -> None:
    """DANE-EE: TLSA that the certificate does not match is 4.7.5, never plaintext."""
    domain, peer = make_domain()
    publish_dane(world, domain, [(3, 1, 1, os.urandom(32))])
    attempt = await open_first(domain)
    failure = refused(attempt.result, "4.7.5", "TLSA")
    assert failure.receipt is not None and failure.receipt.tlsrpt_result == "validation-failure"
    assert [s.reason_code for s in attempt.ledger.sessions] == ["tlsa-mismatch"]
    never_sent_in_plaintext(peer)


async def test_dane_ta_matches(
    world: LocalInternet, make_domain: MakeDomain, open_first: OpenFirst
) -> None:
    """DANE-TA (2 0 1 of the test CA): the chain leads to the trust anchor."""
    domain, _ = make_domain()
    publish_dane(world, domain, [(2, 0, 1, ca_tlsa(world.ca, 0, 1))])
    conn = opened((await open_first(domain)).result)
    assert conn.receipt.level is TLSLevel.DANE
    assert conn.receipt.verification is PeerVerification.VERIFIED


async def test_dane_ta_refuses_an_expired_certificate(
    world: LocalInternet, make_domain: MakeDomain, open_first: OpenFirst
) -> None:
    """DANE-TA: a chain to the anchor is not enough when the leaf has expired (T17)."""
    domain, peer = make_domain(PeerBehaviour(cert=CertKind.EXPIRED))
    publish_dane(world, domain, [(2, 0, 1, ca_tlsa(world.ca, 0, 1))])
    refused((await open_first(domain)).result, "4.7.5", "TLSA")
    never_sent_in_plaintext(peer)
