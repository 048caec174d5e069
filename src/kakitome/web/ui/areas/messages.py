"""Messages: search (address, id, domain, subject words; status; date range), pages of 50
newest first, and each message with every recipient's receipt and its event history.

The TLS receipt is shown plainly: protocol, cipher, certificate SHA-256, verification
(and OpenSSL's reason when it failed), policy level and where it came from, downgrade, and
the SMTP reply. Remote text (replies, subjects, addresses) is escaped by the templates.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from kakitome.accounts.store import MessageQuery
from kakitome.errors import InputError, NotFound
from kakitome.queue.types import STATUSES
from kakitome.receipts import delivery_to_dict
from kakitome.web.ui.context import UI, Viewer
from kakitome.web.ui.nav import NavItem, UIArea

PAGE_SIZE = 50


def parse_day(value: str, *, end: bool = False) -> float | None:
    """``YYYY-MM-DD`` (UTC) as epoch seconds at its start (or the next day's, for ``end``)."""
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return None
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
    return moment + 86_400 if end else moment


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    need_viewer = Depends(ui.require("viewer"))

    @r.get("/messages", include_in_schema=False)
    async def messages(
        request: Request,
        q: str = "",
        status: str = "",
        since: str = "",
        until: str = "",
        before: str = "",
        viewer: Viewer = need_viewer,
    ) -> Response:
        query = MessageQuery(
            q=q[:500],
            status=status if status in STATUSES else None,
            since=parse_day(since),
            until=parse_day(until, end=True),
            before=before[:26] or None,
            limit=PAGE_SIZE,
        )
        page = await ui.web.search_messages(query)
        partial = bool(request.headers.get("hx-request")) and not request.headers.get("hx-boosted")
        return ui.render(
            request,
            viewer,
            "messages/_results.html" if partial else "messages/index.html",
            page=page,
            q=q,
            status=status,
            since=since,
            until=until,
            before=before,
            statuses=STATUSES,
        )

    @r.get("/messages/{message_id}", include_in_schema=False)
    async def message(request: Request, message_id: str, viewer: Viewer = need_viewer) -> Response:
        try:
            receipt = await ui.services.queue.receipt(message_id[:64])
        except (NotFound, InputError):
            return ui.render(
                request,
                viewer,
                "layout/error.html",
                404,
                message=viewer.t("messages.not_found"),
            )
        history = await ui.services.queue.events_for(receipt.id)
        by_delivery = {row.id: row.recipient for row in receipt.recipients}
        rows = [(row, delivery_to_dict(row)) for row in receipt.recipients]
        return ui.render(
            request,
            viewer,
            "messages/detail.html",
            receipt=receipt,
            rows=rows,
            events=history,
            by_delivery=by_delivery,
        )

    return r


AREA = UIArea(
    name="messages",
    router=router,
    nav=(NavItem("messages", "/ui/messages", "nav.messages", "viewer", 20),),
)
