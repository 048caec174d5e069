"""Step mail (ステップメール): sequences on a list and their steps (N days after a
subscriber confirms, at an optional hour in the list's time zone); add, edit and remove
steps, pause and reactivate a sequence.

Editing or removing a step never resends it to those who got it (``sequence_sends``);
a new step's template is checked before it is saved. Roles: viewers read; ``sender``
changes. Every POST checks CSRF.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from kakitome.campaigns.store import NewStep, SequenceRow
from kakitome.campaigns.templates import BODY_FORMATS
from kakitome.errors import InputError, NotFound
from kakitome.web.ui.areas.lists import need, not_found
from kakitome.web.ui.context import UI, Form, Viewer
from kakitome.web.ui.nav import NavItem, UIArea


def _step_values(form: Form) -> dict[str, Any]:
    try:
        delay = int(form.get("delay_days") or "0")
        hour_text = form.get("send_hour").strip()
        hour = int(hour_text) if hour_text else None
    except ValueError:
        raise InputError("days and hour are whole numbers") from None
    body_format = form.get("body_format")
    return {
        "delay_days": delay,
        "send_hour": hour,
        "subject": form.get("subject"),
        "body": form.get("body"),
        "body_format": body_format if body_format in BODY_FORMATS else "html",
        "text": form.get("text") or None,
    }


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    viewer_dep = Depends(ui.require("viewer"))

    async def index_page(
        request: Request, viewer: Viewer, status: int = 200, **extra: Any
    ) -> Response:
        service = ui.services.campaigns
        lists = await ui.services.lists.lists()
        names = {item.id: item.display_title for item in lists}
        rows = [
            (s, names.get(s.list_id, "?"), len(await service.db.steps(s.id)))
            for s in await service.db.sequences()
        ]
        return ui.render(
            request, viewer, "sequences/index.html", status, rows=rows, lists=lists, **extra
        )

    @r.get("/sequences", include_in_schema=False)
    async def index(request: Request, viewer: Viewer = viewer_dep) -> Response:
        return await index_page(request, viewer)

    @r.post("/sequences", include_in_schema=False)
    async def create(request: Request, viewer: Viewer = viewer_dep) -> Response:
        form = await ui.form(request, viewer)
        need(viewer, "sender")
        try:
            row = await ui.services.campaigns.create_sequence(
                form.get("name").strip()[:200], int(form.get("list_id") or "0")
            )
        except (InputError, NotFound, ValueError) as exc:
            return await index_page(request, viewer, 422, error=str(exc))
        return ui.redirect(f"/ui/sequences/{row.id}")

    async def load(sequence_id: int) -> SequenceRow | None:
        try:
            return await ui.services.campaigns.db.get_sequence(sequence_id)
        except NotFound:
            return None

    async def detail_page(
        request: Request, viewer: Viewer, sequence: SequenceRow, status: int = 200, **extra: Any
    ) -> Response:
        service = ui.services.campaigns
        return ui.render(
            request,
            viewer,
            "sequences/detail.html",
            status,
            s=sequence,
            lst=await ui.services.lists.get_list(sequence.list_id),
            steps=await service.db.steps(sequence.id),
            formats=BODY_FORMATS,
            done=request.query_params.get("done", "")[:20],
            **extra,
        )

    @r.get("/sequences/{sequence_id}", include_in_schema=False)
    async def detail(request: Request, sequence_id: int, viewer: Viewer = viewer_dep) -> Response:
        found = await load(sequence_id)
        if found is None:
            return not_found(ui, request, viewer)
        return await detail_page(request, viewer, found)

    @r.post("/sequences/{sequence_id}/status", include_in_schema=False)
    async def set_status(
        request: Request, sequence_id: int, viewer: Viewer = viewer_dep
    ) -> Response:
        form = await ui.form(request, viewer)
        need(viewer, "sender")
        found = await load(sequence_id)
        if found is None:
            return not_found(ui, request, viewer)
        status = "paused" if form.get("status") == "paused" else "active"
        await ui.services.campaigns.db.set_sequence_status(found.id, status, now=ui.clock())
        return ui.redirect(f"/ui/sequences/{found.id}?done=saved")

    @r.post("/sequences/{sequence_id}/steps", include_in_schema=False)
    async def add_step(request: Request, sequence_id: int, viewer: Viewer = viewer_dep) -> Response:
        form = await ui.form(request, viewer)
        need(viewer, "sender")
        found = await load(sequence_id)
        if found is None:
            return not_found(ui, request, viewer)
        try:
            await ui.services.campaigns.add_step(found.id, NewStep(**_step_values(form)))
        except (InputError, NotFound) as exc:
            return await detail_page(request, viewer, found, 422, error=str(exc))
        return ui.redirect(f"/ui/sequences/{found.id}?done=added")

    @r.post("/sequences/{sequence_id}/steps/{step_id}", include_in_schema=False)
    async def edit_step(
        request: Request, sequence_id: int, step_id: int, viewer: Viewer = viewer_dep
    ) -> Response:
        form = await ui.form(request, viewer)
        need(viewer, "sender")
        found = await load(sequence_id)
        if found is None:
            return not_found(ui, request, viewer)
        service = ui.services.campaigns
        try:
            step = await service.db.get_step(step_id)
            if step.sequence_id != found.id:
                raise NotFound("no such step")
            await service.update_step(step_id, **_step_values(form))
        except (InputError, NotFound) as exc:
            return await detail_page(request, viewer, found, 422, error=str(exc))
        return ui.redirect(f"/ui/sequences/{found.id}?done=saved")

    @r.post("/sequences/{sequence_id}/steps/{step_id}/remove", include_in_schema=False)
    async def remove_step(
        request: Request, sequence_id: int, step_id: int, viewer: Viewer = viewer_dep
    ) -> Response:
        await ui.form(request, viewer)
        need(viewer, "sender")
        found = await load(sequence_id)
        if found is None:
            return not_found(ui, request, viewer)
        service = ui.services.campaigns
        try:
            step = await service.db.get_step(step_id)
            if step.sequence_id != found.id:
                raise NotFound("no such step")
            await service.remove_step(step_id)
        except NotFound:
            return not_found(ui, request, viewer)
        return ui.redirect(f"/ui/sequences/{found.id}?done=removed")

    return r


EN = {
    "nav.sequences": "Step mail",
    "sequences.title": "Step mail",
    "sequences.none": "No sequences yet.",
    "sequences.new": "New sequence",
    "sequences.name": "Name",
    "sequences.list": "List",
    "sequences.steps": "Steps",
    "sequences.status": "Status",
    "sequences.status.active": "active",
    "sequences.status.paused": "paused",
    "sequences.pause": "Pause",
    "sequences.activate": "Activate",
    "sequences.hint": "Subscribers confirmed from now on start at step 1; each step is sent "
    "N days after confirmation, at the given hour in the list's time zone.",
    "sequences.position": "#",
    "sequences.delay_days": "Days after confirmation",
    "sequences.send_hour": "Hour (0–23, empty: any time)",
    "sequences.subject": "Subject",
    "sequences.format": "Body format",
    "sequences.body": "Body (template)",
    "sequences.text": "Text part (optional)",
    "sequences.add_step": "Add a step",
    "sequences.edit_step": "Edit step {n}",
    "sequences.remove_step": "Remove step {n}",
    "sequences.no_steps": "No steps yet.",
    "sequences.done.saved": "Saved.",
    "sequences.done.added": "The step was added.",
    "sequences.done.removed": "The step was removed.",
}

JA = {
    "nav.sequences": "ステップメール",
    "sequences.title": "ステップメール",
    "sequences.none": "シーケンスはまだありません。",
    "sequences.new": "新しいシーケンス",
    "sequences.name": "名前",
    "sequences.list": "リスト",
    "sequences.steps": "ステップ",
    "sequences.status": "状態",
    "sequences.status.active": "有効",
    "sequences.status.paused": "一時停止",
    "sequences.pause": "一時停止",
    "sequences.activate": "有効にする",
    "sequences.hint": "これから登録を確認した購読者はステップ 1 から始まります。各ステップは確認の "
    "N 日後、リストのタイムゾーンの指定時刻に送られます。",
    "sequences.position": "#",
    "sequences.delay_days": "確認からの日数",
    "sequences.send_hour": "時刻（0〜23。空なら指定なし）",
    "sequences.subject": "件名",
    "sequences.format": "本文の形式",
    "sequences.body": "本文（テンプレート）",
    "sequences.text": "テキストパート（任意）",
    "sequences.add_step": "ステップを追加",
    "sequences.edit_step": "ステップ {n} を編集",
    "sequences.remove_step": "ステップ {n} を削除",
    "sequences.no_steps": "ステップはまだありません。",
    "sequences.done.saved": "保存しました。",
    "sequences.done.added": "ステップを追加しました。",
    "sequences.done.removed": "ステップを削除しました。",
}

AREA = UIArea(
    name="sequences",
    router=router,
    nav=(NavItem("sequences", "/ui/sequences", "nav.sequences", "viewer", 46),),
    messages={"en": EN, "ja": JA},
)
