"""The suppression list: search, add, remove, import (admins change it; everyone looks).

Thin over ``kakitome.inbound.store.InboundStore`` (the list delivery obeys). The
import takes a CSV with an email column, or one address per line, pasted or read from a
file by the page's script into the same form field (so the CSRF token travels in the form
like everywhere else); at most ``context.MAX_FORM_BYTES`` per import. Bad lines are
counted, never stored.

Search is a substring match over the newest ``SEARCH_SCAN`` entries (the table has no
text index); an exact address is always found.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from kakitome.addresses import parse_address
from kakitome.checker.bulk import _rows, read_addresses
from kakitome.errors import AddressError
from kakitome.inbound.store import InboundStore, SuppressionRecord
from kakitome.suppression import REASONS, suppression_key
from kakitome.web.ui.context import UI, Viewer
from kakitome.web.ui.nav import NavItem, UIArea

PAGE = 100
SEARCH_SCAN = 20_000


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    need_viewer = Depends(ui.require("viewer"))
    need_admin = Depends(ui.require("admin"))

    def store() -> InboundStore:
        return ui.services.inbound_store

    async def page(
        request: Request, viewer: Viewer, status: int = 200, **extra: object
    ) -> Response:
        q = request.query_params.get("q", "").strip()[:300]
        reason = request.query_params.get("reason", "")
        reason_filter = reason if reason in REASONS else None
        try:
            offset = max(0, int(request.query_params.get("offset", "0")))
        except ValueError:
            offset = 0
        rows: list[SuppressionRecord]
        if q:
            needle = q.lower()
            scanned = await store().list_suppressions(limit=SEARCH_SCAN, reason=reason_filter)
            rows = [s for s in scanned if needle in s.address][:PAGE]
            exact = suppression_key(q)
            if not rows and await store().suppressed_among([exact]):
                rows = [s for s in scanned if s.address == exact]
        else:
            rows = await store().list_suppressions(
                limit=PAGE + 1, offset=offset, reason=reason_filter
            )
        more = not q and len(rows) > PAGE
        return ui.render(
            request,
            viewer,
            "suppression/index.html",
            status,
            rows=rows[:PAGE],
            q=q,
            reason=reason_filter or "",
            reasons=REASONS,
            offset=offset,
            next_offset=offset + PAGE if more else None,
            **extra,
        )

    @r.get("/suppression", include_in_schema=False)
    async def index(request: Request, viewer: Viewer = need_viewer) -> Response:
        return await page(request, viewer)

    @r.post("/suppression", include_in_schema=False)
    async def add(request: Request, viewer: Viewer = need_admin) -> Response:
        form = await ui.form(request, viewer)
        text = form.get("address").strip()
        try:
            address = parse_address(text).address
        except AddressError:
            return await page(request, viewer, 422, error=viewer.t("suppression.invalid"))
        added = await store().add_suppression(
            address, reason="manual", now=ui.clock(), detail=form.get("detail").strip()[:500]
        )
        key = "suppression.added" if added else "suppression.already"
        return await page(request, viewer, notice=viewer.t(key, address=suppression_key(address)))

    @r.post("/suppression/remove", include_in_schema=False)
    async def remove(request: Request, viewer: Viewer = need_admin) -> Response:
        form = await ui.form(request, viewer)
        address = form.get("address")
        removed = await store().remove_suppression(address)
        key = "suppression.removed" if removed else "suppression.not_found"
        status = 200 if removed else 404
        return await page(request, viewer, status, notice=viewer.t(key, address=address))

    @r.post("/suppression/import", include_in_schema=False)
    async def import_(request: Request, viewer: Viewer = need_admin) -> Response:
        form = await ui.form(request, viewer)
        added = present = 0
        parsed = read_addresses(form.get("csv"))
        seen: set[str] = set()
        hooks = store()
        for _number, value in _addresses(form.get("csv")):
            key = suppression_key(value)
            if key in seen:
                continue
            seen.add(key)
            if await hooks.add_suppression(key, reason="manual", now=ui.clock(), detail="import"):
                added += 1
            else:
                present += 1
        notice = viewer.t(
            "suppression.imported", added=added, present=present, bad=parsed.bad_count
        )
        return await page(request, viewer, notice=notice)

    return r


def _addresses(text: str) -> list[tuple[int, str]]:
    """The valid addresses of an import, with their line numbers (the CSV rules of
    ``kakitome.checker.bulk``: an email column, or one address per line)."""
    out = []
    for number, value in _rows(text):
        try:
            out.append((number, parse_address(value).address))
        except AddressError:
            continue
    return out


AREA = UIArea(
    name="suppression",
    router=router,
    nav=(NavItem("suppression", "/ui/suppression", "nav.suppression", "viewer", 72),),
)
