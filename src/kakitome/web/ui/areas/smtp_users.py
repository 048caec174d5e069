"""SMTP users (admins): the credentials mail programs submit with on ports 587 and 465.

The password is made here (random, 24 characters) and shown once on the page that created
the user; only its argon2id hash is stored (``kakitome.inbound.users.hash_password``, run
in a thread: argon2 is slow on purpose). Thin over ``InboundStore``.
"""

from __future__ import annotations

import asyncio
import secrets

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from kakitome.errors import InputError
from kakitome.inbound.store import InboundStore
from kakitome.inbound.users import hash_password, validate_username
from kakitome.web.ui.context import UI, Viewer
from kakitome.web.ui.nav import NavItem, UIArea


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    need_admin = Depends(ui.require("admin"))

    def store() -> InboundStore:
        return ui.services.inbound_store

    async def page(
        request: Request, viewer: Viewer, status: int = 200, **extra: object
    ) -> Response:
        users = await store().list_smtp_users()
        return ui.render(request, viewer, "smtp_users/index.html", status, users=users, **extra)

    @r.get("/smtp-users", include_in_schema=False)
    async def index(request: Request, viewer: Viewer = need_admin) -> Response:
        return await page(request, viewer)

    @r.post("/smtp-users", include_in_schema=False)
    async def create(request: Request, viewer: Viewer = need_admin) -> Response:
        form = await ui.form(request, viewer)
        try:
            name = validate_username(form.get("username"))
        except InputError as exc:
            return await page(request, viewer, 422, error=str(exc))
        inbound = store()
        if await inbound.smtp_user_hash(name) is not None:
            return await page(request, viewer, 409, error=viewer.t("smtp_users.exists"))
        password = secrets.token_urlsafe(18)
        hashed = await asyncio.to_thread(hash_password, password)
        await inbound.create_smtp_user(name, hashed, now=ui.clock())
        return await page(
            request,
            viewer,
            201,
            notice=viewer.t("smtp_users.created", name=name),
            new_password=password,
        )

    @r.post("/smtp-users/remove", include_in_schema=False)
    async def remove(request: Request, viewer: Viewer = need_admin) -> Response:
        form = await ui.form(request, viewer)
        name = form.get("username")
        if not await store().remove_smtp_user(name):
            return await page(request, viewer, 404)
        return await page(request, viewer, notice=viewer.t("smtp_users.removed", name=name))

    return r


AREA = UIArea(
    name="smtp_users",
    router=router,
    nav=(NavItem("smtp_users", "/ui/smtp-users", "nav.smtp_users", "admin", 82),),
)
