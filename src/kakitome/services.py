"""The one wiring: every service of a process, built once, in one place, and passed down.

``open_services(settings)`` opens the database, applies the run-time settings overlay,
loads the DKIM keys and builds everything else from them; ``build_services`` does the
building for a store that is already open. Nothing else constructs a service or a store
class: ``kakitome serve`` (``runtime.py``) starts roles over one ``Services``; the HTTP
app, the admin UI, the public pages, the MX and submission listeners, the worker, the
campaign runner, the TLS-RPT sender and every CLI command take it.

Why: the first version built its services where they were used, each wired its own way,
and the admin UI's lists area built an injector without the DKIM signer and VERP return
path, so double opt-in confirmations queued from the UI went out unsigned while the same
action through the API was signed. With one ``Injector`` here, every producer of mail (API,
SMTP submission, campaigns, confirmation and notification mails, bounce notices, TLS-RPT
reports) signs the same way; ``tests/test_services.py`` lists them and checks each.

The database handle (``Services.store``, a ``kakitome.store.database.Database``) holds the
one in-process write lock the SQLite writers serialise on, and the wake-ups; every store
class is built over it here (``queue``: ``QueueStore``, ``api_keys``: ``ApiKeyStore``, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kakitome.accounts.api_keys import ApiKeyStore
from kakitome.accounts.store import WebStore
from kakitome.campaigns.service import CampaignService
from kakitome.config import Settings
from kakitome.domains.service import DomainService
from kakitome.domains.signing import DomainSigning
from kakitome.errors import StorageError
from kakitome.inbound.store import InboundStore
from kakitome.injection import Injector
from kakitome.lists.import_jobs_store import ImportJobStore
from kakitome.lists.service import ListService
from kakitome.queue.store import QueueStore
from kakitome.settings_overlay import LiveSettings
from kakitome.store.database import Database
from kakitome.store.settings_store import SettingsStore
from kakitome.suppression import Thresholds
from kakitome.tls.store import TLSStore
from kakitome.webhooks.store import WebhooksStore

__all__ = ["Services", "build_services", "open_services"]

Clock = Callable[[], float]

# The worker reads one MX host history per host for every batch it plans; its TLS state
# keeps a copy a few seconds to spare those reads (another process's writes are seen when
# it expires). Readers that show the state (UI, API, CLI) use ``tls_store``, uncached.
TLS_HISTORY_TTL = 30.0


@dataclass
class Services:
    """What a process runs on. ``settings`` are the effective settings at start (file,
    environment and the database overlay); ``live`` follows the overlay while it runs;
    ``base`` is what came from file and environment (children are started with it)."""

    settings: Settings
    base: Settings
    # The database handle (engine, transactions, wake-ups) every store is built on.
    store: Database
    # The queue (inject, claim, record, receipts, queue actions) and the API keys.
    queue: QueueStore
    api_keys: ApiKeyStore
    live: LiveSettings
    clock: Clock
    signing: DomainSigning | None
    injector: Injector
    domains: DomainService
    lists: ListService
    campaigns: CampaignService
    inbound_store: InboundStore
    import_jobs: ImportJobStore
    tls_store: TLSStore
    delivery_tls_state: TLSStore
    web_store: WebStore
    webhooks_store: WebhooksStore
    settings_store: SettingsStore
    _owns_store: bool = field(default=False, repr=False)

    async def run_refresh(self, stop: asyncio.Event) -> None:
        """Reload the DKIM keys (``domains.signer_refresh``) until ``stop``: a domain added
        or a rotation finished by another process signs here within that time."""
        if self.signing is not None:
            await self.signing.run_refresh(self.store, stop)

    async def close(self) -> None:
        """Close the database if ``open_services`` opened it."""
        if self._owns_store:
            await self.store.close()


def build_services(
    settings: Settings,
    store: Database,
    *,
    signing: DomainSigning | None,
    live: LiveSettings | None = None,
    base: Settings | None = None,
    clock: Clock = time.time,
    settings_store: SettingsStore | None = None,
    owns_store: bool = False,
) -> Services:
    """Build every service over an open database (``store``).

    ``signing`` is the loaded DKIM signer (``DomainSigning.load``); ``None`` builds an
    injector that signs nothing and keeps the envelope sender as given — only tests and
    tools that send no mail pass it (``open_services`` always loads the keys).
    """
    settings_store = settings_store or SettingsStore(store.engine)
    live = live or LiveSettings(settings, settings_store)
    queue = QueueStore(store)
    injector = Injector(
        queue,
        settings,
        clock,
        signer=signing.sign if signing is not None else None,
        return_path=signing.return_path if signing is not None else None,
        notice_signer=signing.sign_notice if signing is not None else None,
    )
    lists = ListService(store, settings, injector=injector, clock=clock)
    return Services(
        settings=settings,
        base=base or settings,
        store=store,
        queue=queue,
        api_keys=ApiKeyStore(store),
        live=live,
        clock=clock,
        signing=signing,
        injector=injector,
        domains=DomainService(store, settings, clock=clock),
        lists=lists,
        campaigns=CampaignService(store, settings, lists, injector, clock=clock),
        import_jobs=ImportJobStore(store.engine),
        inbound_store=InboundStore(store.engine, Thresholds.from_settings(settings.inbound)),
        tls_store=TLSStore(store.engine),
        delivery_tls_state=TLSStore(store.engine, history_ttl=TLS_HISTORY_TTL),
        web_store=WebStore(store.engine),
        webhooks_store=WebhooksStore(store.engine),
        settings_store=settings_store,
        _owns_store=owns_store,
    )


async def open_services(
    settings: Settings,
    roles: Sequence[str] = (),
    *,
    clock: Clock = time.time,
    store: Database | None = None,
) -> Services:
    """Open the database (unless ``store`` is given), apply the settings overlay, load the
    DKIM keys and build every service. ``roles`` is what the process will run (``serve``);
    every service is cheap to build, so all are built whatever the roles.

    A database that cannot be read for the overlay keeps the file's settings (``serve``
    re-reads it every few seconds); one that cannot be opened raises ``StorageError``.
    """
    del roles  # every role runs on the same services; kept for the call sites' clarity
    owns = store is None
    if store is None:
        store = await Database.open(settings.database.url, pool_size=settings.database.pool_size)
    try:
        settings_store = SettingsStore(store.engine)
        live = LiveSettings(settings, settings_store)
        with contextlib.suppress(StorageError):
            await live.refresh()
        current = live.current
        signing = await DomainSigning.load(store, current, clock=clock)
        return build_services(
            current,
            store,
            signing=signing,
            live=live,
            base=settings,
            clock=clock,
            settings_store=settings_store,
            owns_store=owns,
        )
    except BaseException:
        if owns:
            await store.close()
        raise
