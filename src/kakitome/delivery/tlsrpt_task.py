"""The TLS-RPT reporting task of ``kakitome serve`` (worker role).

Talks to: the database (TLS-RPT counts, through the process's ``TLSStore``), DNS
(``_smtp._tls`` records), report destinations by HTTPS, and Kakitome's own injection path
for mail reports: the process's one ``Injector`` (``kakitome.services``), whose signer
every outgoing message gets, so a report is DKIM-signed with its From domain's keys (T27)
or refused as any mail from an unconfigured domain is; the report's ``TLS-Required: No``
lets it travel even when TLS is what broke.

Runs ``TLSRPTReporter.run`` until ``stop``: once per ``settings.tlsrpt.interval`` it
reports every finished UTC day not yet reported; a failure is logged, never fatal. The
keys are those the process reloads every ``domains.signer_refresh`` seconds
(``Services.run_refresh``): a sending domain added after start signs its reports within
that time, and after a rotation the new keys sign them.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from kakitome.dns.resolver import Resolver
from kakitome.tls.tlsrpt import TLSRPTReporter

if TYPE_CHECKING:
    from kakitome.services import Services


async def tlsrpt_task(services: Services, resolver: Resolver, stop: asyncio.Event) -> None:
    settings = services.settings
    if not settings.tlsrpt.enabled:
        return
    injector = services.injector

    async def submit(content: bytes, sender: str, recipients: list[str]) -> str:
        # "api" is the nearest existing injection source for a system-made message.
        return await injector.submit_raw(
            content, sender=sender, recipients=recipients, source="api"
        )

    reporter = TLSRPTReporter(settings, services.tls_store, resolver, submit, clock=time.time)
    await reporter.run(stop)


__all__ = ["tlsrpt_task"]
