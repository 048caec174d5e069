"""Users (admins only): add, change role, set a new password, remove.

The last admin cannot be demoted or removed, and nobody removes themselves here (a
locked-out site needs the CLI: ``kakitome user create NAME --role admin``).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from kakitome.accounts.store import ROLES
from kakitome.errors import InputError
from kakitome.web.ui.context import UI, Viewer
from kakitome.web.ui.nav import NavItem, UIArea


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    need_admin = Depends(ui.require("admin"))
    admin = need_admin

    async def page(
        request: Request, viewer: Viewer, status: int = 200, **extra: object
    ) -> Response:
        users = await ui.web.list_users()
        return ui.render(
            request, viewer, "users/index.html", status, users=users, roles=ROLES, **extra
        )

    @r.get("/users", include_in_schema=False)
    async def users(request: Request, viewer: Viewer = admin) -> Response:
        return await page(request, viewer)

    @r.post("/users", include_in_schema=False)
    async def create(request: Request, viewer: Viewer = admin) -> Response:
        form = await ui.form(request, viewer)
        try:
            user = await ui.web.create_user(
                form.get("username"), form.get("password"), form.get("role"), now=ui.clock()
            )
        except InputError as exc:
            return await page(request, viewer, 422, error=str(exc))
        return await page(
            request, viewer, 201, notice=viewer.t("users.created", name=user.username)
        )

    @r.post("/users/{user_id}/role", include_in_schema=False)
    async def role(request: Request, user_id: int, viewer: Viewer = admin) -> Response:
        form = await ui.form(request, viewer)
        new_role = form.get("role")
        target = await ui.web.user_by_id(user_id)
        if target is None or new_role not in ROLES:
            return await page(request, viewer, 422, error=viewer.t("users.invalid"))
        if target.role == "admin" and new_role != "admin" and await ui.web.count_admins() <= 1:
            return await page(request, viewer, 409, error=viewer.t("users.last_admin"))
        await ui.web.set_role(user_id, new_role, now=ui.clock())
        return ui.redirect("/ui/users")

    @r.post("/users/{user_id}/password", include_in_schema=False)
    async def password(request: Request, user_id: int, viewer: Viewer = admin) -> Response:
        form = await ui.form(request, viewer)
        target = await ui.web.user_by_id(user_id)
        if target is None:
            return await page(request, viewer, 422, error=viewer.t("users.invalid"))
        try:
            await ui.web.set_password(target.username, form.get("password"), now=ui.clock())
        except InputError as exc:
            return await page(request, viewer, 422, error=str(exc))
        return await page(
            request, viewer, notice=viewer.t("users.password_set", name=target.username)
        )

    @r.post("/users/{user_id}/remove", include_in_schema=False)
    async def remove(request: Request, user_id: int, viewer: Viewer = admin) -> Response:
        await ui.form(request, viewer)
        target = await ui.web.user_by_id(user_id)
        if target is None or (viewer.user is not None and target.id == viewer.user.id):
            return await page(request, viewer, 409, error=viewer.t("users.not_self"))
        if target.role == "admin" and await ui.web.count_admins() <= 1:
            return await page(request, viewer, 409, error=viewer.t("users.last_admin"))
        await ui.web.remove_user(target.username)
        return ui.redirect("/ui/users")

    return r


AREA = UIArea(
    name="users",
    router=router,
    nav=(NavItem("users", "/ui/users", "nav.users", "admin", 85),),
)
