"""The TLS-RPT reporting task of ``kakitome serve`` (worker role).

Talks to: the database (TLS-RPT counts, through ``TLSStore``), DNS (``_smtp._tls``
records), report destinations by HTTPS, and Kakitome's own injection path for mail
reports (DKIM-signed with the sending domains' keys when there are any, like every
message; the report's ``TLS-Required: No`` lets it travel even when TLS is what broke).

Runs ``TLSRPTReporter.run`` until ``stop``: once per ``settings.tlsrpt.interval`` it
reports every finished UTC day not yet reported; a failure is logged, never fatal.
"""

from __future__ import annotations

import asyncio
import time

from kakitome.config import Settings
from kakitome.dns.resolver import Resolver
from kakitome.injection import Injector
from kakitome.store.repository import Store
from kakitome.store.tls_store import TLSStore
from kakitome.tls.tlsrpt import TLSRPTReporter


async def tlsrpt_task(
    settings: Settings, store: Store, tls_store: TLSStore, resolver: Resolver, stop: asyncio.Event
) -> None:
    if not settings.tlsrpt.enabled:
        return
    from kakitome.domains.signing import DomainSigning

    signing = await DomainSigning.load(store, settings)
    injector = Injector(store, settings, signer=signing.sign, return_path=signing.return_path)

    async def submit(content: bytes, sender: str, recipients: list[str]) -> str:
        # "api" is the nearest existing injection source for a system-made message.
        return await injector.submit_raw(
            content, sender=sender, recipients=recipients, source="api"
        )

    reporter = TLSRPTReporter(settings, tls_store, resolver, submit, clock=time.time)
    await reporter.run(stop)


__all__ = ["tlsrpt_task"]
