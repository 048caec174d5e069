"""The TLS-RPT reporting task of ``kakitome serve`` (worker role).

Talks to: the database (TLS-RPT counts, through ``TLSStore``), DNS (``_smtp._tls``
records), report destinations by HTTPS, and Kakitome's own injection path for mail
reports: an ``Injector`` with ``DomainSigning``'s ``sign`` and ``return_path``, the
signer every outgoing message gets, so a report is DKIM-signed with its From domain's
keys (T27) or refused as any mail from an unconfigured domain is; the report's
``TLS-Required: No`` lets it travel even when TLS is what broke.

Runs ``TLSRPTReporter.run`` until ``stop``: once per ``settings.tlsrpt.interval`` it
reports every finished UTC day not yet reported; a failure is logged, never fatal. The
keys are reloaded every ``domains.signer_refresh`` seconds (``run_refresh``, as the
campaign task does): without it, a sending domain added after start went unseen until a
restart (its reports were refused round after round), and after a rotation the reports
kept the keys of the start.
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
    refresh = asyncio.create_task(signing.run_refresh(store, stop), name="tlsrpt-dkim-keys")
    try:
        await reporter.run(stop)
    finally:
        refresh.cancel()  # not stop.set(): that would stop the whole service
        await asyncio.gather(refresh, return_exceptions=True)


__all__ = ["tlsrpt_task"]
