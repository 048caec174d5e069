"""The worker-role task of campaigns and step mail, as ``kakitome serve`` starts it.

It runs the process's ``CampaignService`` (``kakitome.services``: its ``Injector`` signs
with the keys the process reloads and sets the VERP return path) until ``stop``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kakitome.services import Services

__all__ = ["campaign_task"]


async def campaign_task(services: Services, stop: asyncio.Event) -> None:
    """Send due campaigns and step mail until ``stop`` is set."""
    try:
        await services.campaigns.run(stop)
    finally:
        stop.set()
