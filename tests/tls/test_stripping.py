"""Tests: STARTTLS-stripping detection from per-host TLS history."""

from __future__ import annotations

from kakitome.delivery.types import Outcome
from kakitome.store.database import Database
from kakitome.testing import CertKind, PeerBehaviour
from kakitome.tls.policy import PolicySource
from kakitome.tls.state import MemoryTLSState
from kakitome.tls.store import TLSStore
from tests.delivery.conftest import batch
from tests.fixtures_world import MakeDomain
from tests.tls.conftest import TLSAgentFactory


async def test_host_that_stops_offering_starttls_is_deferred(
    make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """Stripping: a host that offered STARTTLS and then stops is deferred (4.7.4), the
    receipt marks it and an event is recorded."""
    domain, peer = make_domain()
    state = MemoryTLSState()
    agent = tls_agent(state)
    [first] = await agent.deliver(batch(domain.name))
    assert first.outcome is Outcome.DELIVERED and first.tls is not None and first.tls.used
    peer.set_behaviour(PeerBehaviour(starttls=False))
    [second] = await agent.deliver(batch(domain.name))
    assert second.outcome is Outcome.DEFERRED and second.reply.enhanced == "4.7.4"
    assert second.tls is not None and second.tls.stripping_suspected
    assert second.tls.policy_source is PolicySource.HISTORY
    assert len(peer.messages()) == 1
    [(kind, data, _)] = state.events
    assert kind == "tls-stripping-suspected" and data["mx_host"] == domain.mx[0][1]


async def test_stripping_without_defer_marks_receipt(
    make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """Stripping: with stripping.defer off the message goes in plaintext, marked."""
    domain, peer = make_domain()
    state = MemoryTLSState()
    agent = tls_agent(state, STRIPPING__DEFER="false")
    await agent.deliver(batch(domain.name))
    peer.set_behaviour(PeerBehaviour(starttls=False))
    [second] = await agent.deliver(batch(domain.name))
    assert second.outcome is Outcome.DELIVERED
    assert second.tls is not None and not second.tls.used and second.tls.stripping_suspected
    assert len(state.events) == 1


async def test_history_expires_after_the_window(
    make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """Stripping: after stripping.window without STARTTLS, plaintext is allowed again."""
    domain, peer = make_domain()
    state = MemoryTLSState()
    now = [1_000_000.0]
    agent = tls_agent(state, clock=lambda: now[0], STRIPPING__WINDOW="100")
    await agent.deliver(batch(domain.name))
    peer.set_behaviour(PeerBehaviour(starttls=False))
    now[0] += 101
    [second] = await agent.deliver(batch(domain.name))
    assert second.outcome is Outcome.DELIVERED and second.tls is not None
    assert second.tls.stripping_suspected is None


async def test_verified_certificate_replaced_by_bad_one_is_deferred(
    make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """Stripping: a host that showed a verified certificate and now shows a different
    one that does not verify is deferred (interception), with an event."""
    domain, peer = make_domain()
    state = MemoryTLSState()
    agent = tls_agent(state)
    await agent.deliver(batch(domain.name))
    peer.set_behaviour(PeerBehaviour(cert=CertKind.SELF_SIGNED))
    [second] = await agent.deliver(batch(domain.name))
    assert second.outcome is Outcome.DEFERRED and second.reply.enhanced == "4.7.5"
    assert second.tls is not None and second.tls.stripping_suspected
    assert len(peer.messages()) == 1
    assert [e[0] for e in state.events] == ["tls-stripping-suspected"]


async def test_history_is_persisted(
    make_domain: MakeDomain, tls_agent: TLSAgentFactory, database_url: str
) -> None:
    """Stripping: the history and the event are in the database (a restart keeps them)."""
    domain, peer = make_domain()
    store = await Database.open(database_url)
    try:
        await tls_agent(TLSStore(store.engine)).deliver(batch(domain.name))
    finally:
        await store.close()
    peer.set_behaviour(PeerBehaviour(starttls=False))
    store = await Database.open(database_url)
    try:
        tls_store = TLSStore(store.engine)
        [result] = await tls_agent(tls_store).deliver(batch(domain.name))
        assert result.outcome is Outcome.DEFERRED
        events = await tls_store.tls_events("tls-stripping-suspected")
        assert any(e["data"]["mx_host"] == domain.mx[0][1] for e in events)
    finally:
        await store.close()


async def test_history_cache_writes_through_and_expires(
    make_domain: MakeDomain, tls_agent: TLSAgentFactory, store: Database
) -> None:
    """The worker's TLSStore keeps host histories for a while: its own writes are seen at
    once (stripping is still caught on the next batch); another process's writes when the
    copy expires."""
    import asyncio

    from kakitome.tls.history import HostHistory

    domain, peer = make_domain()
    cached = TLSStore(store.engine, history_ttl=0.5)
    await tls_agent(cached).deliver(batch(domain.name))  # STARTTLS seen, remembered
    peer.set_behaviour(PeerBehaviour(starttls=False))
    [result] = await tls_agent(cached).deliver(batch(domain.name))
    assert result.outcome is Outcome.DEFERRED

    host = "mx.elsewhere.test"
    assert await cached.get_host_history(host) is None  # kept: None
    other = TLSStore(store.engine)  # another process
    await other.put_host_history(HostHistory(host, starttls_seen_at=1.0, updated_at=1.0))
    assert await cached.get_host_history(host) is None
    await asyncio.sleep(0.6)
    seen = await cached.get_host_history(host)
    assert seen is not None and seen.starttls_seen_at == 1.0
