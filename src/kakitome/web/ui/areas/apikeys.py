"""API keys: list, create (the key is shown once, on the page that created it), revoke.

Senders may make and revoke keys with the ``send`` and ``read`` scopes; keys with the
``admin`` scope are for admins only.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from kakitome.web.auth import SCOPES
from kakitome.web.ui.context import UI, Forbidden, Viewer
from kakitome.web.ui.nav import NavItem, UIArea


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    need_sender = Depends(ui.require("sender"))

    async def page(
        request: Request, viewer: Viewer, status: int = 200, **extra: object
    ) -> Response:
        keys = await ui.services.api_keys.list_api_keys()
        return ui.render(
            request, viewer, "apikeys/index.html", status, keys=keys, scopes=SCOPES, **extra
        )

    @r.get("/api-keys", include_in_schema=False)
    async def api_keys(request: Request, viewer: Viewer = need_sender) -> Response:
        return await page(request, viewer)

    @r.post("/api-keys", include_in_schema=False)
    async def create(request: Request, viewer: Viewer = need_sender) -> Response:
        form = await ui.form(request, viewer)
        name = form.get("name").strip()[:200]
        scopes = [s for s in SCOPES if s in form.getlist("scope")]
        if "admin" in scopes and not viewer.can("admin"):
            raise Forbidden(viewer.t("error.role", role=viewer.t("role.admin")))
        if not name or not scopes:
            return await page(request, viewer, 422, error=viewer.t("apikeys.invalid"))
        key = await ui.services.api_keys.create_api_key(name, scopes, now=ui.clock())
        return await page(request, viewer, 201, new_key=key, new_name=name)

    @r.post("/api-keys/{key_id}/revoke", include_in_schema=False)
    async def revoke(request: Request, key_id: int, viewer: Viewer = need_sender) -> Response:
        await ui.form(request, viewer)
        target = next(
            (k for k in await ui.services.api_keys.list_api_keys() if k.id == key_id), None
        )
        if target is not None and "admin" in target.scopes and not viewer.can("admin"):
            raise Forbidden(viewer.t("error.role", role=viewer.t("role.admin")))
        await ui.services.api_keys.revoke_api_key(key_id, now=ui.clock())
        return ui.redirect("/ui/api-keys")

    return r


AREA = UIArea(
    name="apikeys",
    router=router,
    nav=(NavItem("apikeys", "/ui/api-keys", "nav.apikeys", "sender", 80),),
)
