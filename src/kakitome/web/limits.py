"""Refuse request bodies that are too large before reading them (HTTP 413)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from kakitome.web.errors import error_response


class BodySizeLimit:
    """Pure ASGI middleware: a declared Content-Length above ``limit`` gets 413 at once;
    a body without one is counted as it arrives and cut off at the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.limit:
                    await self._refuse(scope, receive, send)
                    return
        received = 0

        async def counting_receive() -> dict[str, object]:
            nonlocal received
            message = dict(await receive())
            if message.get("type") == "http.request":
                body = message.get("body", b"")
                received += len(body) if isinstance(body, bytes | bytearray) else 0
                if received > self.limit:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except BodyTooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, "request_too_large", f"the request body is larger than {self.limit:,} bytes"
        )
        await response(scope, receive, send)


class BodyTooLarge(Exception):
    """Raised inside the app when a streamed body passes the limit."""
