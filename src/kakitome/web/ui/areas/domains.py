"""Sending domains: the list, adding one, and the set-up wizard.

The wizard shows the records to publish (the zone snippet and each record with a copy
button), the result of the last verification with a check mark per record and the remedy
of each failure (in the viewer's language), and runs a verification on demand (an htmx
request replaces the results in place; without script the form posts and the page is
shown again). Admins add, rotate DKIM keys and remove; senders may run a verification;
viewers look.

Thin over ``kakitome.domains.service.DomainService``: no table is touched here. A
verification asks DNS, so it runs under ``VERIFY_TIMEOUT`` seconds; a DNS failure is shown
as such and changes nothing.

Everything shown may come from outside (records found in DNS are quoted in findings):
the templates autoescape every value.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from kakitome.domains.records import DomainRecords
from kakitome.domains.service import DomainService, DomainView
from kakitome.domains.verify import DomainDNSError
from kakitome.errors import InputError, KakitomeError, NotFound
from kakitome.web.ui.context import UI, Viewer
from kakitome.web.ui.nav import NavItem, UIArea

VERIFY_TIMEOUT = 30.0


def record_rows(records: DomainRecords, findings: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each record to publish with the findings about it (same check and name): ``state``
    is ``ok`` (every finding ok), ``failing``, or ``unknown`` (never verified)."""
    found = list((findings or {}).get("findings") or [])
    rows = []
    for index, record in enumerate(records.records):
        mine = [
            f for f in found if f.get("check") == record.purpose and f.get("name") == record.name
        ]
        if not mine:
            state = "unknown"
        elif all(f.get("status") == "ok" for f in mine):
            state = "ok"
        else:
            state = "failing"
        rows.append({"id": f"rec-{index}", "record": record, "findings": mine, "state": state})
    return rows


def other_findings(records: DomainRecords, findings: dict[str, Any] | None) -> list[Any]:
    """Findings that are about no record of the list (PTR, alignment, bulk-sender rules)."""
    keys = {(r.purpose, r.name) for r in records.records}
    return [
        f
        for f in (findings or {}).get("findings") or []
        if (f.get("check"), f.get("name")) not in keys
    ]


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    need_viewer = Depends(ui.require("viewer"))
    need_sender = Depends(ui.require("sender"))
    need_admin = Depends(ui.require("admin"))

    def service() -> DomainService:
        return ui.services.domains

    async def index(
        request: Request, viewer: Viewer, status: int = 200, **extra: object
    ) -> Response:
        domains = await service().list_domains()
        return ui.render(request, viewer, "domains/index.html", status, domains=domains, **extra)

    async def wizard(
        request: Request, viewer: Viewer, name: str, status: int = 200, **extra: object
    ) -> Response:
        svc = service()
        try:
            view = await svc.show(name)
            records = await svc.records(name)
        except (NotFound, InputError) as exc:
            return await index(request, viewer, 404, error=str(exc))
        template = "domains/_verification.html" if extra.pop("partial", False) else None
        context = _wizard_context(view, records)
        return ui.render(
            request, viewer, template or "domains/detail.html", status, **context, **extra
        )

    @r.get("/domains", include_in_schema=False)
    async def domains(request: Request, viewer: Viewer = need_viewer) -> Response:
        return await index(request, viewer)

    @r.post("/domains", include_in_schema=False)
    async def add(request: Request, viewer: Viewer = need_admin) -> Response:
        form = await ui.form(request, viewer)
        try:
            view = await service().add(form.get("domain").strip()[:300])
        except KakitomeError as exc:
            return await index(request, viewer, 422, error=str(exc), entered=form.get("domain"))
        return ui.redirect(f"/ui/domains/{view.name.ascii}?added=1")

    @r.get("/domains/{name}", include_in_schema=False)
    async def detail(request: Request, name: str, viewer: Viewer = need_viewer) -> Response:
        added = request.query_params.get("added") == "1"
        notice = viewer.t("domains.added", name=name) if added else None
        return await wizard(request, viewer, name, notice=notice)

    @r.post("/domains/{name}/verify", include_in_schema=False)
    async def verify(request: Request, name: str, viewer: Viewer = need_sender) -> Response:
        await ui.form(request, viewer)
        partial = bool(request.headers.get("hx-request"))
        try:
            await asyncio.wait_for(service().verify(name), timeout=VERIFY_TIMEOUT)
        except (DomainDNSError, TimeoutError) as exc:
            message = viewer.t("domains.dns_error", error=str(exc) or "timeout")
            return await wizard(request, viewer, name, 503, error=message, partial=partial)
        except (NotFound, InputError) as exc:
            return await index(request, viewer, 404, error=str(exc))
        return await wizard(
            request, viewer, name, notice=viewer.t("domains.verified_now"), partial=partial
        )

    @r.post("/domains/{name}/rotate", include_in_schema=False)
    async def rotate(request: Request, name: str, viewer: Viewer = need_admin) -> Response:
        await ui.form(request, viewer)
        try:
            await service().rotate_dkim(name)
        except NotFound as exc:
            return await index(request, viewer, 404, error=str(exc))
        except KakitomeError as exc:
            return await wizard(request, viewer, name, 409, error=str(exc))
        return await wizard(request, viewer, name, notice=viewer.t("domains.rotated"))

    @r.post("/domains/{name}/remove", include_in_schema=False)
    async def remove(request: Request, name: str, viewer: Viewer = need_admin) -> Response:
        await ui.form(request, viewer)
        try:
            await service().remove(name)
        except (NotFound, InputError) as exc:
            return await index(request, viewer, 404, error=str(exc))
        return ui.redirect("/ui/domains")

    return r


def _wizard_context(view: DomainView, records: DomainRecords) -> dict[str, Any]:
    findings = view.row.findings
    return {
        "domain": view,
        "info": view.to_dict(),
        "records": records,
        "rows": record_rows(records, findings),
        "others": other_findings(records, findings),
        "checked_at": (findings or {}).get("checked_at"),
    }


AREA = UIArea(
    name="domains",
    router=router,
    nav=(NavItem("domains", "/ui/domains", "nav.domains", "viewer", 40),),
)
