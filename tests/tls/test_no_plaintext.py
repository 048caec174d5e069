"""Tests: no path to plaintext (T13, T43-T45).

Every way TLS can fail (STARTTLS hidden, refused, a handshake broken after the 220,
garbage after the 220) asks one decision point whether the host may be reached without
TLS. These run the real agent against loopback peers and the world's DNS.
"""

from __future__ import annotations

import os
import ssl
import time
from typing import Any

import pytest

from kakitome.config import StrippingSettings
from kakitome.delivery.agent import DeliveryAgent
from kakitome.delivery.pool import ConnectionPool
from kakitome.delivery.types import Outcome, RecipientResult
from kakitome.dns.resolver import Resolver
from kakitome.store.database import Database
from kakitome.testing import LocalInternet, Peer, PeerBehaviour, StartTLSFailure
from kakitome.tls.dane import TLSARecord
from kakitome.tls.history import HostHistory
from kakitome.tls.plaintext import plaintext_verdict
from kakitome.tls.policy import PolicySource, TLSLevel
from kakitome.tls.resolution import HostPolicy
from kakitome.tls.state import MemoryTLSState
from kakitome.tls.store import TLSStore
from kakitome.tls.tlsrpt import ReportPolicy
from tests.delivery.conftest import batch
from tests.fixtures_world import MakeDomain
from tests.tls.conftest import TLSAgentFactory, peer_tlsa, publish_dane

# Every way a man in the middle (or a broken peer) can keep TLS from happening.
TLS_FAILURES = [
    pytest.param(PeerBehaviour(starttls=False), id="starttls-hidden"),
    pytest.param(PeerBehaviour(starttls_failure=StartTLSFailure.REFUSE), id="refused-454"),
    pytest.param(PeerBehaviour(starttls_failure=StartTLSFailure.NOT_IMPLEMENTED), id="refused-502"),
    pytest.param(PeerBehaviour(starttls_failure=StartTLSFailure.SHUTDOWN), id="refused-421"),
    pytest.param(PeerBehaviour(starttls_failure=StartTLSFailure.CLOSE), id="closed-after-220"),
    pytest.param(PeerBehaviour(starttls_failure=StartTLSFailure.GARBAGE), id="garbage-after-220"),
]


def assert_nothing_sent(peer: Peer, already: int = 0) -> None:
    """The peer received no message beyond ``already`` and no MAIL FROM in plaintext."""
    assert len(peer.messages()) == already
    for conn in peer.connections():
        if not conn.tls:
            assert not any(c.upper().startswith("MAIL FROM") for c in conn.commands), conn


def assert_tls_deferral(result: RecipientResult) -> None:
    assert result.outcome is Outcome.DEFERRED, result.reply
    assert result.reply.code == 451 and (result.reply.enhanced or "").startswith("4.7."), (
        result.reply
    )
    assert result.tls is not None and not result.tls.used
    assert result.tls.plaintext_reason is None


@pytest.mark.parametrize("behaviour", TLS_FAILURES)
@pytest.mark.parametrize("table", [None, "dane", "dane-only"])
async def test_usable_dane_never_falls_back_to_plaintext(
    world: LocalInternet,
    make_domain: MakeDomain,
    tls_agent: TLSAgentFactory,
    behaviour: PeerBehaviour,
    table: str | None,
) -> None:
    """T13, T43: usable TLSA (3 1 1, the real key) makes TLS mandatory for the host
    (RFC 7672 §2.2): STARTTLS hidden, refused or broken defers 4.7.x, nothing sent."""
    domain, peer = make_domain()
    publish_dane(world, domain, [(3, 1, 1, peer_tlsa(peer))])
    env = {} if table is None else {"TLS__POLICY": f'{{"{domain.name}": "{table}"}}'}
    agent = tls_agent(**env)
    peer.set_behaviour(behaviour)
    [result] = await agent.deliver(batch(domain.name))
    assert_tls_deferral(result)
    assert result.tls is not None
    assert result.tls.level is (TLSLevel.DANE_ONLY if table == "dane-only" else TLSLevel.DANE)
    assert "DANE" in result.reply.text or "dane" in result.reply.text, result.reply
    assert_nothing_sent(peer)


async def test_dane_only_stays_dane_only_when_tlsa_is_found(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T45: a table ``dane-only`` with usable TLSA delivers under level dane-only (the
    "only" is not lost), verified against the TLSA records."""
    domain, peer = make_domain()
    publish_dane(world, domain, [(3, 1, 1, peer_tlsa(peer))])
    agent = tls_agent(TLS__POLICY=f'{{"{domain.name}": "dane-only"}}')
    [result] = await agent.deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None and result.tls.used and result.tls.verified
    assert result.tls.level is TLSLevel.DANE_ONLY
    assert result.tls.policy_source is PolicySource.DANE
    assert result.tls.plaintext_reason is None


@pytest.mark.parametrize("behaviour", TLS_FAILURES)
async def test_history_of_verified_tls_refuses_plaintext_whichever_way_tls_fails(
    make_domain: MakeDomain, tls_agent: TLSAgentFactory, store: Database, behaviour: PeerBehaviour
) -> None:
    """T44: after a verified TLS delivery, hiding STARTTLS, refusing it or breaking the
    handshake after the 220 all defer 4.7.x as possible stripping, with an event; the
    history comes from the database (SQLite and PostgreSQL)."""
    domain, peer = make_domain()
    [first] = await tls_agent(TLSStore(store.engine)).deliver(batch(domain.name))
    assert first.outcome is Outcome.DELIVERED and first.tls is not None and first.tls.verified
    peer.set_behaviour(behaviour)
    state = TLSStore(store.engine)  # a fresh process: the history is read from the store
    [second] = await tls_agent(state).deliver(batch(domain.name))
    assert_tls_deferral(second)
    assert "stripping" in second.reply.text, second.reply
    assert second.tls is not None and second.tls.stripping_suspected
    assert second.tls.policy_source is PolicySource.HISTORY
    assert_nothing_sent(peer, already=1)
    events = await state.tls_events("tls-stripping-suspected")
    assert [e["data"]["mx_host"] for e in events] == [domain.mx[0][1]]


@pytest.mark.parametrize("behaviour", TLS_FAILURES)
async def test_may_without_history_goes_plaintext_and_says_why(
    make_domain: MakeDomain, tls_agent: TLSAgentFactory, behaviour: PeerBehaviour
) -> None:
    """T6, T43: under ``may`` with no history and no protection the message goes in
    plaintext, and the receipt says which rule allowed it. (A 421 to STARTTLS closes the
    session: plaintext is allowed but not on that session, so the host is unreachable.)"""
    domain, peer = make_domain(behaviour)
    [result] = await tls_agent().deliver(batch(domain.name))
    if behaviour.starttls_failure is StartTLSFailure.SHUTDOWN:
        assert result.outcome is Outcome.DEFERRED, result.reply
        assert (result.reply.enhanced or "").startswith("4.4."), result.reply
        assert peer.messages() == []
        return
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None and not result.tls.used
    assert result.tls.level is TLSLevel.MAY and result.tls.stripping_suspected is None
    reason = result.tls.plaintext_reason
    assert reason is not None and "may" in reason and "no history" in reason, reason
    assert result.tls.to_dict()["plaintext_reason"] == reason
    [message] = peer.messages()
    assert not message.tls


async def test_history_with_defer_off_goes_plaintext_flagged(
    make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T44: with ``stripping.defer`` off a broken handshake after verified TLS goes in
    plaintext, but the receipt flags possible stripping and names the rule."""
    domain, peer = make_domain()
    state = MemoryTLSState()
    agent = tls_agent(state, STRIPPING__DEFER="false")
    await agent.deliver(batch(domain.name))
    peer.set_behaviour(PeerBehaviour(starttls_failure=StartTLSFailure.CLOSE))
    [second] = await agent.deliver(batch(domain.name))
    assert second.outcome is Outcome.DELIVERED, second.reply
    assert second.tls is not None and not second.tls.used and second.tls.stripping_suspected
    assert second.tls.plaintext_reason is not None
    assert "stripping.defer is off" in second.tls.plaintext_reason
    assert [e[0] for e in state.events] == ["tls-stripping-suspected"]


async def test_level_none_says_why_plaintext(
    make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T43: under ``none`` the receipt names the table entry as the reason."""
    domain, _ = make_domain()
    agent = tls_agent(TLS__POLICY=f'{{"{domain.name}": "none"}}')
    [result] = await agent.deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None and not result.tls.used
    assert result.tls.plaintext_reason is not None and "none" in result.tls.plaintext_reason


@pytest.mark.parametrize(
    ("behaviour", "cause"),
    [
        pytest.param(
            PeerBehaviour(starttls_failure=StartTLSFailure.GARBAGE),
            "bytes after its 220 that are not tls",
            id="garbage-after-220",
        ),
        pytest.param(
            PeerBehaviour(
                tls_min_version=ssl.TLSVersion.TLSv1, tls_max_version=ssl.TLSVersion.TLSv1
            ),
            "hung up on our clienthello (tls 1.2 or later",
            id="tls10-only",
        ),
    ],
)
async def test_handshake_deferral_names_the_real_cause(
    make_domain: MakeDomain, tls_agent: TLSAgentFactory, behaviour: PeerBehaviour, cause: str
) -> None:
    """T7: the deferral after a failed handshake names what actually went wrong, not
    only "connection closed during the TLS handshake"."""
    domain, peer = make_domain(behaviour)
    [result] = await tls_agent(TLS__DEFAULT_LEVEL="encrypt").deliver(batch(domain.name))
    assert_tls_deferral(result)
    assert cause in result.reply.text.lower(), result.reply
    assert peer.messages() == []


async def test_dane_only_with_unusable_tlsa_defers(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T45: ``dane-only`` with TLSA records none of which is usable defers (4.7.5) and
    never falls back to encryption without authentication, nor to plaintext."""
    domain, peer = make_domain()
    publish_dane(world, domain, [(0, 0, 1, os.urandom(32))])
    agent = tls_agent(TLS__POLICY=f'{{"{domain.name}": "dane-only"}}')
    [result] = await agent.deliver(batch(domain.name))
    assert result.outcome is Outcome.DEFERRED and result.reply.enhanced == "4.7.5", result.reply
    assert "dane-only" in result.reply.text
    assert peer.stats().connections == 0


def _host(level: TLSLevel, source: PolicySource, **kw: Any) -> HostPolicy:
    return HostPolicy("mx.example.test", level, source, ReportPolicy("example.test"), **kw)


NOW = 1_000_000.0
SEEN = HostHistory("mx.example.test", starttls_seen_at=NOW - 60, updated_at=NOW - 60)
TLSA = (TLSARecord(3, 1, 1, b"\x00" * 32),)


@pytest.mark.parametrize(
    ("hp", "requiretls", "allowed", "words"),
    [
        (_host(TLSLevel.MAY, PolicySource.DEFAULT), False, True, "no history"),
        (_host(TLSLevel.NONE, PolicySource.TABLE), False, True, "level none"),
        (_host(TLSLevel.MAY, PolicySource.HEADER), False, True, "TLS-Required: No"),
        (_host(TLSLevel.MAY, PolicySource.DEFAULT), True, False, "REQUIRETLS"),
        (_host(TLSLevel.NONE, PolicySource.TABLE), True, False, "REQUIRETLS"),
        (_host(TLSLevel.DANE, PolicySource.DANE, tlsa=TLSA), False, False, "RFC 7672"),
        (_host(TLSLevel.DANE_ONLY, PolicySource.DANE, tlsa=TLSA), False, False, "RFC 7672"),
        (_host(TLSLevel.DANE_ONLY, PolicySource.TABLE), False, False, "dane-only"),
        (_host(TLSLevel.ENCRYPT, PolicySource.DANE), False, False, "none usable"),
        (_host(TLSLevel.VERIFY, PolicySource.MTA_STS), False, False, "enforce"),
        (_host(TLSLevel.MAY, PolicySource.MTA_STS, sts_testing=True), False, True, "may"),
        (_host(TLSLevel.ENCRYPT, PolicySource.TABLE), False, False, "encrypt"),
        (_host(TLSLevel.MAY, PolicySource.DEFAULT, history=SEEN), False, False, "stripping"),
    ],
)
def test_plaintext_verdict_rules(
    hp: HostPolicy, requiretls: bool, allowed: bool, words: str
) -> None:
    """T43: the decision table of the one place that allows plaintext."""
    verdict = plaintext_verdict(
        hp,
        failure="does not offer STARTTLS",
        requiretls=requiretls,
        stripping=StrippingSettings(),
        now=NOW,
    )
    assert verdict.allowed is allowed and words in verdict.reason, verdict


def test_old_history_and_disabled_stripping_allow_plaintext() -> None:
    """T44: history outside ``stripping.window``, or with stripping off, does not count."""
    hp = _host(TLSLevel.MAY, PolicySource.DEFAULT, history=SEEN)
    for settings, now in (
        (StrippingSettings(window=59), NOW),
        (StrippingSettings(enabled=False), NOW),
    ):
        verdict = plaintext_verdict(hp, failure="x", requiretls=False, stripping=settings, now=now)
        assert verdict.allowed and verdict.stripping is None, verdict


async def test_pooled_plaintext_connection_is_not_reused_once_tls_is_expected(
    world: LocalInternet, make_domain: MakeDomain
) -> None:
    """T43: a plaintext connection pooled under ``may`` is dropped, not reused, when the
    host has since gained a history of TLS; the new connection asks again and defers."""
    domain, peer = make_domain(PeerBehaviour(starttls=False))
    settings = world.settings()
    state = MemoryTLSState()
    pool = ConnectionPool(settings)
    agent = DeliveryAgent(settings, Resolver(settings), pool, tls_state=state)
    try:
        [first] = await agent.deliver(batch(domain.name))
        assert first.outcome is Outcome.DELIVERED and first.tls is not None
        assert not first.tls.used and first.tls.plaintext_reason is not None
        host = domain.mx[0][1]
        now = time.time()
        await state.put_host_history(HostHistory(host, starttls_seen_at=now, updated_at=now))
        [second] = await agent.deliver(batch(domain.name))
        assert_tls_deferral(second)
        assert second.tls is not None and second.tls.stripping_suspected
        assert len(peer.messages()) == 1 and peer.stats().connections == 2
    finally:
        await pool.aclose()
