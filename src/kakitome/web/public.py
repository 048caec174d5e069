"""Public pages for subscribers: unsubscribe (RFC 8058 one-click), double opt-in
confirmation, and a simple sign-up form; in Japanese and English.

What it talks to: anyone on the internet, link scanners included; no login, no cookies.
What it trusts: only signed tokens (``kakitome.lists.tokens``) in the path. Rules:

- A GET never changes anything: it shows a page whose button POSTs. Mail security
  scanners fetch every link in a message; they must not unsubscribe or confirm anyone.
- ``POST /unsubscribe/<token>`` unsubscribes with no cookie, no session and no form
  token: the signed path is the credential (RFC 8058 §3.2). The one-click body
  ``List-Unsubscribe=One-Click`` is recorded as such; any other body counts as the button
  of our own page. It answers 200 with a page and never redirects (RFC 8058 §3.1: mail
  providers do not follow redirects for one-click).
- Pages carry ``Cache-Control: no-store`` and ``Referrer-Policy: no-referrer`` (the
  token is in the URL) and ``X-Robots-Tag: noindex``.
- Request bodies are read up to ``MAX_FORM_BYTES``; the app's body limit applies as well.

Language: ``?lang=ja|en``, else the first of ja/en in ``Accept-Language``, else Japanese.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from kakitome.config import Settings
from kakitome.errors import InputError, NotFound
from kakitome.injection import Injector
from kakitome.lists.model import SUBSCRIBED, UNSUBSCRIBED, MailingList, OptIn, TokenError
from kakitome.lists.service import ListService
from kakitome.store.repository import Store

__all__ = ["MAX_FORM_BYTES", "TEXTS", "choose_language", "public_router"]

MAX_FORM_BYTES = 8 * 1024
LANGUAGES = ("ja", "en")
_TEMPLATES = Path(__file__).parent / "templates"

TEXTS: dict[str, dict[str, str]] = {
    "ja": {
        "unsub_title": "配信停止",
        "unsub_ask": "{address} 宛ての配信を停止しますか？",
        "unsub_button": "配信を停止する",
        "unsub_done_title": "配信を停止しました",
        "unsub_done": "{address} 宛ての配信を停止しました。今後このリストのメールは届きません。",
        "unsub_already": "{address} 宛ての配信はすでに停止されています。",
        "confirm_title": "登録の確認",
        "confirm_ask": "{address} を登録します。よろしければボタンを押してください。",
        "confirm_button": "登録を完了する",
        "confirm_done_title": "登録が完了しました",
        "confirm_done": "{address} の登録が完了しました。ありがとうございます。",
        "confirm_gone": "この登録は取り消されています。もう一度お申し込みください。",
        "signup_title": "メールマガジン登録",
        "signup_button": "登録する",
        "signup_email": "メールアドレス",
        "signup_name": "お名前（任意）",
        "signup_sent_title": "確認メールを送信しました",
        "signup_sent": (
            "{address} に確認メールを送りました。メール内のリンクから登録を完了してください。"
        ),
        "signup_done_title": "登録が完了しました",
        "signup_done": "{address} を登録しました。",
        "error_title": "エラー",
        "bad_link": "このリンクは無効です。メールに記載されたリンクをそのままお使いください。",
        "expired": "このリンクは有効期限が切れています。もう一度お申し込みください。",
        "not_found": "お探しのページは見つかりません。",
        "bad_input": "入力内容を確認してください: {reason}",
        "note_no_cookie": "このページは Cookie を使用しません。",
    },
    "en": {
        "unsub_title": "Unsubscribe",
        "unsub_ask": "Stop sending this list's mail to {address}?",
        "unsub_button": "Unsubscribe",
        "unsub_done_title": "You are unsubscribed",
        "unsub_done": "{address} will get no more mail from this list.",
        "unsub_already": "{address} was already unsubscribed.",
        "confirm_title": "Confirm your subscription",
        "confirm_ask": "Press the button to subscribe {address}.",
        "confirm_button": "Confirm",
        "confirm_done_title": "Subscription confirmed",
        "confirm_done": "{address} is now subscribed. Thank you.",
        "confirm_gone": "This subscription was withdrawn. Please sign up again.",
        "signup_title": "Subscribe",
        "signup_button": "Subscribe",
        "signup_email": "Email address",
        "signup_name": "Name (optional)",
        "signup_sent_title": "Check your mail",
        "signup_sent": "We sent a confirmation mail to {address}. Open its link to finish.",
        "signup_done_title": "Subscribed",
        "signup_done": "{address} is now subscribed.",
        "error_title": "Error",
        "bad_link": "This link is not valid. Please use the link exactly as it was in the mail.",
        "expired": "This link has expired. Please sign up again.",
        "not_found": "There is no such page.",
        "bad_input": "Please check what you entered: {reason}",
        "note_no_cookie": "This page uses no cookies.",
    },
}

_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}


def choose_language(request: Request) -> str:
    """``?lang=``, else Accept-Language (first ja/en by order of preference), else ja."""
    asked = request.query_params.get("lang", "").lower()
    if asked in LANGUAGES:
        return asked
    ranked: list[tuple[float, int, str]] = []
    header = request.headers.get("accept-language", "")
    for index, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        base = tag.strip().lower().split("-")[0]
        if base in LANGUAGES and quality > 0:
            ranked.append((-quality, index, base))
    return min(ranked)[2] if ranked else "ja"


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    label: str
    type: str
    required: bool


def public_router(
    settings: Settings,
    store: Store,
    injector: Injector | None,
    clock: Callable[[], float] = time.time,
    *,
    service: ListService | None = None,
) -> APIRouter:
    """The public pages, over a ListService made from the arguments (or ``service``)."""
    lists = service or ListService(store, settings, injector=injector, clock=clock)
    env = Environment(
        loader=FileSystemLoader(str(_TEMPLATES)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        auto_reload=False,
    )
    page = env.get_template("public/page.html")
    router = APIRouter(include_in_schema=False)

    def render(
        request: Request,
        status: int,
        title_key: str,
        lines: list[str],
        *,
        mailing_list: MailingList | None = None,
        action: str | None = None,
        button_key: str | None = None,
        fields: list[_Field] | None = None,
        error: bool = False,
    ) -> HTMLResponse:
        lang = choose_language(request)
        texts = TEXTS[lang]
        sender = ""
        if mailing_list is not None:
            sender = " ".join(
                p
                for p in (mailing_list.sender_organization, mailing_list.sender_postal_address)
                if p
            )
        html = page.render(
            lang=lang,
            title=texts[title_key],
            list_title=mailing_list.display_title if mailing_list else "",
            lines=lines,
            action=action,
            button=texts[button_key] if button_key else "",
            fields=fields or [],
            error=error,
            sender=sender,
            note=texts["note_no_cookie"] if action else "",
        )
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    def fail(request: Request, exc: Exception) -> HTMLResponse:
        texts = TEXTS[choose_language(request)]
        if isinstance(exc, TokenError):
            key = "expired" if exc.reason == "expired" else "bad_link"
            return render(request, 400, "error_title", [texts[key]], error=True)
        if isinstance(exc, NotFound):
            return render(request, 404, "error_title", [texts["not_found"]], error=True)
        reason = str(exc)
        return render(
            request, 400, "error_title", [texts["bad_input"].format(reason=reason)], error=True
        )

    def here(request: Request) -> str:
        lang = request.query_params.get("lang")
        return request.url.path + (f"?lang={lang}" if lang in LANGUAGES else "")

    @router.get("/unsubscribe/{token}", response_class=HTMLResponse)
    async def unsubscribe_page(token: str, request: Request) -> HTMLResponse:
        """Show what a POST would do; change nothing."""
        texts = TEXTS[choose_language(request)]
        try:
            mailing_list, member = await lists.describe_token(token)
        except (TokenError, NotFound) as exc:
            return fail(request, exc)
        address = member.subscriber.address
        if member.status == UNSUBSCRIBED:
            return render(
                request,
                200,
                "unsub_done_title",
                [texts["unsub_already"].format(address=address)],
                mailing_list=mailing_list,
            )
        return render(
            request,
            200,
            "unsub_title",
            [texts["unsub_ask"].format(address=address)],
            mailing_list=mailing_list,
            action=here(request),
            button_key="unsub_button",
        )

    @router.post("/unsubscribe/{token}", response_class=HTMLResponse)
    async def unsubscribe(token: str, request: Request) -> HTMLResponse:
        """Unsubscribe (RFC 8058 one-click or our page's button); 200, never a redirect."""
        texts = TEXTS[choose_language(request)]
        body = await _read_body(request)
        one_click = b"list-unsubscribe=one-click" in body.lower()
        try:
            mailing_list, subscriber, changed = await lists.unsubscribe_by_token(
                token, method="one_click" if one_click else "link", ip=_client_ip(request)
            )
        except (TokenError, NotFound) as exc:
            return fail(request, exc)
        key = "unsub_done" if changed else "unsub_already"
        return render(
            request,
            200,
            "unsub_done_title",
            [texts[key].format(address=subscriber.address)],
            mailing_list=mailing_list,
        )

    @router.get("/confirm/{token}", response_class=HTMLResponse)
    async def confirm_page(token: str, request: Request) -> HTMLResponse:
        """Show the confirmation button; change nothing."""
        texts = TEXTS[choose_language(request)]
        try:
            list_id, subscriber_id = lists.verify_confirmation_token(token)
            mailing_list = await lists.get_list(list_id)
            subscriber = await lists.get_subscriber(subscriber_id)
        except (TokenError, NotFound) as exc:
            return fail(request, exc)
        return render(
            request,
            200,
            "confirm_title",
            [texts["confirm_ask"].format(address=subscriber.address)],
            mailing_list=mailing_list,
            action=here(request),
            button_key="confirm_button",
        )

    @router.post("/confirm/{token}", response_class=HTMLResponse)
    async def confirm(token: str, request: Request) -> HTMLResponse:
        """Confirm a double opt-in subscription."""
        texts = TEXTS[choose_language(request)]
        try:
            member = await lists.confirm(token, ip=_client_ip(request))
            mailing_list = await lists.get_list(member.list_id)
        except (TokenError, NotFound) as exc:
            return fail(request, exc)
        address = member.subscriber.address
        if member.status != SUBSCRIBED:
            return render(request, 409, "error_title", [texts["confirm_gone"]], error=True)
        return render(
            request,
            200,
            "confirm_done_title",
            [texts["confirm_done"].format(address=address)],
            mailing_list=mailing_list,
        )

    def signup_fields(texts: dict[str, str]) -> list[_Field]:
        return [
            _Field("email", texts["signup_email"], "email", True),
            _Field("name", texts["signup_name"], "text", False),
        ]

    @router.get("/subscribe/{name}", response_class=HTMLResponse)
    async def signup_page(name: str, request: Request) -> HTMLResponse:
        """The sign-up form of a list."""
        texts = TEXTS[choose_language(request)]
        try:
            mailing_list = await lists.get_list(name)
        except NotFound as exc:
            return fail(request, exc)
        lines = [mailing_list.description] if mailing_list.description else []
        return render(
            request,
            200,
            "signup_title",
            lines,
            mailing_list=mailing_list,
            action=here(request),
            button_key="signup_button",
            fields=signup_fields(texts),
        )

    @router.post("/subscribe/{name}", response_class=HTMLResponse)
    async def signup(name: str, request: Request) -> HTMLResponse:
        """Sign up from the form (urlencoded ``email`` and optional ``name``)."""
        texts = TEXTS[choose_language(request)]
        body = await _read_body(request)
        form = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=10)
        address = (form.get("email") or [""])[0].strip()
        person = (form.get("name") or [""])[0].strip()[:255]
        try:
            mailing_list = await lists.get_list(name)
            if not address:
                raise InputError(
                    "email is required"
                    if choose_language(request) == "en"
                    else "メールアドレスを入力してください"
                )
            member = await lists.add_subscriber(
                mailing_list.id,
                address,
                name=person or None,
                optin=OptIn("form", source=str(request.url), ip=_client_ip(request)),
            )
        except (InputError, NotFound) as exc:
            return fail(request, exc)
        shown = member.subscriber.address
        if member.status == SUBSCRIBED:
            return render(
                request,
                200,
                "signup_done_title",
                [texts["signup_done"].format(address=shown)],
                mailing_list=mailing_list,
            )
        return render(
            request,
            200,
            "signup_sent_title",
            [texts["signup_sent"].format(address=shown)],
            mailing_list=mailing_list,
        )

    return router


async def _read_body(request: Request) -> bytes:
    """At most MAX_FORM_BYTES of the body (the rest is not read: nothing we need is there)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return body[:MAX_FORM_BYTES]
    return body


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None
