"""Queue: the deliveries that are not final (queued, deferred, held), filtered by status
and domain, with bulk hold / release / retry / delete of the checked messages.

Viewers see the queue; acting on it needs the ``sender`` role (checked on the POST, not
only by hiding the buttons).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from kakitome.queue.types import PENDING, QUEUE_ACTIONS
from kakitome.web.ui.context import UI, Forbidden, Viewer
from kakitome.web.ui.nav import NavItem, UIArea

PAGE_SIZE = 100


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    need_viewer = Depends(ui.require("viewer"))

    @r.get("/queue", include_in_schema=False)
    async def queue(
        request: Request,
        status: str = "",
        domain: str = "",
        before: str = "",
        done: str = "",
        count: int = 0,
        viewer: Viewer = need_viewer,
    ) -> Response:
        statuses = (status,) if status in PENDING else PENDING
        rows, next_before = await ui.web.queue_page(
            statuses, domain=domain.strip() or None, before=before[:26] or None, limit=PAGE_SIZE
        )
        return ui.render(
            request,
            viewer,
            "queue/index.html",
            rows=rows,
            next_before=next_before,
            status=status if status in PENDING else "",
            domain=domain,
            statuses=PENDING,
            actions=list(QUEUE_ACTIONS),
            done=done if done in QUEUE_ACTIONS else "",
            count=count,
            counts=await ui.web.pending_counts(),
        )

    @r.post("/queue/actions", include_in_schema=False)
    async def act(request: Request, viewer: Viewer = need_viewer) -> Response:
        form = await ui.form(request, viewer)
        if not viewer.can("sender"):
            raise Forbidden(viewer.t("error.role", role=viewer.t("role.sender")))
        action = form.get("action")
        ids = sorted({i for i in form.getlist("message_id") if i})[:10_000]
        if action not in QUEUE_ACTIONS:
            return ui.redirect("/ui/queue")
        count = (
            await ui.services.queue.queue_action(action, now=ui.clock(), message_ids=ids)
            if ids
            else 0
        )
        return ui.redirect(f"/ui/queue?done={action}&count={count}")

    return r


AREA = UIArea(
    name="queue",
    router=router,
    nav=(NavItem("queue", "/ui/queue", "nav.queue", "viewer", 30),),
)
