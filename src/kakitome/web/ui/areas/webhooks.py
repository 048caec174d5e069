"""Webhooks (admins manage, everyone may look): endpoints and their delivery log.

An endpoint is a URL (http or https), the event types it wants and a signing secret made
here and shown once, on the page that created it. The log shows the last ``LOG_SIZE``
attempts: event, attempt number, HTTP status, response time, error. How a receiver checks
the signature is explained on the page (and in ``kakitome.webhooks.signing``).

Thin over ``kakitome.webhooks.store.WebhooksStore``; posting is the worker's
(``kakitome.webhooks.dispatcher``).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from kakitome.web.ui.context import UI, Viewer
from kakitome.web.ui.nav import NavItem, UIArea
from kakitome.webhooks.endpoints import valid_url
from kakitome.webhooks.events import EVENT_TYPES
from kakitome.webhooks.signing import HEADER
from kakitome.webhooks.store import WebhooksStore

LOG_SIZE = 50


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    need_viewer = Depends(ui.require("viewer"))
    need_admin = Depends(ui.require("admin"))

    def store() -> WebhooksStore:
        return ui.services.webhooks_store

    async def page(
        request: Request, viewer: Viewer, status: int = 200, **extra: object
    ) -> Response:
        hooks = store()
        endpoints = await hooks.list_endpoints()
        attempts = await hooks.attempts(limit=LOG_SIZE)
        urls = {e.id: e.url for e in endpoints}
        return ui.render(
            request,
            viewer,
            "webhooks/index.html",
            status,
            endpoints=endpoints,
            attempts=attempts,
            urls=urls,
            event_types=EVENT_TYPES,
            header=HEADER,
            **extra,
        )

    @r.get("/webhooks", include_in_schema=False)
    async def webhooks(request: Request, viewer: Viewer = need_viewer) -> Response:
        return await page(request, viewer)

    @r.post("/webhooks", include_in_schema=False)
    async def create(request: Request, viewer: Viewer = need_admin) -> Response:
        form = await ui.form(request, viewer)
        url = form.get("url").strip()
        kinds = [k for k in EVENT_TYPES if k in form.getlist("event")]
        if not valid_url(url) or not kinds:
            return await page(request, viewer, 422, error=viewer.t("webhooks.invalid"))
        endpoint = await store().create_endpoint(
            url, kinds, now=ui.clock(), description=form.get("description").strip()
        )
        return await page(
            request, viewer, 201, notice=viewer.t("webhooks.created"), new_endpoint=endpoint
        )

    @r.post("/webhooks/{endpoint_id}", include_in_schema=False)
    async def edit(request: Request, endpoint_id: int, viewer: Viewer = need_admin) -> Response:
        form = await ui.form(request, viewer)
        url = form.get("url").strip()
        kinds = [k for k in EVENT_TYPES if k in form.getlist("event")]
        if not valid_url(url) or not kinds:
            return await page(request, viewer, 422, error=viewer.t("webhooks.invalid"))
        await store().update_endpoint(endpoint_id, now=ui.clock(), url=url, event_types=kinds)
        return await page(request, viewer, notice=viewer.t("webhooks.saved"))

    @r.post("/webhooks/{endpoint_id}/enabled", include_in_schema=False)
    async def enable(request: Request, endpoint_id: int, viewer: Viewer = need_admin) -> Response:
        form = await ui.form(request, viewer)
        on = form.get("enabled") == "1"
        await store().update_endpoint(endpoint_id, now=ui.clock(), enabled=on)
        return ui.redirect("/ui/webhooks")

    @r.post("/webhooks/{endpoint_id}/remove", include_in_schema=False)
    async def remove(request: Request, endpoint_id: int, viewer: Viewer = need_admin) -> Response:
        await ui.form(request, viewer)
        await store().remove_endpoint(endpoint_id)
        return ui.redirect("/ui/webhooks")

    return r


AREA = UIArea(
    name="webhooks",
    router=router,
    nav=(NavItem("webhooks", "/ui/webhooks", "nav.webhooks", "viewer", 78),),
)
