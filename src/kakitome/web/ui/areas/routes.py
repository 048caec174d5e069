"""Inbound routes, read-only: they are settings (``inbound.routes``), not data.

The page shows the routes in the order they are tried (first match wins), the inbound
domains, and how to change them (the settings file or ``KAKITOME_INBOUND__ROUTES``, then a
restart of the smtp role). Route secrets are never shown.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from kakitome.web.ui.context import UI, Viewer
from kakitome.web.ui.nav import NavItem, UIArea

EXAMPLE = """[[inbound.routes]]
match = "support@example.com"
action = "forward"
url = "https://app.example.com/inbound"
secret = "a long random string"

[[inbound.routes]]
match = "*"
action = "hold"
"""


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    need_viewer = Depends(ui.require("viewer"))

    @r.get("/routes", include_in_schema=False)
    async def routes(request: Request, viewer: Viewer = need_viewer) -> Response:
        inbound = ui.settings.inbound
        return ui.render(
            request,
            viewer,
            "routes/index.html",
            routes=inbound.routes,
            domains=inbound.domains,
            return_path_domains=inbound.return_path_domains,
            example=EXAMPLE,
        )

    return r


AREA = UIArea(
    name="routes",
    router=router,
    nav=(NavItem("routes", "/ui/routes", "nav.routes", "viewer", 74),),
)
