"""Public tracking endpoints: the open pixel and the signed click redirect.

What it talks to: anyone on the internet (mail clients, image proxies, link scanners).
What it trusts: nothing in the request but what ``LinkSigner`` verifies (HMAC-SHA256 in
constant time). What it enforces:

- ``GET /t/c/<token>`` redirects (302) only to the http(s) URL inside a token carrying
  our signature; anything else is 400 with a short page and no ``Location``: never an open
  redirect;
- ``GET /t/o/<token>.gif`` answers a 1×1 transparent GIF; a bad token gets 400;
- no cookies are read or set; responses are ``no-store`` and ``no-referrer``;
- an event that cannot be recorded (database down) still redirects: the reader's click
  matters more than our statistics.
"""

from __future__ import annotations

import structlog
from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, RedirectResponse, Response

from kakitome.campaigns.tracking import TrackingTokenError
from kakitome.errors import StorageError
from kakitome.web.deps import ServicesDep

__all__ = ["PIXEL", "router"]

log = structlog.get_logger("kakitome.web.tracking")

# The smallest transparent GIF (43 bytes).
PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)
_HEADERS = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer"}


router = APIRouter(include_in_schema=False)


def refused() -> Response:
    return PlainTextResponse(
        "This link is damaged or was not made by this server.\n",
        status_code=400,
        headers=_HEADERS,
    )


@router.get("/t/c/{token}")
async def click(token: str, services: ServicesDep) -> Response:
    campaigns = services.campaigns  # its signer made the links; its store counts
    try:
        hit = campaigns.signer.check_click(token)
    except TrackingTokenError:
        return refused()
    try:
        await campaigns.db.record_event(
            "click", hit.ref, hit.subscriber_id, url=hit.url, now=services.clock()
        )
    except StorageError as exc:
        log.warning("click not recorded", error=str(exc))
    return RedirectResponse(hit.url, status_code=302, headers=_HEADERS)


@router.get("/t/o/{token}.gif")
async def pixel(token: str, services: ServicesDep) -> Response:
    campaigns = services.campaigns
    try:
        hit = campaigns.signer.check_open(token)
    except TrackingTokenError:
        return refused()
    try:
        await campaigns.db.record_event(
            "open", hit.ref, hit.subscriber_id, url=None, now=services.clock()
        )
    except StorageError as exc:
        log.warning("open not recorded", error=str(exc))
    return Response(PIXEL, media_type="image/gif", headers=_HEADERS)
