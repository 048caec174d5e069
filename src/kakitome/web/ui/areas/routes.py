"""Inbound routes: everyone may look; admins add, edit, delete and reorder them.

Routes are the setting ``inbound.routes`` (first match wins). A change here is stored in
the settings overlay (``kakitome.settings_overlay``): it wins over the settings file, and
the MX takes it for the next message within a few seconds, without a restart. When the
environment sets ``KAKITOME_INBOUND__ROUTES`` that wins, and the page is read-only.

Every change is made to the whole list and checked by the settings models before anything
is stored (a forward route needs an http(s) URL; a bad match is refused; 422 with the
problems in the viewer's language). Each form carries the list's ``version`` (a digest of
it): a change made to a list that someone else has changed meanwhile is refused (409)
instead of editing the wrong row. Secrets are never shown: an empty secret field keeps the
route's secret, "remove the secret" clears it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from kakitome.settings_overlay import (
    ROUTES,
    SettingsInvalid,
    apply_overlay,
    describe,
    plain,
    validate_changes,
)
from kakitome.web.ui.areas.settings import by, problem_text
from kakitome.web.ui.context import UI, Form, Viewer
from kakitome.web.ui.nav import NavItem, UIArea

ACTIONS = ("forward", "hold", "reject")

EXAMPLE = """[[inbound.routes]]
match = "support@example.com"
action = "forward"
url = "https://app.example.com/inbound"
secret = "a long random string"

[[inbound.routes]]
match = "*"
action = "hold"
"""


def version_of(routes: list[dict[str, Any]]) -> str:
    """A digest of the routes (secrets included, never shown): the list a form was made from."""
    data = json.dumps(routes, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(data).hexdigest()[:20]


def route_from(form: Form, old: dict[str, Any] | None) -> dict[str, Any]:
    """A route from the add or edit form; an empty secret keeps ``old``'s."""
    route: dict[str, Any] = {
        "match": form.get("match").strip(),
        "action": form.get("action").strip(),
        "url": form.get("url").strip() or None,
    }
    secret = form.get("secret")
    if secret:
        route["secret"] = secret
    elif old is not None and form.get("remove_secret") != "1":
        route["secret"] = old.get("secret")
    else:
        route["secret"] = None
    return route


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    need_viewer = Depends(ui.require("viewer"))
    need_admin = Depends(ui.require("admin"))
    overlay = ui.services.settings_store

    async def current() -> tuple[list[dict[str, Any]], Any, bool, str]:
        """(routes as plain data, inbound settings, editable here, source)."""
        entries = await overlay.entries()
        effective = apply_overlay(ui.settings, {k: e.value for k, e in entries.items()})
        view = next(v for v in describe(ui.settings, entries) if v.key == ROUTES)
        routes = plain(effective.inbound.routes)
        assert isinstance(routes, list)
        return routes, effective.inbound, view.editable, view.source

    async def page(
        request: Request, viewer: Viewer, status: int = 200, **extra: object
    ) -> Response:
        routes, inbound, editable, source = await current()
        return ui.render(
            request,
            viewer,
            "routes/index.html",
            status,
            routes=inbound.routes,
            version=version_of(routes),
            editable=editable and viewer.can("admin"),
            source=source,
            actions=ACTIONS,
            domains=inbound.domains,
            return_path_domains=inbound.return_path_domains,
            example=EXAMPLE,
            **extra,
        )

    async def change(request: Request, viewer: Viewer, edit: Any, done: str) -> Response:
        """Apply ``edit(form, routes) -> routes`` to the current list, check, store."""
        form = await ui.form(request, viewer)
        routes, _, editable, _ = await current()
        if not editable:
            return await page(request, viewer, 409, error=viewer.t("routes.env_locked"))
        if form.get("version") != version_of(routes):
            return await page(request, viewer, 409, error=viewer.t("routes.stale"))
        try:
            new = edit(form, [dict(route) for route in routes])
            values = validate_changes(ui.settings, {ROUTES: new})
        except IndexError:
            return await page(request, viewer, 409, error=viewer.t("routes.stale"))
        except SettingsInvalid as exc:
            return await page(
                request,
                viewer,
                422,
                error=viewer.t("settings.refused"),
                problems=[problem_text(viewer, p) for p in exc.problems],
                sent={k: form.get(k) for k in ("match", "action", "url")},
            )
        await overlay.change(values, now=ui.clock(), by=by(viewer))
        return await page(request, viewer, notice=viewer.t(done))

    @r.get("/routes", include_in_schema=False)
    async def routes_page(request: Request, viewer: Viewer = need_viewer) -> Response:
        return await page(request, viewer)

    @r.post("/routes", include_in_schema=False)
    async def add(request: Request, viewer: Viewer = need_admin) -> Response:
        def edit(form: Form, routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [*routes, route_from(form, None)]

        return await change(request, viewer, edit, "routes.added")

    @r.post("/routes/{index}", include_in_schema=False)
    async def update(request: Request, index: int, viewer: Viewer = need_admin) -> Response:
        def edit(form: Form, routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if not 0 <= index < len(routes):
                raise IndexError(index)
            routes[index] = route_from(form, routes[index])
            return routes

        return await change(request, viewer, edit, "routes.saved")

    @r.post("/routes/{index}/move", include_in_schema=False)
    async def move(request: Request, index: int, viewer: Viewer = need_admin) -> Response:
        def edit(form: Form, routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
            other = index - 1 if form.get("direction") == "up" else index + 1
            if not (0 <= index < len(routes) and 0 <= other < len(routes)):
                raise IndexError(index)
            routes[index], routes[other] = routes[other], routes[index]
            return routes

        return await change(request, viewer, edit, "routes.moved")

    @r.post("/routes/{index}/remove", include_in_schema=False)
    async def remove(request: Request, index: int, viewer: Viewer = need_admin) -> Response:
        def edit(form: Form, routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if not 0 <= index < len(routes):
                raise IndexError(index)
            del routes[index]
            return routes

        return await change(request, viewer, edit, "routes.removed")

    return r


AREA = UIArea(
    name="routes",
    router=router,
    nav=(NavItem("routes", "/ui/routes", "nav.routes", "viewer", 74),),
)
