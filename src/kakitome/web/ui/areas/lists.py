"""Lists, subscribers, segments, CSV import (with a progress bar) and export.

Pages (under ``/ui``): ``/lists`` (every list with member counts; a new list),
``/lists/{id}`` (settings, members with search and pages, segments), a subscriber's edit
page, ``/lists/{id}/import`` (upload → background task → progress page polled by htmx →
report of rejected rows with their line numbers) and ``/lists/{id}/export`` (CSV).

Roles: viewers read; ``sender`` manages subscribers, imports, exports and segments;
``admin`` creates, edits and removes lists. Every POST checks the CSRF token (the CSV
upload is ``multipart/form-data``: its token is checked here the same way ``UI.form``
does for url-encoded forms).

What it trusts: nothing from the form before validation by ``ListService``; uploads are
limited to ``MAX_IMPORT_BYTES``. Import jobs are rows of ``list_import_jobs``
(kakitome.lists.import_jobs_store): the upload is imported by a task of the process that
received it, which records progress about once a second; any web process shows the
progress and the report, a job whose process died is shown as interrupted, and finished
jobs are forgotten ``JOB_TTL`` seconds after they end.

Everything goes through the process's one ``ListService`` (``ui.services.lists``, whose
injector DKIM-signs confirmation mails and gives them the VERP return path, as the API's
does): searching members (``members(search=...)``), editing a subscriber
(``update_subscriber``), editing a list (``update_list``). No table is touched here.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import hmac
import io
import json
import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from kakitome.errors import InputError, NotFound, StorageError
from kakitome.lists.import_jobs_store import ImportJobStore
from kakitome.lists.model import (
    ENCODINGS,
    STATUSES,
    ImportReport,
    MailingList,
    Membership,
    NewList,
    OptIn,
)
from kakitome.lists.service import ListService
from kakitome.web.ui.context import CSRF_FIELD, UI, Forbidden, Viewer
from kakitome.web.ui.nav import NavItem, UIArea

PAGE_SIZE = 50
MAX_IMPORT_BYTES = 64 * 1024 * 1024
JOB_TTL = 7 * 86_400.0
# How often the importing process records progress (also its heartbeat).
PROGRESS_INTERVAL = 1.0

log = structlog.get_logger("kakitome.web.ui.lists")


def need(viewer: Viewer, role: str) -> None:
    """403 unless the viewer has ``role`` (checked on every POST, not only by hiding)."""
    if not viewer.can(role):
        raise Forbidden(viewer.t("error.role", role=viewer.t(f"role.{role}")))


def not_found(ui: UI, request: Request, viewer: Viewer) -> Response:
    return ui.render(request, viewer, "layout/error.html", 404, message=viewer.t("lists.not_found"))


# -- import jobs ---------------------------------------------------------------------------


class _Counting(io.BytesIO):
    """A BytesIO whose read position is the import's progress."""


# Which process runs a job (recorded with it; helps reading the table after a crash).
_OWNER = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
# Running imports: held so the event loop does not drop them.
_TASKS: set[asyncio.Task[None]] = set()


@dataclass(frozen=True, slots=True)
class _ProgressList:
    """What the progress page shows of the list."""

    id: int
    display_title: str


def import_jobs(ui: UI) -> ImportJobStore:
    return ui.services.import_jobs


def _position(source: _Counting) -> int:
    try:
        return source.tell()
    except ValueError:  # closed: the import has ended and finish() records the end
        return 0


async def _run_import(
    service: ListService,
    jobs: ImportJobStore,
    job_id: str,
    list_id: int,
    data: _Counting,
    encoding: str | None,
    status: str,
    source: str,
) -> None:
    stopped = asyncio.Event()

    async def beat() -> None:
        # Stopped between writes, never cancelled inside one: a write cancelled mid-way
        # invalidates its connection, and on a loaded machine that happened often enough
        # to lose the job's end (it then showed as interrupted).
        while not stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), PROGRESS_INTERVAL)
                return
            with contextlib.suppress(StorageError):
                await jobs.progress(job_id, position=_position(data), now=time.time())

    ticker = asyncio.create_task(beat())
    report: ImportReport | None = None
    error: str | None = None
    try:
        report = await service.import_csv(
            list_id,
            data,
            encoding=encoding,
            optin=OptIn("import", source[:200]),
            status=status,
        )
    except (InputError, NotFound) as exc:
        error = str(exc)
    except asyncio.CancelledError:
        error = "the web process stopped during the import"
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        stopped.set()
        try:
            await ticker
        except Exception:  # a bug in the heartbeat must not lose the job's end
            log.exception("import heartbeat failed", job_id=job_id)
        # If this cannot be recorded, the missing heartbeat marks the job interrupted.
        with contextlib.suppress(StorageError):
            await jobs.finish(job_id, report=report, error=error, now=time.time())


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    """Fields and files of a ``multipart/form-data`` body (the stdlib MIME parser)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    if not message.is_multipart():
        return fields, files
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if part.get_param("filename", header="content-disposition") is not None:
            files[name] = data
        else:
            fields[name] = data.decode("utf-8", "replace")
    return fields, files


def spec_from(form: Any, name: str) -> NewList:
    def opt(key: str) -> str | None:
        value = str(form.get(key)).strip()
        return value or None

    return NewList(
        name=name,
        title=form.get("title").strip(),
        description=form.get("description").strip(),
        opt_in="single" if form.get("opt_in") == "single" else "double",
        from_name=form.get("from_name").strip(),
        from_address=form.get("from_address").strip(),
        reply_to=form.get("reply_to").strip(),
        sender_organization=form.get("sender_organization").strip(),
        sender_postal_address=form.get("sender_postal_address").strip(),
        time_zone=form.get("time_zone").strip() or "Asia/Tokyo",
        quiet_start=opt("quiet_start"),
        quiet_end=opt("quiet_end"),
        encoding=form.get("encoding") or "utf-8",
        mail_domain=opt("mail_domain"),
    )


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    viewer_dep = Depends(ui.require("viewer"))

    async def index_page(
        request: Request, viewer: Viewer, status: int = 200, **extra: Any
    ) -> Response:
        service = ui.services.lists
        rows = []
        for item in await service.lists():
            counts = await service.count_members(item.id)
            rows.append((item, counts, sum(counts.values())))
        return ui.render(
            request,
            viewer,
            "lists/index.html",
            status,
            rows=rows,
            encodings=ENCODINGS,
            form=extra.pop("form", {}),
            **extra,
        )

    @r.get("/lists", include_in_schema=False)
    async def index(request: Request, viewer: Viewer = viewer_dep) -> Response:
        return await index_page(request, viewer)

    @r.post("/lists", include_in_schema=False)
    async def create(request: Request, viewer: Viewer = viewer_dep) -> Response:
        form = await ui.form(request, viewer)
        need(viewer, "admin")
        try:
            created = await ui.services.lists.create_list(spec_from(form, form.get("name").strip()))
        except InputError as exc:
            return await index_page(request, viewer, 422, error=str(exc), form=form)
        return ui.redirect(f"/ui/lists/{created.id}?done=created")

    async def detail_page(
        request: Request,
        viewer: Viewer,
        mailing_list: MailingList,
        status: int = 200,
        **extra: Any,
    ) -> Response:
        service = ui.services.lists
        params = request.query_params
        q = params.get("q", "")[:200].strip()
        member_status = params.get("status", "")
        after = int(params.get("after", "0")) if params.get("after", "").isdigit() else 0
        members = await service.members(
            mailing_list.id,
            status=member_status if member_status in STATUSES else None,
            after_subscriber_id=after,
            limit=PAGE_SIZE + 1,
            search=q,
        )
        more = len(members) > PAGE_SIZE
        members = members[:PAGE_SIZE]
        segments = [s for s in await service.segments() if s.list_id in (None, mailing_list.id)]
        partial = bool(request.headers.get("hx-request")) and not request.headers.get("hx-boosted")
        return ui.render(
            request,
            viewer,
            "lists/_members.html"
            if partial and params.get("part") == "members"
            else "lists/detail.html",
            status,
            lst=mailing_list,
            counts=await service.count_members(mailing_list.id),
            members=members,
            next_after=members[-1].subscriber.id if more and members else None,
            q=q,
            member_status=member_status,
            after=after,
            statuses=STATUSES,
            segments=segments,
            encodings=ENCODINGS,
            done=params.get("done", "")[:20],
            public_url=service.public_url,
            **extra,
        )

    async def get_list(list_id: int) -> MailingList | None:
        try:
            return await ui.services.lists.get_list(list_id)
        except NotFound:
            return None

    @r.get("/lists/{list_id}", include_in_schema=False)
    async def detail(request: Request, list_id: int, viewer: Viewer = viewer_dep) -> Response:
        found = await get_list(list_id)
        if found is None:
            return not_found(ui, request, viewer)
        return await detail_page(request, viewer, found)

    @r.post("/lists/{list_id}", include_in_schema=False)
    async def edit(request: Request, list_id: int, viewer: Viewer = viewer_dep) -> Response:
        form = await ui.form(request, viewer)
        need(viewer, "admin")
        found = await get_list(list_id)
        if found is None:
            return not_found(ui, request, viewer)
        try:
            await ui.services.lists.update_list(found.id, **asdict(spec_from(form, found.name)))
        except InputError as exc:
            return await detail_page(request, viewer, found, 422, error=str(exc))
        return ui.redirect(f"/ui/lists/{list_id}?done=saved")

    @r.post("/lists/{list_id}/remove", include_in_schema=False)
    async def remove(request: Request, list_id: int, viewer: Viewer = viewer_dep) -> Response:
        await ui.form(request, viewer)
        need(viewer, "admin")
        try:
            await ui.services.lists.remove_list(list_id)
        except NotFound:
            return not_found(ui, request, viewer)
        return ui.redirect("/ui/lists")

    # -- subscribers ----------------------------------------------------------------------

    @r.post("/lists/{list_id}/subscribers", include_in_schema=False)
    async def add(request: Request, list_id: int, viewer: Viewer = viewer_dep) -> Response:
        form = await ui.form(request, viewer)
        need(viewer, "sender")
        found = await get_list(list_id)
        if found is None:
            return not_found(ui, request, viewer)
        try:
            attributes = _attributes(form.get("attributes"))
            await ui.services.lists.add_subscriber(
                list_id,
                form.get("address").strip(),
                name=form.get("name").strip() or None,
                attributes=attributes or None,
                optin=OptIn(
                    "admin",
                    source="web",
                    detail=f"added by {viewer.user.username if viewer.user else '?'}",
                ),
                confirmed=form.get("confirmed") == "1",
            )
        except InputError as exc:
            return await detail_page(request, viewer, found, 422, error=str(exc))
        return ui.redirect(f"/ui/lists/{list_id}?done=added")

    async def membership(list_id: int, subscriber_id: int) -> Membership | None:
        try:
            return await ui.services.lists.membership(list_id, subscriber_id)
        except (NotFound, InputError):
            return None

    @r.get("/lists/{list_id}/subscribers/{subscriber_id}", include_in_schema=False)
    async def subscriber(
        request: Request, list_id: int, subscriber_id: int, viewer: Viewer = viewer_dep
    ) -> Response:
        found = await get_list(list_id)
        member = await membership(list_id, subscriber_id)
        if found is None or member is None:
            return not_found(ui, request, viewer)
        history = await ui.services.lists.history(member.subscriber.address, limit=50)
        return ui.render(
            request,
            viewer,
            "lists/subscriber.html",
            lst=found,
            member=member,
            history=history,
            statuses=STATUSES,
            attributes=json.dumps(member.subscriber.attributes, ensure_ascii=False, indent=2),
        )

    @r.post("/lists/{list_id}/subscribers/{subscriber_id}", include_in_schema=False)
    async def save_subscriber(
        request: Request, list_id: int, subscriber_id: int, viewer: Viewer = viewer_dep
    ) -> Response:
        form = await ui.form(request, viewer)
        need(viewer, "sender")
        found = await get_list(list_id)
        member = await membership(list_id, subscriber_id)
        if found is None or member is None:
            return not_found(ui, request, viewer)
        try:
            await ui.services.lists.update_subscriber(
                subscriber_id,
                name=form.get("name").strip(),
                attributes=_attributes(form.get("attributes")),
            )
            new_status = form.get("status")
            if new_status in STATUSES and new_status != member.status:
                await ui.services.lists.set_status(
                    list_id, subscriber_id, new_status, reason="admin (web)"
                )
        except NotFound:  # removed meanwhile
            return not_found(ui, request, viewer)
        except InputError as exc:
            return ui.render(
                request,
                viewer,
                "lists/subscriber.html",
                422,
                lst=found,
                member=member,
                history=[],
                statuses=STATUSES,
                attributes=form.get("attributes"),
                error=str(exc),
            )
        return ui.redirect(f"/ui/lists/{list_id}/subscribers/{subscriber_id}?done=saved")

    @r.post("/lists/{list_id}/subscribers/{subscriber_id}/remove", include_in_schema=False)
    async def remove_subscriber(
        request: Request, list_id: int, subscriber_id: int, viewer: Viewer = viewer_dep
    ) -> Response:
        await ui.form(request, viewer)
        need(viewer, "sender")
        member = await membership(list_id, subscriber_id)
        if member is None:
            return not_found(ui, request, viewer)
        await ui.services.lists.remove_subscriber(list_id, member.subscriber.address)
        return ui.redirect(f"/ui/lists/{list_id}?done=removed")

    # -- import / export ------------------------------------------------------------------

    @r.get("/lists/{list_id}/import", include_in_schema=False)
    async def import_form(request: Request, list_id: int, viewer: Viewer = viewer_dep) -> Response:
        need(viewer, "sender")
        found = await get_list(list_id)
        if found is None:
            return not_found(ui, request, viewer)
        return ui.render(request, viewer, "lists/import.html", lst=found)

    @r.post("/lists/{list_id}/import", include_in_schema=False)
    async def start_import(request: Request, list_id: int, viewer: Viewer = viewer_dep) -> Response:
        if int(request.headers.get("content-length") or 0) > MAX_IMPORT_BYTES:
            raise Forbidden(viewer.t("error.too_large"))
        body = await request.body()
        if len(body) > MAX_IMPORT_BYTES:
            raise Forbidden(viewer.t("error.too_large"))
        kind = request.headers.get("content-type", "")
        fields, files = (
            parse_multipart(kind, body)
            if kind.lower().startswith("multipart/form-data")
            else ({}, {})
        )
        sent = request.headers.get("x-csrf-token") or fields.get(CSRF_FIELD, "")
        expected = viewer.csrf_token if viewer.new_csrf_cookie is None else ""
        if not sent or not expected or not hmac.compare_digest(sent, expected):
            raise Forbidden(viewer.t("error.csrf"))
        need(viewer, "sender")
        found = await get_list(list_id)
        if found is None:
            return not_found(ui, request, viewer)
        data = files.get("file", b"")
        if not data:
            return ui.render(
                request, viewer, "lists/import.html", 422, lst=found,
                error=viewer.t("lists.import_empty"),
            )  # fmt: skip
        encoding = fields.get("encoding", "")
        status = fields.get("status", "subscribed")
        if status not in ("subscribed", "unconfirmed"):
            status = "subscribed"
        now = time.time()
        jobs = import_jobs(ui)
        await jobs.forget_finished(before=now - JOB_TTL)
        job_id = secrets.token_urlsafe(16)
        who = viewer.user.username if viewer.user else "?"
        await jobs.create(job_id, found.id, size=len(data), started_by=who, owner=_OWNER, now=now)
        task = asyncio.create_task(
            _run_import(
                ui.services.lists,
                jobs,
                job_id,
                found.id,
                _Counting(data),
                encoding if encoding in ("utf-8", "utf-8-sig", "cp932") else None,
                status,
                f"web upload by {who}",
            )
        )
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)
        return ui.redirect(f"/ui/lists/{found.id}/import/{job_id}")

    @r.get("/lists/{list_id}/import/{job_id}", include_in_schema=False)
    async def import_progress(
        request: Request, list_id: int, job_id: str, viewer: Viewer = viewer_dep
    ) -> Response:
        # Only the jobs table is read (no write lock): on SQLite the list's own store would
        # wait behind the import's transactions.
        job = await import_jobs(ui).get(job_id[:32], now=time.time())
        if job is None or job.list_id != list_id:
            return not_found(ui, request, viewer)
        found = _ProgressList(list_id, job.list_title)
        partial = bool(request.headers.get("hx-request"))
        return ui.render(
            request,
            viewer,
            "lists/_progress.html" if partial else "lists/progress.html",
            lst=found,
            job=job,
            percent=round(job.progress * 100),
        )

    @r.get("/lists/{list_id}/export", include_in_schema=False)
    async def export(request: Request, list_id: int, viewer: Viewer = viewer_dep) -> Response:
        need(viewer, "sender")
        found = await get_list(list_id)
        if found is None:
            return not_found(ui, request, viewer)
        status = request.query_params.get("status", "")
        out = io.BytesIO()
        await ui.services.lists.export_csv(
            list_id, out, status=status if status in STATUSES else None
        )
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{found.name}.csv"'},
        )

    # -- segments -------------------------------------------------------------------------

    @r.post("/lists/{list_id}/segments/test", include_in_schema=False)
    async def test_segment(request: Request, list_id: int, viewer: Viewer = viewer_dep) -> Response:
        form = await ui.form(request, viewer)
        found = await get_list(list_id)
        if found is None:
            return not_found(ui, request, viewer)
        expression = form.get("expression").strip()
        count: int | None = None
        error = None
        try:
            count = await ui.services.lists.count_audience(list_id, expression=expression)
        except (InputError, NotFound) as exc:
            error = str(exc)
        return ui.render(
            request, viewer, "lists/_count.html", 200 if error is None else 422,
            count=count, error=error,
        )  # fmt: skip

    @r.post("/lists/{list_id}/segments", include_in_schema=False)
    async def save_segment(request: Request, list_id: int, viewer: Viewer = viewer_dep) -> Response:
        form = await ui.form(request, viewer)
        need(viewer, "sender")
        found = await get_list(list_id)
        if found is None:
            return not_found(ui, request, viewer)
        try:
            await ui.services.lists.save_segment(
                form.get("name").strip(), form.get("expression").strip(), list_ref=list_id
            )
        except InputError as exc:
            return await detail_page(request, viewer, found, 422, error=str(exc))
        return ui.redirect(f"/ui/lists/{list_id}?done=segment")

    @r.post("/lists/{list_id}/segments/{segment_id}/remove", include_in_schema=False)
    async def remove_segment(
        request: Request, list_id: int, segment_id: int, viewer: Viewer = viewer_dep
    ) -> Response:
        await ui.form(request, viewer)
        need(viewer, "sender")
        try:
            await ui.services.lists.remove_segment(segment_id)
        except NotFound:
            return not_found(ui, request, viewer)
        return ui.redirect(f"/ui/lists/{list_id}")

    return r


def _attributes(text: str) -> dict[str, Any]:
    text = text.strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InputError(f"attributes are not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InputError('attributes must be a JSON object, e.g. {"plan": "gold"}')
    return value


EN = {
    "nav.lists": "Lists",
    "lists.title": "Lists",
    "lists.none": "No lists yet.",
    "lists.new": "New list",
    "lists.not_found": "There is no such list or subscriber.",
    "lists.name": "Name (for URLs and addresses)",
    "lists.list_title": "Title",
    "lists.description": "Description",
    "lists.opt_in": "Opt-in",
    "lists.opt_in.single": "single opt-in",
    "lists.opt_in.double": "double opt-in (confirmation mail)",
    "lists.from_name": "Sender name",
    "lists.from_address": "Sender address",
    "lists.reply_to": "Reply-To",
    "lists.organization": "Organisation (sender, for the legal footer)",
    "lists.postal_address": "Postal address (for the legal footer)",
    "lists.time_zone": "Time zone",
    "lists.quiet": "Quiet hours (no sending), HH:MM – HH:MM",
    "lists.quiet_start": "Quiet hours start",
    "lists.quiet_end": "Quiet hours end",
    "lists.encoding": "Encoding",
    "lists.mail_domain": "List mail domain (blank-mail sign-up, mailto unsubscribe)",
    "lists.members": "Members",
    "lists.total": "Total",
    "lists.settings": "Settings",
    "lists.subscribers": "Subscribers",
    "lists.search": "Search address or name",
    "lists.add": "Add a subscriber",
    "lists.address": "Address",
    "lists.person": "Name",
    "lists.attributes": "Attributes (JSON object)",
    "lists.confirmed": "Consent already given (subscribe without a confirmation mail)",
    "lists.no_members": "No subscribers match.",
    "lists.import": "Import CSV",
    "lists.export": "Export CSV",
    "lists.import_file": "CSV file (UTF-8, UTF-8 with BOM or Shift_JIS)",
    "lists.import_encoding": "Encoding of the file",
    "lists.import_auto": "detect",
    "lists.import_status": "Imported people are",
    "lists.import_hint": "Columns: email (or メールアドレス), name (or 名前); every other "
    "column becomes an attribute. Existing subscribers are updated, never duplicated.",
    "lists.import_empty": "Choose a CSV file first.",
    "lists.import_running": "Importing…",
    "lists.import_done": "Import finished",
    "lists.import_failed": "The import failed",
    "lists.import_interrupted": "The import was interrupted",
    "lists.import_interrupted_detail": "The web process running this import stopped (a "
    "restart or a crash) after reading {percent}% of the file. Subscribers in the batches "
    "committed before then are in the list; importing the file again is safe: existing "
    "subscribers are updated, never duplicated.",
    "lists.import_summary": "{rows} rows: {inserted} new, {updated} updated, {rejected} "
    "rejected ({encoding}, {seconds} s).",
    "lists.rejected": "Rejected rows",
    "lists.line": "Line",
    "lists.reason": "Reason",
    "lists.value": "Value",
    "lists.back": "Back to the list",
    "lists.segments": "Segments",
    "lists.segment_name": "Segment name",
    "lists.expression": "Expression",
    "lists.expression_hint": 'e.g. attr.plan = "gold" and not bounced',
    "lists.test": "Test",
    "lists.count": "{count} subscribers match now.",
    "lists.no_segments": "No segments yet.",
    "lists.signup_form": "Public sign-up page",
    "lists.history": "History",
    "lists.optin": "Opt-in record",
    "lists.done.created": "The list was created.",
    "lists.done.saved": "Saved.",
    "lists.done.added": "The subscriber was added.",
    "lists.done.removed": "The subscriber was removed from the list.",
    "lists.done.segment": "The segment was saved.",
    "lists.remove_list": "Remove this list",
    "lists.remove_named": "Remove {name}",
    "lists.edit_named": "Edit {name}",
    "lists.status.unconfirmed": "unconfirmed",
    "lists.status.subscribed": "subscribed",
    "lists.status.unsubscribed": "unsubscribed",
    "lists.status.bounced": "bounced",
    "lists.status.complained": "complained",
    "lists.any": "any",
    "lists.next": "Next page",
    "lists.first": "First page",
}

JA = {
    "nav.lists": "リスト",
    "lists.title": "リスト",
    "lists.none": "リストはまだありません。",
    "lists.new": "新しいリスト",
    "lists.not_found": "該当するリストまたは購読者はありません。",
    "lists.name": "名前（URL とアドレスに使用）",
    "lists.list_title": "タイトル",
    "lists.description": "説明",
    "lists.opt_in": "オプトイン",
    "lists.opt_in.single": "シングルオプトイン",
    "lists.opt_in.double": "ダブルオプトイン（確認メール）",
    "lists.from_name": "差出人名",
    "lists.from_address": "差出人アドレス",
    "lists.reply_to": "返信先（Reply-To）",
    "lists.organization": "送信者の名称（特定電子メール法の表示）",
    "lists.postal_address": "送信者の住所（特定電子メール法の表示）",
    "lists.time_zone": "タイムゾーン",
    "lists.quiet": "夜間配信停止（HH:MM – HH:MM）",
    "lists.quiet_start": "配信停止の開始",
    "lists.quiet_end": "配信停止の終了",
    "lists.encoding": "文字コード",
    "lists.mail_domain": "リストのメールドメイン（空メール登録・mailto 配信停止）",
    "lists.members": "購読者数",
    "lists.total": "合計",
    "lists.settings": "設定",
    "lists.subscribers": "購読者",
    "lists.search": "アドレスまたは名前で検索",
    "lists.add": "購読者を追加",
    "lists.address": "メールアドレス",
    "lists.person": "名前",
    "lists.attributes": "属性（JSON オブジェクト）",
    "lists.confirmed": "同意取得済み（確認メールなしで登録）",
    "lists.no_members": "該当する購読者はいません。",
    "lists.import": "CSV インポート",
    "lists.export": "CSV エクスポート",
    "lists.import_file": "CSV ファイル（UTF-8、BOM 付き UTF-8、Shift_JIS）",
    "lists.import_encoding": "ファイルの文字コード",
    "lists.import_auto": "自動判別",
    "lists.import_status": "取り込んだ人の状態",
    "lists.import_hint": "列: email（またはメールアドレス）、name（または名前）。その他の列は"
    "属性になります。既存の購読者は更新され、重複はしません。",
    "lists.import_empty": "先に CSV ファイルを選んでください。",
    "lists.import_running": "インポート中…",
    "lists.import_done": "インポートが完了しました",
    "lists.import_failed": "インポートに失敗しました",
    "lists.import_interrupted": "インポートが中断されました",
    "lists.import_interrupted_detail": "このインポートを実行していたウェブプロセスが、ファイルの "
    "{percent}% を読んだところで停止しました（再起動またはクラッシュ）。それまでにコミット"
    "された分の購読者はリストに入っています。同じファイルをもう一度インポートしても安全です"
    "（既存の購読者は更新され、重複はしません）。",
    "lists.import_summary": "{rows} 行: 新規 {inserted}、更新 {updated}、却下 {rejected}"
    "（{encoding}、{seconds} 秒）。",
    "lists.rejected": "却下された行",
    "lists.line": "行",
    "lists.reason": "理由",
    "lists.value": "値",
    "lists.back": "リストに戻る",
    "lists.segments": "セグメント",
    "lists.segment_name": "セグメント名",
    "lists.expression": "条件式",
    "lists.expression_hint": '例: attr.plan = "gold" and not bounced',
    "lists.test": "テスト",
    "lists.count": "現在 {count} 人が該当します。",
    "lists.no_segments": "セグメントはまだありません。",
    "lists.signup_form": "公開登録ページ",
    "lists.history": "履歴",
    "lists.optin": "オプトインの記録",
    "lists.done.created": "リストを作成しました。",
    "lists.done.saved": "保存しました。",
    "lists.done.added": "購読者を追加しました。",
    "lists.done.removed": "購読者をリストから削除しました。",
    "lists.done.segment": "セグメントを保存しました。",
    "lists.remove_list": "このリストを削除",
    "lists.remove_named": "{name} を削除",
    "lists.edit_named": "{name} を編集",
    "lists.status.unconfirmed": "未確認",
    "lists.status.subscribed": "購読中",
    "lists.status.unsubscribed": "配信停止",
    "lists.status.bounced": "不達",
    "lists.status.complained": "苦情",
    "lists.any": "すべて",
    "lists.next": "次のページ",
    "lists.first": "最初のページ",
}

AREA = UIArea(
    name="lists",
    router=router,
    nav=(NavItem("lists", "/ui/lists", "nav.lists", "viewer", 40),),
    messages={"en": EN, "ja": JA},
)
