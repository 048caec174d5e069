"""Security pieces of the admin UI: safe redirects, lock-out policy, response headers.

- ``safe_next``: a ``?next=`` target is kept only when it is a path on this site
  (``/ui...``); anything with a scheme, a host, ``//`` or a backslash becomes ``/ui/``
  (no open redirects).
- ``LockoutPolicy``: after ``account_failures`` failed logins for one user name, or
  ``ip_failures`` from one IP address, within ``window`` seconds, logins for that name or
  from that address are refused until the window has passed. The answer never says
  whether the user exists.
- ``SecurityHeaders``: pure ASGI middleware adding CSP (scripts, styles and images only
  from this site; charts are inline SVG, not scripts), frame denial, ``nosniff``,
  ``Referrer-Policy`` and ``Cache-Control: no-store`` to every ``/ui`` response.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

UI_PREFIX = "/ui"
HOME = "/ui/"

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
_SAFE_PATH = re.compile(r"^/ui(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?(?:\?[^\s#\\]*)?$")


def safe_next(target: str | None) -> str:
    """``target`` when it is a local UI path, else the dashboard."""
    if not target or len(target) > 2000:
        return HOME
    if "\\" in target or "//" in target or any(ord(c) < 0x21 for c in target):
        return HOME
    return target if _SAFE_PATH.match(target) else HOME


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """Failed-login limits. The defaults follow OWASP's advice (a handful per account,
    more per IP since an office shares one address), over 15 minutes."""

    account_failures: int = 5
    ip_failures: int = 20
    window: float = 900.0


class SecurityHeaders:
    """Adds the security headers to every response under ``/ui``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == UI_PREFIX or path.startswith(UI_PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        static = path.startswith(UI_PREFIX + "/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [h for h in _HEADERS if h[0] not in present]
                if not static and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
