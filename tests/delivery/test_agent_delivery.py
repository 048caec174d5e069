"""Tests: the delivery agent against the local internet — replies, MX handling, pooling."""

from __future__ import annotations

import asyncio

import pytest

from kakitome.delivery import agent as agent_module
from kakitome.delivery.types import Outcome
from kakitome.testing import Fault, LocalInternet, PeerBehaviour
from tests.delivery.conftest import AgentFactory, batch
from tests.fixtures_world import MakeDomain


async def test_4xx_defers_and_5xx_bounces(
    make_agent: AgentFactory, make_domain: MakeDomain
) -> None:
    """Reply mapping: 4xx at RCPT defers, 5xx bounces, per recipient, others delivered."""
    domain, peer = make_domain()
    peer.set_behaviour(
        PeerBehaviour(
            rcpt_fault=Fault(
                "550 5.1.1 no such user", recipients=frozenset({f"gone@{domain.name}"})
            )
        )
    )
    agent = make_agent()
    results = await agent.deliver(batch(domain.name, "bob", "gone"))
    assert [r.outcome for r in results] == [Outcome.DELIVERED, Outcome.BOUNCED]
    assert results[1].reply.code == 550 and results[1].reply.enhanced == "5.1.1"
    peer.set_behaviour(PeerBehaviour(rcpt_fault=Fault("450 4.2.0 mailbox busy")))
    [result] = await agent.deliver(batch(domain.name))
    assert result.outcome is Outcome.DEFERRED and result.reply.code == 450


async def test_data_failure_applies_to_accepted_recipients(
    make_agent: AgentFactory, make_domain: MakeDomain
) -> None:
    """RCPT accepted but end of DATA refused: those recipients take the DATA reply."""
    domain, _ = make_domain(PeerBehaviour(data_fault=Fault("554 5.6.0 content rejected")))
    results = await make_agent().deliver(batch(domain.name, "a", "b"))
    assert {r.outcome for r in results} == {Outcome.BOUNCED}
    assert all(r.reply.enhanced == "5.6.0" for r in results)


async def test_mail_from_failure_defers_everyone(
    make_agent: AgentFactory, make_domain: MakeDomain
) -> None:
    """A 4xx to MAIL FROM defers every recipient of the transaction with that reply."""
    domain, _ = make_domain(PeerBehaviour(mail_fault=Fault("451 4.3.0 try later", times=1)))
    results = await make_agent().deliver(batch(domain.name, "a", "b"))
    assert [r.outcome for r in results] == [Outcome.DEFERRED, Outcome.DEFERRED]
    assert results[0].reply.code == 451


async def test_null_mx_bounces_with_556(make_agent: AgentFactory, world: LocalInternet) -> None:
    """T36: a null MX bounces every recipient at once with 556 5.1.10."""
    name = world.unique_domain("null")
    world.add_domain(name, null_mx=True)
    results = await make_agent().deliver(batch(name, "a", "b", messages=2))
    assert len(results) == 4
    assert all(r.outcome is Outcome.BOUNCED for r in results)
    assert all((r.reply.code, r.reply.enhanced) == (556, "5.1.10") for r in results)
    world.remove_domain(name)


async def test_no_mx_uses_the_domain_address(
    make_agent: AgentFactory, world: LocalInternet, fresh_peer: object
) -> None:
    """T36: a domain without MX records gets mail at its own A record (implicit MX)."""
    peer = world.add_peer()
    name = world.unique_domain("implicit")
    world.add_domain(name, implicit=peer)
    try:
        [result] = await make_agent().deliver(batch(name))
        assert result.outcome is Outcome.DELIVERED, result.reply
        assert result.mx is not None and result.mx.host == name
        assert result.tls is not None and result.tls.verified
        assert len(peer.messages()) == 1
    finally:
        world.remove_domain(name)
        world.remove_peer(peer)


async def test_nonexistent_domain_bounces(make_agent: AgentFactory, world: LocalInternet) -> None:
    """NXDOMAIN is permanent: bounced with 5.1.2."""
    [result] = await make_agent().deliver(batch(world.unique_domain("nx")))
    assert result.outcome is Outcome.BOUNCED and result.reply.enhanced == "5.1.2"


async def test_servfail_defers(make_agent: AgentFactory, world: LocalInternet) -> None:
    """A DNS SERVFAIL is temporary: deferred with 4.4.3."""
    name = world.unique_domain("servfail")
    world.dns.set_rcode(name, "SERVFAIL")
    try:
        [result] = await make_agent(DNS__TIMEOUT="2").deliver(batch(name))
        assert result.outcome is Outcome.DEFERRED and result.reply.enhanced == "4.4.3"
    finally:
        world.dns.set_rcode(name, None)


async def test_first_mx_down_second_mx_takes_it(
    make_agent: AgentFactory, world: LocalInternet
) -> None:
    """A refused connection to the preferred MX moves on to the next one."""
    down = world.add_peer(behaviour=PeerBehaviour(down=True))
    up = world.add_peer()
    name = world.unique_domain("backup")
    world.add_domain(name, mx=[(10, down), (20, up)])
    try:
        [result] = await make_agent().deliver(batch(name))
        assert result.outcome is Outcome.DELIVERED, result.reply
        assert result.mx is not None and result.mx.ip == up.ip
        assert result.tls is not None and result.tls.verified
        assert len(up.messages()) == 1
    finally:
        world.remove_domain(name)
        world.remove_peer(down)
        world.remove_peer(up)


async def test_all_mx_unreachable_defers_441(
    make_agent: AgentFactory, make_domain: MakeDomain
) -> None:
    """Every MX refusing connections defers every recipient with 4.4.1."""
    domain, _ = make_domain(PeerBehaviour(down=True))
    results = await make_agent().deliver(batch(domain.name, "a", "b", messages=3))
    assert len(results) == 6
    assert all(r.outcome is Outcome.DEFERRED and r.reply.enhanced == "4.4.1" for r in results)


async def test_drop_in_data_defers(make_agent: AgentFactory, make_domain: MakeDomain) -> None:
    """A connection dropped in the middle of DATA defers with 4.4.2 (never resent blindly)."""
    domain, peer = make_domain(PeerBehaviour(drop_in_data=1))
    [result] = await make_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DEFERRED and result.reply.enhanced == "4.4.2"
    assert peer.messages() == []
    assert peer.stats().drops == 1


async def test_greeting_refusal_tries_next_and_defers(
    make_agent: AgentFactory, make_domain: MakeDomain
) -> None:
    """A 554 greeting is not a verdict on the recipients: deferred."""
    domain, _ = make_domain(PeerBehaviour(greeting_fault=Fault("554 5.3.2 go away")))
    [result] = await make_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DEFERRED


async def test_pipelining_sends_one_group(
    make_agent: AgentFactory, make_domain: MakeDomain
) -> None:
    """RFC 2920: MAIL, every RCPT and DATA are answered in one write by the peer."""
    domain, peer = make_domain()
    results = await make_agent().deliver(batch(domain.name, "a", "b", "c"))
    assert all(r.outcome is Outcome.DELIVERED for r in results)
    assert peer.stats().max_pipeline >= 5  # MAIL + 3 RCPT + DATA
    [message] = peer.messages()
    assert len(message.rcpt_tos) == 3


async def test_without_pipelining_commands_go_one_by_one(
    make_agent: AgentFactory, make_domain: MakeDomain
) -> None:
    """A server without PIPELINING gets one command at a time and still gets the mail."""
    domain, peer = make_domain(PeerBehaviour(pipelining=False))
    results = await make_agent().deliver(batch(domain.name, "a", "b"))
    assert all(r.outcome is Outcome.DELIVERED for r in results)
    assert peer.stats().max_pipeline == 1


async def test_ehlo_after_starttls_and_capabilities_forgotten(
    make_agent: AgentFactory, make_domain: MakeDomain
) -> None:
    """T1: after STARTTLS the client sends EHLO again before anything else."""
    domain, peer = make_domain()
    await make_agent().deliver(batch(domain.name))
    commands = [c.split(" ")[0].upper() for c in peer.connections()[0].commands]
    index = commands.index("STARTTLS")
    assert commands[index + 1] == "EHLO"
    assert commands[:index].count("EHLO") == 1


async def test_connections_are_reused_across_batches(
    make_agent: AgentFactory, make_domain: MakeDomain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pooling: batches to the same destination reuse one TLS connection; one back from
    the pool at once is used as it is, one that sat there longer than PROBE_AFTER_IDLE is
    probed with RSET first."""
    domain, peer = make_domain()
    agent = make_agent()
    results = await agent.deliver(batch(domain.name, messages=2))
    opened = peer.stats().connections
    for _ in range(3):
        results += await agent.deliver(batch(domain.name, messages=2))
    assert all(r.outcome is Outcome.DELIVERED for r in results)
    assert peer.stats().connections == opened <= 2
    assert peer.stats().messages == 8
    commands = [c.upper() for conn in peer.connections() for c in conn.commands]
    assert "RSET" not in commands
    monkeypatch.setattr(agent_module, "PROBE_AFTER_IDLE", 0.0)
    results = await agent.deliver(batch(domain.name, messages=2))
    assert all(r.outcome is Outcome.DELIVERED for r in results)
    assert peer.stats().connections == opened
    commands = [c.upper() for conn in peer.connections() for c in conn.commands]
    assert "RSET" in commands


async def test_messages_per_connection_is_bounded(
    make_agent: AgentFactory, make_domain: MakeDomain
) -> None:
    """Pooling: no connection carries more than messages_per_connection messages, and the
    reconnection resumes the TLS session."""
    domain, peer = make_domain()
    agent = make_agent(
        DELIVERY__MESSAGES_PER_CONNECTION="2", DELIVERY__PER_DESTINATION_CONCURRENCY="1"
    )
    results = await agent.deliver(batch(domain.name, messages=5))
    assert all(r.outcome is Outcome.DELIVERED for r in results)
    assert peer.stats().connections == 3
    assert max(c.messages for c in peer.connections()) == 2
    assert agent.pool.stats.sessions_resumed == 2


async def test_dead_pooled_connection_is_replaced(
    make_agent: AgentFactory, make_domain: MakeDomain, world: LocalInternet
) -> None:
    """Pooling: a pooled connection the peer closed is replaced transparently."""
    domain, peer = make_domain()
    agent = make_agent()
    [first] = await agent.deliver(batch(domain.name))
    assert first.outcome is Outcome.DELIVERED
    # The peer restarts: every open connection is cut.
    peer.set_behaviour(PeerBehaviour(down=True))
    peer.set_behaviour(PeerBehaviour())
    [second] = await agent.deliver(batch(domain.name))
    assert second.outcome is Outcome.DELIVERED, second.reply
    assert peer.stats().connections == 2


async def test_messages_of_a_batch_go_over_several_connections(
    make_agent: AgentFactory, make_domain: MakeDomain
) -> None:
    """Concurrency: a big batch spreads over up to per_destination_concurrency connections."""
    domain, peer = make_domain()
    agent = make_agent(DELIVERY__PER_DESTINATION_CONCURRENCY="4")
    results = await agent.deliver(batch(domain.name, messages=40))
    assert len(results) == 40 and all(r.outcome is Outcome.DELIVERED for r in results)
    assert 1 < peer.stats().connections <= 4


async def test_idle_connections_are_closed(
    make_agent: AgentFactory, make_domain: MakeDomain
) -> None:
    """Pooling: a connection idle longer than idle_timeout is closed with QUIT."""
    domain, peer = make_domain()
    agent = make_agent(DELIVERY__IDLE_TIMEOUT="0.2")
    await agent.deliver(batch(domain.name))
    async with asyncio.timeout(5):
        while not all(c.closed for c in peer.connections()):  # noqa: ASYNC110 - peer thread
            await asyncio.sleep(0.05)
    assert "QUIT" in [c.upper() for c in peer.connections()[0].commands]
    assert agent.pool.idle_count() == 0
