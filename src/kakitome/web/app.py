"""The FastAPI application factory. Everything it uses is passed in; no globals."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import FastAPI

from kakitome.config import Settings
from kakitome.injection import Injector
from kakitome.store.repository import Store
from kakitome.web.api import api_router
from kakitome.web.api_admin import admin_api_router
from kakitome.web.api_campaigns import campaigns_api_router
from kakitome.web.api_checker import checker_api_router
from kakitome.web.api_domains import domains_api_router
from kakitome.web.api_inbound import inbound_api_router
from kakitome.web.api_lists import lists_api_router
from kakitome.web.api_settings import settings_api_router
from kakitome.web.api_webhooks import webhooks_api_router
from kakitome.web.errors import install_error_handlers
from kakitome.web.limits import BodySizeLimit
from kakitome.web.public import public_router
from kakitome.web.tracking import tracking_router
from kakitome.web.ui import mount_ui


def body_limit(settings: Settings) -> int:
    """Largest request body read: a message base64-encoded (4/3) or JSON-escaped, with
    room for the other fields. Larger bodies get 413 before they are read."""
    return settings.delivery.max_message_size * 2 + 1024 * 1024


def create_app(
    settings: Settings,
    store: Store,
    injector: Injector,
    *,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    app = FastAPI(title="Kakitome", version="0.1.0", docs_url="/api/docs", redoc_url=None)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, limit=body_limit(settings))
    app.include_router(api_router(store, injector, clock, settings))
    app.include_router(tracking_router(settings, store, clock))
    app.include_router(public_router(settings, store, injector, clock))
    app.include_router(admin_api_router(store, clock))
    app.include_router(domains_api_router(settings, store, clock))
    app.include_router(lists_api_router(settings, store, injector, clock))
    app.include_router(campaigns_api_router(settings, store, injector, clock))
    app.include_router(inbound_api_router(settings, store, clock))
    app.include_router(checker_api_router(settings, store, clock))
    app.include_router(settings_api_router(settings, store, clock))
    app.include_router(webhooks_api_router(store, clock))
    mount_ui(app, settings, store, clock=clock)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    return app
