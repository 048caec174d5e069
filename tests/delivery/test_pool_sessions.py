"""Tests: the pool reads a connection's TLS session once, and resumption keeps working."""

from __future__ import annotations

import ssl

import pytest

from kakitome.delivery.types import Outcome
from kakitome.smtp.stream import SMTPStream
from tests.delivery.conftest import AgentFactory, batch
from tests.fixtures_world import MakeDomain


@pytest.fixture
def session_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts reads of ``SMTPStream.tls_session`` (one entry per read)."""
    reads: list[int] = []
    original = SMTPStream.tls_session

    def counted(stream: SMTPStream) -> ssl.SSLSession | None:
        reads.append(1)
        return original.fget(stream)  # type: ignore[attr-defined, no-any-return]

    monkeypatch.setattr(SMTPStream, "tls_session", property(counted))
    return reads


async def test_session_read_once_per_connection(
    make_agent: AgentFactory, make_domain: MakeDomain, session_reads: list[int]
) -> None:
    """A connection reused for many batches has its TLS session read once, not per
    release; later connections resume it."""
    domain, peer = make_domain()
    agent = make_agent(DELIVERY__PER_DESTINATION_CONCURRENCY="1")
    for _ in range(5):
        [result] = await agent.deliver(batch(domain.name))
        assert result.outcome is Outcome.DELIVERED
    assert peer.stats().connections == 1
    assert len(session_reads) == 1


async def test_resumed_connections_skip_the_read(
    make_agent: AgentFactory, make_domain: MakeDomain, session_reads: list[int]
) -> None:
    """Connections that resumed the saved (fresh) session do not read their own."""
    domain, peer = make_domain()
    agent = make_agent(
        DELIVERY__MESSAGES_PER_CONNECTION="1", DELIVERY__PER_DESTINATION_CONCURRENCY="1"
    )
    results = await agent.deliver(batch(domain.name, messages=4))
    assert all(r.outcome is Outcome.DELIVERED for r in results)
    assert peer.stats().connections == 4
    assert agent.pool.stats.sessions_resumed == 3
    assert len(session_reads) == 1
