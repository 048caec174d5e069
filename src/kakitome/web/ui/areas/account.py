"""Log in, log out, choose the language.

Login: lock-out is checked before the password (``LockoutPolicy``); a success starts a new
session with a new token and CSRF token and ends any session the browser brought along
(no session fixation). ``next`` is followed only to a local UI path.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from kakitome.web.ui.context import CSRF_COOKIE, LANG_COOKIE, SESSION_COOKIE, UI, Viewer
from kakitome.web.ui.i18n import LANGUAGES
from kakitome.web.ui.nav import UIArea
from kakitome.web.ui.security import safe_next


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    need_viewer = Depends(ui.require("viewer"))

    @r.get("/login", include_in_schema=False)
    async def login_page(request: Request, next: str = "") -> Response:
        viewer = await ui.viewer(request)
        if viewer.user is not None:
            return ui.redirect(safe_next(next))
        return ui.render(request, viewer, "account/login.html", next=safe_next(next), error=None)

    @r.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        viewer = await ui.viewer(request)
        form = await ui.form(request, viewer)
        username = form.get("username").strip().lower()[:64]
        password = form.get("password")
        target = safe_next(form.get("next"))
        ip = client_ip(request)
        now = ui.clock()
        since = now - ui.lockout.window
        locked = (
            await ui.web.recent_failures(since=since, username=username)
            >= ui.lockout.account_failures
            or await ui.web.recent_failures(since=since, ip=ip) >= ui.lockout.ip_failures
        )
        context: dict[str, Any] = {"next": target, "username": username}
        if locked:
            return ui.render(
                request,
                viewer,
                "account/login.html",
                429,
                error=viewer.t("login.locked"),
                **context,
            )
        user = await ui.web.authenticate(username, password, now=now)
        await ui.web.record_attempt(username, ip, success=user is not None, now=now)
        if user is None:
            return ui.render(
                request,
                viewer,
                "account/login.html",
                401,
                error=viewer.t("login.failed"),
                **context,
            )
        old = request.cookies.get(SESSION_COOKIE)
        if old:
            await ui.web.delete_session(old)
        token, _ = await ui.web.create_session(
            user.id,
            now=now,
            lifetime=ui.session_lifetime,
            ip=ip,
            user_agent=request.headers.get("user-agent"),
        )
        if user.language is None and viewer.lang != "en":
            await ui.web.set_language(user.id, viewer.lang)
        response = ui.redirect(target)
        ui.set_session_cookie(request, response, token)
        response.delete_cookie(CSRF_COOKIE, path="/")
        return response

    @r.post("/logout", include_in_schema=False)
    async def logout(request: Request, viewer: Viewer = need_viewer) -> Response:
        await ui.form(request, viewer)
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            await ui.web.delete_session(token)
        response = ui.redirect("/ui/login")
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @r.post("/language", include_in_schema=False)
    async def language(request: Request) -> Response:
        viewer = await ui.viewer(request)
        form = await ui.form(request, viewer)
        lang = form.get("lang")
        if lang not in LANGUAGES:
            lang = "en"
        if viewer.user is not None:
            await ui.web.set_language(viewer.user.id, lang)
        response = ui.redirect(safe_next(form.get("next")))
        response.set_cookie(
            LANG_COOKIE,
            lang,
            max_age=365 * 86_400,
            httponly=True,
            samesite="lax",
            secure=ui.secure_cookies(request),
            path="/",
        )
        return response

    return r


AREA = UIArea(name="account", router=router)
