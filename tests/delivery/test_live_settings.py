"""The delivery agent of a running process follows settings changed in the database."""

from __future__ import annotations

from kakitome.delivery.types import Outcome
from kakitome.runtime import follow_settings
from kakitome.settings_overlay import LiveSettings
from kakitome.store.database import Database
from kakitome.store.settings_store import SettingsStore
from kakitome.testing import PeerBehaviour
from tests.delivery.conftest import AgentFactory, batch
from tests.fixtures_world import MakeDomain


async def test_tls_policy_changed_in_the_database_applies_to_the_next_batch(
    make_agent: AgentFactory, make_domain: MakeDomain, store: Database
) -> None:
    """A server without STARTTLS gets plaintext under the default level ``may``; once the
    overlay's tls.policy says ``encrypt`` for its domain, the same agent defers (4.7.x)
    without being made again, and a reset lets mail through again."""
    domain, peer = make_domain(PeerBehaviour(starttls=False))
    agent = make_agent()
    overlay = SettingsStore(store.engine)
    live = LiveSettings(agent.settings, overlay)
    live.subscribe(follow_settings(agent))
    await live.refresh()
    [first] = await agent.deliver(batch(domain.name))
    assert first.outcome is Outcome.DELIVERED

    await overlay.change({"tls.policy": {domain.name: "encrypt"}}, now=1)
    assert await live.refresh()
    [second] = await agent.deliver(batch(domain.name))
    assert second.outcome is Outcome.DEFERRED
    assert second.reply.enhanced is not None and second.reply.enhanced.startswith("4.7.")
    assert len(peer.messages()) == 1

    await overlay.change({}, ["tls.policy"], now=2)
    assert await live.refresh()
    [third] = await agent.deliver(batch(domain.name))
    assert third.outcome is Outcome.DELIVERED
    assert len(peer.messages()) == 2
