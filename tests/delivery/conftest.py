"""Helpers for delivery tests: an agent wired to the local internet, and batches."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from kakitome.delivery.agent import DeliveryAgent
from kakitome.delivery.pool import ConnectionPool
from kakitome.delivery.types import Batch, OutboundMessage, Recipient
from kakitome.dns.resolver import Resolver
from kakitome.testing import LocalInternet

_ids = itertools.count(1)

AgentFactory = Callable[..., DeliveryAgent]


def batch(domain: str, *locals_: str, messages: int = 1, content: bytes | None = None) -> Batch:
    """A batch of ``messages`` messages, each to every ``local@domain``."""
    body = content or b"From: a@sender.test\r\nSubject: hi\r\n\r\nhello\r\n"
    return Batch(
        domain,
        tuple(
            OutboundMessage(
                message_id=f"m{next(_ids)}",
                sender="bounce@sender.test",
                recipients=tuple(
                    Recipient(next(_ids), f"{local}@{domain}") for local in locals_ or ("bob",)
                ),
                content=body,
            )
            for _ in range(messages)
        ),
    )


@pytest.fixture
async def make_agent(world: LocalInternet) -> AsyncIterator[AgentFactory]:
    """``make_agent(**env)``: a DeliveryAgent on the world; ``env`` keys are settings
    overrides such as ``TLS__DEFAULT_LEVEL="verify"`` (prefix KAKITOME_ added)."""
    pools: list[ConnectionPool] = []

    def make(**env: Any) -> DeliveryAgent:
        extra = {f"KAKITOME_{k}": str(v) for k, v in env.items()}
        settings = world.settings(extra)
        pool = ConnectionPool(settings)
        pools.append(pool)
        return DeliveryAgent(settings, Resolver(settings), pool)

    yield make
    for pool in pools:
        await pool.aclose()
