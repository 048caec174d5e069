"""The checker (senders and admins): a domain's report, and a list's TLS readiness.

A domain report is ``kakitome check DOMAIN``'s: the grade, how mail would travel, and
every finding with its severity, message and remedy (in the viewer's language). A list
check takes a stored list or addresses (CSV with an email column, or one per line; pasted,
or read from a file by the page's script into the form) and shows what share of the
recipients would get verified, encrypted or plaintext mail, and which domains are worst.

Both run through ``kakitome.checker`` (DNS, SMTP probes, MTA-STS fetches) and are bounded:
a domain by ``DOMAIN_TIMEOUT`` seconds, a list by ``LIST_TIMEOUT``; past that the page says
so. Findings quote DNS records and server replies from outside: the templates escape them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from kakitome.checker.bulk import AddressList, check_list, collect_addresses, read_addresses
from kakitome.checker.report import DomainReport
from kakitome.checker.service import Checker
from kakitome.errors import KakitomeError
from kakitome.web.ui.context import UI, Viewer
from kakitome.web.ui.nav import NavItem, UIArea

DOMAIN_TIMEOUT = 90.0
LIST_TIMEOUT = 300.0
MAX_LIST_ADDRESSES = 200_000


def report_context(report: DomainReport, lang: str) -> dict[str, Any]:
    letter, why = report.grade
    kind, reason = report.transport
    order = {"critical": 0, "error": 1, "warning": 2, "info": 3, "ok": 4}
    findings = sorted(
        report.findings, key=lambda f: (order[f.effective_severity.value], f.subject, f.code)
    )
    return {
        "domain": report.domain,
        "grade": letter,
        "grade_reason": why,
        "transport": kind.value,
        "transport_reason": reason,
        "findings": [
            {
                "code": f.code,
                "severity": f.effective_severity.value,
                "subject": f.subject,
                "message": f.message(lang),
                "remedy": f.remedy(lang),
            }
            for f in findings
        ],
    }


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    need_sender = Depends(ui.require("sender"))

    async def page(
        request: Request, viewer: Viewer, status: int = 200, **extra: object
    ) -> Response:
        try:
            lists = await ui.services.lists.lists()
        except KakitomeError:
            lists = []
        return ui.render(request, viewer, "checker/index.html", status, lists=lists, **extra)

    @r.get("/checker", include_in_schema=False)
    async def index(request: Request, viewer: Viewer = need_sender) -> Response:
        return await page(request, viewer)

    @r.post("/checker/domain", include_in_schema=False)
    async def domain(request: Request, viewer: Viewer = need_sender) -> Response:
        form = await ui.form(request, viewer)
        name = form.get("domain").strip()[:253]
        if not name:
            return await page(request, viewer, 422)
        try:
            report = await asyncio.wait_for(
                Checker(ui.settings).check_domain(name), timeout=DOMAIN_TIMEOUT
            )
        except TimeoutError:
            error = viewer.t("checker.timeout", seconds=int(DOMAIN_TIMEOUT))
            return await page(request, viewer, 504, error=error, entered=name)
        return await page(request, viewer, report=report_context(report, viewer.lang), entered=name)

    @r.post("/checker/list", include_in_schema=False)
    async def list_check(request: Request, viewer: Viewer = need_sender) -> Response:
        form = await ui.form(request, viewer)
        addresses: AddressList | None = None
        source = ""
        if form.get("list_id").isdigit():
            service = ui.services.lists
            try:
                found = await service.get_list(int(form.get("list_id")))
            except KakitomeError as exc:
                return await page(request, viewer, 404, error=str(exc))

            async def members() -> Any:
                count = 0
                async for batch in service.iter_audience(found.id, batch_size=5_000):
                    for member in batch:
                        count += 1
                        if count > MAX_LIST_ADDRESSES:
                            return
                        yield member.address

            addresses = await collect_addresses(members())
            source = found.name
        elif form.get("csv").strip():
            addresses = read_addresses(form.get("csv"))
        if addresses is None:
            return await page(request, viewer, 422, error=viewer.t("checker.none_chosen"))
        try:
            result = await asyncio.wait_for(
                check_list(addresses, Checker(ui.settings)), timeout=LIST_TIMEOUT
            )
        except TimeoutError:
            error = viewer.t("checker.timeout", seconds=int(LIST_TIMEOUT))
            return await page(request, viewer, 504, error=error)
        return await page(request, viewer, list_report=result.to_dict(), source=source)

    return r


AREA = UIArea(
    name="checker",
    router=router,
    nav=(NavItem("checker", "/ui/checker", "nav.checker", "sender", 45),),
)
