"""Settings (admins only): the effective settings, read-only, secrets redacted.

Redacted: every ``SecretStr``, any key whose name says password, secret, token or
passphrase, and the password in the database URL.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.engine import make_url

from kakitome.config import Settings
from kakitome.web.ui.context import UI, Viewer
from kakitome.web.ui.nav import NavItem, UIArea

REDACTED = "••••••"
_SECRET_NAME = re.compile(r"pass|secret|token|private|credential", re.IGNORECASE)


def redact(value: Any, name: str = "") -> Any:
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, name) for v in value]
    if value is not None and _SECRET_NAME.search(name):
        return REDACTED
    if isinstance(value, str) and value.startswith("**********"):
        return REDACTED
    return value


def effective_settings(settings: Settings) -> dict[str, Any]:
    """The settings as JSON-ready sections, secrets redacted."""
    data: dict[str, Any] = redact(settings.model_dump(mode="json"))
    database = data.get("database")
    if isinstance(database, dict) and isinstance(database.get("url"), str):
        try:
            url = make_url(database["url"])
            if url.password is not None:
                database["url"] = url.render_as_string(hide_password=True)
        except Exception:
            database["url"] = REDACTED
    return data


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    need_admin = Depends(ui.require("admin"))

    @r.get("/settings", include_in_schema=False)
    async def settings_page(request: Request, viewer: Viewer = need_admin) -> Response:
        return ui.render(
            request, viewer, "settings/index.html", sections=effective_settings(ui.settings)
        )

    return r


AREA = UIArea(
    name="settings",
    router=router,
    nav=(NavItem("settings", "/ui/settings", "nav.settings", "admin", 90),),
)
