"""The FastAPI application factory: ``create_app(services)``. Every route gets what it uses
from the one ``Services`` of the process (``kakitome.services``); no globals, and no
route builds a service of its own."""

from __future__ import annotations

from fastapi import FastAPI

from kakitome.config import Settings
from kakitome.services import Services
from kakitome.web import (
    api,
    api_admin,
    api_campaigns,
    api_checker,
    api_domains,
    api_inbound,
    api_lists,
    api_settings,
    api_webhooks,
    public,
    tracking,
)
from kakitome.web.errors import install_error_handlers
from kakitome.web.limits import BodySizeLimit
from kakitome.web.ui import mount_ui


def body_limit(settings: Settings) -> int:
    """Largest request body read: a message base64-encoded (4/3) or JSON-escaped, with
    room for the other fields. Larger bodies get 413 before they are read."""
    return settings.delivery.max_message_size * 2 + 1024 * 1024


def create_app(services: Services) -> FastAPI:
    app = FastAPI(title="Kakitome", version="0.1.0", docs_url="/api/docs", redoc_url=None)
    app.state.services = services  # routes get it through kakitome.web.deps
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, limit=body_limit(services.settings))
    # Module-level routers, in this order (the first matching route wins).
    for module in (
        api,
        tracking,
        public,
        api_admin,
        api_domains,
        api_lists,
        api_campaigns,
        api_inbound,
        api_checker,
        api_settings,
        api_webhooks,
    ):
        app.include_router(module.router)
    mount_ui(app, services)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    return app
