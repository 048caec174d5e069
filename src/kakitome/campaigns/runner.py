"""The worker-role task of campaigns and step mail, as ``kakitome serve`` starts it.

It builds what sending needs in the worker process: the DKIM signing keys (reloaded every
``domains.signer_refresh`` seconds), an ``Injector`` that signs and sets the VERP return
path, the ``ListService`` and the ``CampaignService``; then runs passes until ``stop``.
"""

from __future__ import annotations

import asyncio

from kakitome.campaigns.service import CampaignService
from kakitome.config import Settings
from kakitome.domains.signing import DomainSigning
from kakitome.injection import Injector
from kakitome.lists.service import ListService
from kakitome.store.repository import Store

__all__ = ["campaign_task"]


async def campaign_task(store: Store, settings: Settings, stop: asyncio.Event) -> None:
    """Send due campaigns and step mail until ``stop`` is set."""
    signing = await DomainSigning.load(store, settings)
    injector = Injector(store, settings, signer=signing.sign, return_path=signing.return_path)
    lists = ListService(store, settings, injector=injector)
    service = CampaignService(store, settings, lists, injector)
    refresh = asyncio.create_task(signing.run_refresh(store, stop), name="campaign-dkim-keys")
    try:
        await service.run(stop)
    finally:
        stop.set()
        await asyncio.gather(refresh, return_exceptions=True)
