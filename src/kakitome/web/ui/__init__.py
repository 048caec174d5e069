"""The admin web UI: server-rendered pages (Jinja2, htmx), English and Japanese.

``mount_ui(app, services)`` adds, under ``/ui``: every area found by
``kakitome.web.ui.nav.discover_areas`` (dashboard, messages, queue, API keys, users,
settings, and whatever areas other parts add), the static files, the security headers;
and ``/`` (a redirect to ``/ui/``) and ``/metrics`` (Prometheus).

What it talks to: browsers. What it trusts: a session cookie only when its hash is in
``web_sessions``; a POST only with the session's CSRF token. Roles (``viewer`` <
``sender`` < ``admin``) are checked by every route. Limits: see ``context`` (form size,
session lifetime) and ``security`` (lock-out after failed logins, safe redirects, CSP).

``ensure_first_admin`` makes the user ``admin`` with a random password on the very first
start (no users yet) and prints the password once.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, TextIO

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from kakitome.accounts.store import WebStore
from kakitome.web.ui.context import STATIC, UI, Forbidden, LoginRequired
from kakitome.web.ui.metrics import metrics_router
from kakitome.web.ui.nav import UIArea, discover_areas
from kakitome.web.ui.security import LockoutPolicy, SecurityHeaders

if TYPE_CHECKING:
    from kakitome.services import Services

__all__ = ["UI", "UIArea", "ensure_first_admin", "mount_ui"]

FIRST_ADMIN = "admin"


def mount_ui(
    app: FastAPI,
    services: Services,
    *,
    areas: list[UIArea] | None = None,
    lockout: LockoutPolicy | None = None,
) -> UI:
    """Add the admin UI, ``/`` and ``/metrics`` to ``app``; returns the ``UI``."""
    ui = UI(services, areas or discover_areas(), lockout=lockout)
    for area in ui.areas:
        app.include_router(area.router(ui), prefix="/ui")
    app.mount("/ui/static", StaticFiles(directory=str(STATIC)), name="ui-static")
    app.include_router(metrics_router(services))
    app.add_middleware(SecurityHeaders)

    async def login_required(request: Request, _: Exception) -> Response:
        return ui.login_redirect(request)

    async def forbidden(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Forbidden)
        return await ui.forbidden(request, exc.reason)

    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(Forbidden, forbidden)

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/ui/", status_code=307)

    @app.get("/ui", include_in_schema=False)
    async def ui_root() -> Response:
        return RedirectResponse("/ui/", status_code=307)

    return ui


async def ensure_first_admin(web: WebStore, out: TextIO) -> None:
    """With no UI users yet, make ``admin`` (role admin) and print its password once."""
    if await web.count_users():
        return
    password = secrets.token_urlsafe(15)
    await web.create_user(FIRST_ADMIN, password, "admin", now=time.time())
    print(
        f"Admin login (shown once, keep it): user {FIRST_ADMIN} password {password}",
        file=out,
        flush=True,
    )
