"""``UI``: what every page of the admin UI shares — sessions, roles, CSRF, rendering.

What it talks to: browsers (HTML forms, htmx requests) and the stores it is given. What it
trusts: nothing from a request until the session cookie is found in ``web_sessions``; no
POST until its CSRF token matches the session's (or, before login, the ``kakitome_csrf``
cookie's: a double-submit token). Limits: form bodies over ``MAX_FORM_BYTES`` are refused;
sessions end after ``session_lifetime`` seconds whatever the activity.

Cookies: ``kakitome_session`` (HttpOnly, SameSite=Lax, Secure when the site is served
over https, path ``/``), ``kakitome_csrf`` (the same flags; only used before login) and
``kakitome_lang`` (the chosen language).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from kakitome.accounts.store import SessionInfo, UserRecord
from kakitome.web.ui.i18n import LANGUAGES, Catalogue, negotiate
from kakitome.web.ui.nav import NavItem, UIArea, navigation, role_allows
from kakitome.web.ui.security import HOME, LockoutPolicy

if TYPE_CHECKING:
    from kakitome.services import Services

SESSION_COOKIE = "kakitome_session"
CSRF_COOKIE = "kakitome_csrf"
LANG_COOKIE = "kakitome_lang"
CSRF_FIELD = "csrf_token"
MAX_FORM_BYTES = 1024 * 1024
SESSION_LIFETIME = 12 * 3600.0
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
STATIC = Path(__file__).resolve().parent.parent / "static"


class LoginRequired(Exception):
    """No live session: the handler redirects to the login page."""


class Forbidden(Exception):
    """The user's role does not allow this, or the CSRF token is wrong (HTTP 403)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class Viewer:
    """The person looking at a page: their session (None before login), language and
    translation function."""

    session: SessionInfo | None
    lang: str
    t: Callable[..., str]
    csrf_token: str
    new_csrf_cookie: str | None = None  # set on the response when first made
    nav: list[NavItem] = field(default_factory=list)

    @property
    def user(self) -> UserRecord | None:
        return None if self.session is None else self.session.user

    def can(self, role: str) -> bool:
        return self.user is not None and role_allows(self.user.role, role)


class Form:
    """A parsed ``application/x-www-form-urlencoded`` body."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def get(self, name: str, default: str = "") -> str:
        for key, value in self._pairs:
            if key == name:
                return value
        return default

    def getlist(self, name: str) -> list[str]:
        return [value for key, value in self._pairs if key == name]


class UI:
    """Shared state and helpers of the admin UI; made once by ``mount_ui``."""

    def __init__(
        self,
        services: Services,
        areas: list[UIArea],
        *,
        lockout: LockoutPolicy | None = None,
        session_lifetime: float = SESSION_LIFETIME,
    ) -> None:
        self.services = services
        self.settings = services.settings
        self.store = services.store
        self.web = services.web_store
        self.clock = services.clock
        self.areas = areas
        self.lockout = lockout or LockoutPolicy()
        self.session_lifetime = session_lifetime
        self.catalogue = Catalogue.with_areas(areas)
        folders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(str(TEMPLATES))]
        folders += [jinja2.FileSystemLoader(str(a.templates)) for a in areas if a.templates]
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(folders),
            autoescape=True,  # every template, whatever its name
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["time"] = format_time
        self.env.filters["percent"] = format_percent
        self.env.globals["languages"] = LANGUAGES

    # -- who is asking --------------------------------------------------------------------

    def secure_cookies(self, request: Request) -> bool:
        public = self.settings.http.public_url or ""
        return request.url.scheme == "https" or public.startswith("https://")

    async def viewer(self, request: Request) -> Viewer:
        """The session (if any), language and CSRF token of this request."""
        token = request.cookies.get(SESSION_COOKIE, "")
        session = await self.web.session(token, now=self.clock()) if token else None
        user_lang = session.user.language if session is not None else None
        lang = negotiate(
            user_lang or request.cookies.get(LANG_COOKIE), request.headers.get("accept-language")
        )
        new_cookie = None
        if session is not None:
            csrf = session.csrf_token
        else:
            csrf = request.cookies.get(CSRF_COOKIE, "")
            if len(csrf) < 32 or len(csrf) > 100:
                csrf = new_cookie = secrets.token_urlsafe(32)
        nav = navigation(self.areas, session.user.role) if session is not None else []
        return Viewer(
            session=session,
            lang=lang,
            t=self.catalogue.translator(lang),
            csrf_token=csrf,
            new_csrf_cookie=new_cookie,
            nav=nav,
        )

    def require(self, role: str = "viewer") -> Callable[[Request], Awaitable[Viewer]]:
        """A dependency: the logged-in viewer with at least ``role``; else a redirect to the
        login page (no session) or 403 (role too low)."""

        async def dependency(request: Request) -> Viewer:
            viewer = await self.viewer(request)
            if viewer.user is None:
                raise LoginRequired
            if not role_allows(viewer.user.role, role):
                raise Forbidden(viewer.t("error.role", role=viewer.t(f"role.{role}")))
            request.state.viewer = viewer
            return viewer

        return dependency

    async def form(self, request: Request, viewer: Viewer) -> Form:
        """The POSTed form, after checking its CSRF token (403 when missing or wrong)."""
        if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
            raise Forbidden(viewer.t("error.too_large"))
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise Forbidden(viewer.t("error.too_large"))
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        pairs: list[tuple[str, str]] = []
        if kind == "application/x-www-form-urlencoded":
            pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        sent = request.headers.get("x-csrf-token") or Form(pairs).get(CSRF_FIELD)
        expected = viewer.csrf_token if viewer.new_csrf_cookie is None else ""
        if not sent or not expected or not hmac.compare_digest(sent, expected):
            raise Forbidden(viewer.t("error.csrf"))
        return Form(pairs)

    # -- answers --------------------------------------------------------------------------

    def render(
        self,
        request: Request,
        viewer: Viewer,
        template: str,
        status_code: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        page = self.env.get_template(template)
        html = page.render(
            request=request,
            viewer=viewer,
            t=viewer.t,
            lang=viewer.lang,
            csrf_field=Markup('<input type="hidden" name="{}" value="{}">').format(
                CSRF_FIELD, viewer.csrf_token
            ),
            current_path=request.url.path,
            current_url=_path_with_query(request),
            **context,
        )
        response = HTMLResponse(html, status_code=status_code)
        self.finish(request, viewer, response)
        return response

    def finish(self, request: Request, viewer: Viewer, response: Response) -> None:
        """Set the pre-login CSRF cookie when this request made one."""
        if viewer.new_csrf_cookie is not None:
            response.set_cookie(
                CSRF_COOKIE,
                viewer.new_csrf_cookie,
                httponly=True,
                samesite="lax",
                secure=self.secure_cookies(request),
                path="/",
            )

    def redirect(self, url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303)

    def set_session_cookie(self, request: Request, response: Response, token: str) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=int(self.session_lifetime),
            httponly=True,
            samesite="lax",
            secure=self.secure_cookies(request),
            path="/",
        )

    def login_redirect(self, request: Request) -> Response:
        target = "/ui/login?next=" + quote(_path_with_query(request), safe="")
        if request.headers.get("hx-request"):
            return Response(status_code=204, headers={"HX-Redirect": target})
        return self.redirect(target)

    async def forbidden(self, request: Request, reason: str) -> HTMLResponse:
        viewer = getattr(request.state, "viewer", None) or await self.viewer(request)
        return self.render(request, viewer, "layout/error.html", 403, message=reason)


def _path_with_query(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "") or HOME


def format_time(value: float | None) -> str:
    """Epoch seconds as ``2026-01-31 09:00:00 UTC``."""
    if value is None:
        return "—"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"
