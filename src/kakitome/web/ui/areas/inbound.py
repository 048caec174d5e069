"""Held inbound mail and received TLS-RPT reports (everyone looks; admins release/delete).

Held mail is what the MX kept because a route said ``hold``. The list shows the newest
first, ``PAGE`` at a time, with the subject read from the stored headers; a message's page
shows its envelope and headers (never the body as HTML: everything is escaped by the
templates). Admins release messages to a forward route or delete them, one or several at
once, through ``kakitome.inbound.held`` like the CLI and ``/api/v1/inbound``; release uses
the routes of the settings as changed at run time (the settings overlay), as the API does.

The TLS reports tab lists received TLS-RPT reports (read only) with a page per report.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from kakitome.errors import InputError, NotFound
from kakitome.inbound.held import delete_held, release_held
from kakitome.inbound.store import InboundRow, InboundStore, TLSReportRecord
from kakitome.settings_overlay import current_settings
from kakitome.web.ui.context import UI, Viewer
from kakitome.web.ui.nav import NavItem, UIArea

PAGE = 50
MAX_BULK = 500
HEADER_BYTES = 65_536


def headers_of(content: bytes) -> list[tuple[str, str]]:
    """The header fields of a stored message (decoded where possible), in order."""
    head = content.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0][:HEADER_BYTES]
    parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    message = parser.parsebytes(head)
    out: list[tuple[str, str]] = []
    for name, value in message.items():
        out.append((name, _decoded(str(value))))
    return out


def _decoded(value: str) -> str:
    try:
        return str(email.policy.default.header_factory("x-any", value))
    except Exception:  # a malformed header is shown as it came
        return value


def _header(headers: list[tuple[str, str]], name: str) -> str:
    return next((v for k, v in headers if k.lower() == name), "")


def policy_domains(record: TLSReportRecord) -> list[str]:
    """The policy domains a TLS-RPT report is about."""
    found: list[str] = []
    policies = record.report.report.get("policies")
    if isinstance(policies, list):
        for entry in policies:
            policy = entry.get("policy") if isinstance(entry, dict) else None
            domain = policy.get("policy-domain") if isinstance(policy, dict) else None
            if isinstance(domain, str) and domain not in found:
                found.append(domain)
    return found


def _offset(request: Request) -> int:
    try:
        return max(0, int(request.query_params.get("offset", "0")))
    except ValueError:
        return 0


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    need_viewer = Depends(ui.require("viewer"))
    need_admin = Depends(ui.require("admin"))
    overlay = ui.services.settings_store

    def store() -> InboundStore:
        return ui.services.inbound_store

    async def held_page(
        request: Request, viewer: Viewer, status: int = 200, **extra: object
    ) -> Response:
        offset = _offset(request)
        db = store()
        listed = await db.list_inbound_page(status="held", limit=PAGE + 1, offset=offset)
        rows: list[dict[str, Any]] = []
        for row in listed[:PAGE]:
            full = await db.get_inbound(row.id)
            headers = headers_of(full.content) if full is not None else []
            rows.append(
                {
                    "row": row,
                    "subject": _header(headers, "subject"),
                    "from": _header(headers, "from"),
                }
            )
        return ui.render(
            request,
            viewer,
            "inbound/index.html",
            status,
            rows=rows,
            offset=offset,
            next_offset=offset + PAGE if len(listed) > PAGE else None,
            **extra,
        )

    @r.get("/inbound", include_in_schema=False)
    async def index(request: Request, viewer: Viewer = need_viewer) -> Response:
        return await held_page(request, viewer)

    @r.post("/inbound/actions", include_in_schema=False)
    async def actions(request: Request, viewer: Viewer = need_admin) -> Response:
        form = await ui.form(request, viewer)
        action = form.get("action")
        ids = list(dict.fromkeys(i for i in form.getlist("id") if i))[:MAX_BULK]
        if action not in ("release", "delete") or not ids:
            return await held_page(request, viewer, 422, error=viewer.t("inbound.nothing"))
        db = store()
        if action == "delete":
            done = await delete_held(db, ids)
            ok = sum(done.values())
            return await held_page(
                request,
                viewer,
                200 if ok else 404,
                notice=viewer.t("inbound.deleted", count=ok, missing=len(ids) - ok),
            )
        current = await current_settings(ui.settings, overlay)
        wanted = form.get("route").strip() or None
        released, problems = 0, []
        for inbound_id in ids:
            try:
                await release_held(
                    db, current.inbound.routes, inbound_id, route=wanted, now=ui.clock()
                )
                released += 1
            except NotFound:
                problems.append(viewer.t("inbound.not_held", id=inbound_id))
            except InputError:
                problems.append(viewer.t("inbound.no_route", id=inbound_id))
        extra: dict[str, object] = {
            "notice": viewer.t("inbound.released", count=released),
        }
        if problems:
            extra["error"] = " ".join(problems)
        return await held_page(request, viewer, 200 if released else 422, **extra)

    @r.get("/inbound/tls-reports", include_in_schema=False)
    async def reports(request: Request, viewer: Viewer = need_viewer) -> Response:
        offset = _offset(request)
        records = await store().list_tls_report_records(limit=PAGE + 1, offset=offset)
        return ui.render(
            request,
            viewer,
            "inbound/reports.html",
            reports=[(r, policy_domains(r)) for r in records[:PAGE]],
            offset=offset,
            next_offset=offset + PAGE if len(records) > PAGE else None,
        )

    @r.get("/inbound/tls-reports/{report_id}", include_in_schema=False)
    async def report(request: Request, report_id: int, viewer: Viewer = need_viewer) -> Response:
        record = await store().get_tls_report(report_id) if 0 < report_id < 2**62 else None
        if record is None:
            return ui.render(request, viewer, "inbound/report.html", 404, record=None, domains=[])
        return ui.render(
            request,
            viewer,
            "inbound/report.html",
            record=record,
            domains=policy_domains(record),
            report_json=json.dumps(record.report.report, indent=2, ensure_ascii=False),
        )

    @r.get("/inbound/{inbound_id}", include_in_schema=False)
    async def show(request: Request, inbound_id: str, viewer: Viewer = need_viewer) -> Response:
        row: InboundRow | None = await store().get_inbound(inbound_id[:64])
        if row is None:
            return ui.render(request, viewer, "inbound/show.html", 404, row=None, headers=[])
        return ui.render(
            request, viewer, "inbound/show.html", row=row, headers=headers_of(row.content)
        )

    return r


AREA = UIArea(
    name="inbound",
    router=router,
    nav=(NavItem("inbound", "/ui/inbound", "nav.inbound", "viewer", 75),),
)
