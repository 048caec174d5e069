"""Campaigns: the list with status and statistics, the editor with a live preview
(desktop, mobile, text), test send, 配信予約 (schedule, in the list's time zone), send
now, pause / resume / cancel, and each campaign's statistics.

Preview: ``/ui/campaigns/{id}/preview?part=html|text&subscriber=...`` answers the message
exactly as composed for that subscriber (footer included, tracking off). The HTML is shown
in ``<iframe sandbox>`` (no scripts, no same-origin access) and served with its own CSP
(``default-src 'none'``; inline styles and images allowed, nothing else) and
``X-Frame-Options: SAMEORIGIN`` so only our own editor may frame it. Template errors
(syntax, unknown names, sandbox escapes) are shown on the editor before anything is sent;
schedule and send run ``CampaignService.validate`` first.

Roles: viewers read; ``sender`` edits, tests, schedules and sends. Every POST checks CSRF.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, Response

from kakitome.campaigns.stats import CampaignStats
from kakitome.campaigns.store import CampaignRow
from kakitome.campaigns.templates import BODY_FORMATS, TemplateSource, compile_template
from kakitome.errors import InputError, NotFound
from kakitome.lists.model import MailingList
from kakitome.web.ui.areas.lists import need, not_found
from kakitome.web.ui.context import UI, Viewer
from kakitome.web.ui.nav import NavItem, UIArea

PREVIEW_CSP = (
    "default-src 'none'; img-src data: https: http:; style-src 'unsafe-inline'; "
    "font-src data: https:; frame-ancestors 'self'; form-action 'none'; base-uri 'none'"
)
ACTIONS = ("send", "pause", "resume", "cancel")


def local_input(value: float | None, time_zone: str) -> str:
    """Epoch seconds as a ``datetime-local`` value in ``time_zone``."""
    if value is None:
        return ""
    from kakitome.campaigns.schedule import zone

    return datetime.fromtimestamp(value, zone(time_zone)).strftime("%Y-%m-%dT%H:%M")


def parse_local(text: str, time_zone: str) -> float:
    """A ``datetime-local`` value (``2026-02-01T09:00``) in ``time_zone`` as epoch seconds."""
    from kakitome.campaigns.schedule import zone

    try:
        naive = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"not a date and time: {text!r}") from None
    return naive.replace(tzinfo=zone(time_zone)).timestamp()


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    viewer_dep = Depends(ui.require("viewer"))

    async def index_page(
        request: Request, viewer: Viewer, status: int = 200, **extra: Any
    ) -> Response:
        service = ui.services.campaigns
        rows: list[tuple[CampaignRow, CampaignStats, str]] = []
        names = {item.id: item.display_title for item in await ui.services.lists.lists()}
        for row in reversed(await service.db.campaigns()):
            rows.append((row, await service.stats(row.id), names.get(row.list_id, "?")))
        return ui.render(
            request,
            viewer,
            "campaigns/index.html",
            status,
            rows=rows,
            lists=await ui.services.lists.lists(),
            formats=BODY_FORMATS,
            form=extra.pop("form", {}),
            **extra,
        )

    @r.get("/campaigns", include_in_schema=False)
    async def index(request: Request, viewer: Viewer = viewer_dep) -> Response:
        return await index_page(request, viewer)

    @r.post("/campaigns", include_in_schema=False)
    async def create(request: Request, viewer: Viewer = viewer_dep) -> Response:
        form = await ui.form(request, viewer)
        need(viewer, "sender")
        body_format = form.get("body_format") or "html"
        try:
            list_id = int(form.get("list_id") or "0")
            row = await ui.services.campaigns.create(
                form.get("name").strip()[:200] or form.get("subject").strip()[:200],
                list_id,
                subject=form.get("subject"),
                body=form.get("body"),
                body_format=body_format if body_format in BODY_FORMATS else "html",
                text=form.get("text") or None,
                expression=form.get("expression").strip() or None,
                tracking=form.get("tracking") == "1",
            )
        except (InputError, NotFound, ValueError) as exc:
            return await index_page(request, viewer, 422, error=str(exc), form=form)
        return ui.redirect(f"/ui/campaigns/{row.id}")

    async def load(campaign_id: int) -> tuple[CampaignRow, MailingList] | None:
        try:
            row = await ui.services.campaigns.get(campaign_id)
            return row, await ui.services.lists.get_list(row.list_id)
        except NotFound:
            return None

    async def editor(
        request: Request,
        viewer: Viewer,
        row: CampaignRow,
        mailing_list: MailingList,
        status: int = 200,
        **extra: Any,
    ) -> Response:
        service = ui.services.campaigns
        subscriber = request.query_params.get("subscriber", "")[:254]
        template_error = extra.pop("template_error", None)
        if template_error is None:
            try:
                await service.preview(row.id, subscriber or None)
            except (InputError, NotFound) as exc:
                template_error = str(exc)
        return ui.render(
            request,
            viewer,
            "campaigns/detail.html",
            status,
            c=row,
            lst=mailing_list,
            stats=await service.stats(row.id),
            formats=BODY_FORMATS,
            editable=row.status in ("draft", "scheduled"),
            template_error=template_error,
            subscriber=subscriber,
            scheduled_local=local_input(row.scheduled_at, mailing_list.time_zone),
            done=request.query_params.get("done", "")[:20],
            **extra,
        )

    @r.get("/campaigns/{campaign_id}", include_in_schema=False)
    async def detail(request: Request, campaign_id: int, viewer: Viewer = viewer_dep) -> Response:
        found = await load(campaign_id)
        if found is None:
            return not_found(ui, request, viewer)
        return await editor(request, viewer, *found)

    @r.post("/campaigns/{campaign_id}", include_in_schema=False)
    async def save(request: Request, campaign_id: int, viewer: Viewer = viewer_dep) -> Response:
        form = await ui.form(request, viewer)
        need(viewer, "sender")
        found = await load(campaign_id)
        if found is None:
            return not_found(ui, request, viewer)
        row, mailing_list = found
        body_format = form.get("body_format")
        if body_format not in BODY_FORMATS:
            body_format = row.body_format
        subject, body, text = form.get("subject"), form.get("body"), form.get("text") or None
        values: dict[str, Any] = {
            "subject": subject,
            "body": body,
            "body_format": body_format,
            "text": text,
            "expression": form.get("expression").strip() or None,
            "tracking": form.get("tracking") == "1",
        }
        try:
            compile_template(TemplateSource(subject, body, body_format, text))  # type: ignore[arg-type]
            await ui.services.campaigns.db.update_campaign(row.id, now=ui.clock(), **values)
        except InputError as exc:
            shown = dataclasses.replace(row, **values)
            return await editor(request, viewer, shown, mailing_list, 422, template_error=str(exc))
        return ui.redirect(f"/ui/campaigns/{row.id}?done=saved")

    @r.get("/campaigns/{campaign_id}/preview", include_in_schema=False)
    async def preview(
        request: Request,
        campaign_id: int,
        part: str = "html",
        subscriber: str = "",
        viewer: Viewer = viewer_dep,
    ) -> Response:
        headers = {
            "Content-Security-Policy": PREVIEW_CSP,
            "X-Frame-Options": "SAMEORIGIN",
            "Cache-Control": "no-store",
        }
        try:
            shown = await ui.services.campaigns.preview(campaign_id, subscriber[:254] or None)
        except (InputError, NotFound) as exc:
            return PlainTextResponse(str(exc), 422, headers=headers)
        if part == "text":
            return PlainTextResponse(
                f"Subject: {shown.subject}\n\n{shown.text or ''}", headers=headers
            )
        if part == "raw":
            return PlainTextResponse(shown.content.decode("utf-8", "replace"), headers=headers)
        html = shown.html
        if html is None:
            return PlainTextResponse(shown.text or "", headers=headers)
        return Response(html, media_type="text/html; charset=utf-8", headers=headers)

    @r.post("/campaigns/{campaign_id}/test", include_in_schema=False)
    async def test_send(
        request: Request, campaign_id: int, viewer: Viewer = viewer_dep
    ) -> Response:
        form = await ui.form(request, viewer)
        need(viewer, "sender")
        found = await load(campaign_id)
        if found is None:
            return not_found(ui, request, viewer)
        address = form.get("address").strip()
        try:
            await ui.services.campaigns.test_send(
                campaign_id, [address], subscriber=form.get("subscriber").strip() or None
            )
        except (InputError, NotFound) as exc:
            return await editor(request, viewer, *found, 422, error=str(exc))
        return await editor(
            request, viewer, *found, notice=viewer.t("campaigns.test_sent", address=address)
        )

    @r.post("/campaigns/{campaign_id}/schedule", include_in_schema=False)
    async def schedule(request: Request, campaign_id: int, viewer: Viewer = viewer_dep) -> Response:
        form = await ui.form(request, viewer)
        need(viewer, "sender")
        found = await load(campaign_id)
        if found is None:
            return not_found(ui, request, viewer)
        try:
            at = parse_local(form.get("at"), found[1].time_zone)
            await ui.services.campaigns.schedule(campaign_id, at)
        except (InputError, NotFound) as exc:
            return await editor(request, viewer, *found, 422, error=str(exc))
        return ui.redirect(f"/ui/campaigns/{campaign_id}?done=scheduled")

    @r.post("/campaigns/{campaign_id}/{action}", include_in_schema=False)
    async def act(
        request: Request, campaign_id: int, action: str, viewer: Viewer = viewer_dep
    ) -> Response:
        await ui.form(request, viewer)
        need(viewer, "sender")
        found = await load(campaign_id)
        if found is None or action not in ACTIONS:
            return not_found(ui, request, viewer)
        service = ui.services.campaigns
        try:
            if action == "send":
                await service.send_now(campaign_id)
            elif action == "pause":
                await service.pause(campaign_id)
            elif action == "resume":
                await service.resume(campaign_id)
            else:
                await service.cancel(campaign_id)
        except (InputError, NotFound) as exc:
            return await editor(request, viewer, *found, 422, error=str(exc))
        return ui.redirect(f"/ui/campaigns/{campaign_id}?done={action}")

    return r


EN = {
    "nav.campaigns": "Campaigns",
    "campaigns.title": "Campaigns",
    "campaigns.none": "No campaigns yet.",
    "campaigns.new": "New campaign",
    "campaigns.name": "Name",
    "campaigns.list": "List",
    "campaigns.subject": "Subject",
    "campaigns.format": "Body format",
    "campaigns.format.html": "HTML",
    "campaigns.format.markdown": "Markdown",
    "campaigns.format.text": "Plain text",
    "campaigns.body": "Body (template)",
    "campaigns.text": "Text part (optional; made from the HTML when empty)",
    "campaigns.expression": "Segment expression (optional)",
    "campaigns.tracking": "Track opens and clicks",
    "campaigns.template_hint": "Placeholders: {{ name }}, {{ name | honorific }} (山田太郎様 or "
    "お客様), {{ email }}, {{ attr_name | default('…') }}.",
    "campaigns.status": "Status",
    "campaigns.status.draft": "draft",
    "campaigns.status.scheduled": "scheduled",
    "campaigns.status.sending": "sending",
    "campaigns.status.paused": "paused",
    "campaigns.status.finished": "finished",
    "campaigns.status.cancelled": "cancelled",
    "campaigns.template_error": "The template has an error; nothing can be sent until it is fixed:",
    "campaigns.preview": "Preview",
    "campaigns.preview_as": "Preview as subscriber (address or id; empty: a blank one)",
    "campaigns.desktop": "Desktop",
    "campaigns.mobile": "Mobile",
    "campaigns.text_view": "Text",
    "campaigns.raw": "Raw message",
    "campaigns.test": "Test send",
    "campaigns.test_to": "Send a test to",
    "campaigns.test_sent": "A test was queued for {address}.",
    "campaigns.schedule": "Schedule (配信予約)",
    "campaigns.schedule_at": "Send at ({zone})",
    "campaigns.action.send": "Send now",
    "campaigns.action.pause": "Pause",
    "campaigns.action.resume": "Resume",
    "campaigns.action.cancel": "Cancel",
    "campaigns.done.saved": "Saved.",
    "campaigns.done.scheduled": "Scheduled.",
    "campaigns.done.send": "Sending starts within seconds.",
    "campaigns.done.pause": "Paused.",
    "campaigns.done.resume": "Resumed.",
    "campaigns.done.cancel": "Cancelled.",
    "campaigns.stats": "Statistics",
    "campaigns.sent": "Sent",
    "campaigns.delivered": "Delivered",
    "campaigns.deferred": "Deferred",
    "campaigns.bounced": "Bounced",
    "campaigns.opened": "Opened",
    "campaigns.clicked": "Clicked",
    "campaigns.unsubscribed": "Unsubscribed",
    "campaigns.queued": "Queued",
    "campaigns.failed": "Failed",
    "campaigns.verified_tls": "Delivered over verified TLS",
    "campaigns.scheduled_at": "Scheduled for",
    "campaigns.editor": "Editor",
    "campaigns.readonly": "This campaign can no longer be edited.",
}

JA = {
    "nav.campaigns": "キャンペーン",
    "campaigns.title": "キャンペーン",
    "campaigns.none": "キャンペーンはまだありません。",
    "campaigns.new": "新しいキャンペーン",
    "campaigns.name": "名前",
    "campaigns.list": "リスト",
    "campaigns.subject": "件名",
    "campaigns.format": "本文の形式",
    "campaigns.format.html": "HTML",
    "campaigns.format.markdown": "Markdown",
    "campaigns.format.text": "テキスト",
    "campaigns.body": "本文（テンプレート）",
    "campaigns.text": "テキストパート（任意。空なら HTML から生成）",
    "campaigns.expression": "セグメント条件式（任意）",
    "campaigns.tracking": "開封とクリックを計測する",
    "campaigns.template_hint": "差し込み: {{ name }}、{{ name | honorific }}（山田太郎様、"
    "空ならお客様）、{{ email }}、{{ 属性 | default('…') }}。",
    "campaigns.status": "状態",
    "campaigns.status.draft": "下書き",
    "campaigns.status.scheduled": "配信予約",
    "campaigns.status.sending": "配信中",
    "campaigns.status.paused": "一時停止",
    "campaigns.status.finished": "配信完了",
    "campaigns.status.cancelled": "中止",
    "campaigns.template_error": "テンプレートにエラーがあります。修正するまで配信できません:",
    "campaigns.preview": "プレビュー",
    "campaigns.preview_as": "購読者としてプレビュー（アドレスまたは ID。空なら名前なし）",
    "campaigns.desktop": "PC",
    "campaigns.mobile": "スマートフォン",
    "campaigns.text_view": "テキスト",
    "campaigns.raw": "メッセージ全体",
    "campaigns.test": "テスト送信",
    "campaigns.test_to": "テスト送信先",
    "campaigns.test_sent": "{address} 宛てにテストを送信しました。",
    "campaigns.schedule": "配信予約",
    "campaigns.schedule_at": "配信日時（{zone}）",
    "campaigns.action.send": "今すぐ配信",
    "campaigns.action.pause": "一時停止",
    "campaigns.action.resume": "再開",
    "campaigns.action.cancel": "中止",
    "campaigns.done.saved": "保存しました。",
    "campaigns.done.scheduled": "配信を予約しました。",
    "campaigns.done.send": "まもなく配信を開始します。",
    "campaigns.done.pause": "一時停止しました。",
    "campaigns.done.resume": "再開しました。",
    "campaigns.done.cancel": "中止しました。",
    "campaigns.stats": "配信結果",
    "campaigns.sent": "送信",
    "campaigns.delivered": "配信成功",
    "campaigns.deferred": "再送待ち",
    "campaigns.bounced": "不達",
    "campaigns.opened": "開封",
    "campaigns.clicked": "クリック",
    "campaigns.unsubscribed": "配信停止",
    "campaigns.queued": "キュー",
    "campaigns.failed": "失敗",
    "campaigns.verified_tls": "検証済み TLS での配信",
    "campaigns.scheduled_at": "予約日時",
    "campaigns.editor": "エディター",
    "campaigns.readonly": "このキャンペーンはもう編集できません。",
}

AREA = UIArea(
    name="campaigns",
    router=router,
    nav=(NavItem("campaigns", "/ui/campaigns", "nav.campaigns", "viewer", 45),),
    messages={"en": EN, "ja": JA},
)
