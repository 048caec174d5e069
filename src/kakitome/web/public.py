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

More pages (same rules):

- ``/preferences/<unsubscribe token>``: the subscriber's name and every list membership;
  the POST (token in the path, no cookie) saves the name and unsubscribes from the lists
  unticked. It answers with a page, never a redirect.
- ``/archive/<list>`` and ``/archive/<list>/<campaign id>`` (バックナンバー): sent campaigns
  of lists named in ``lists.public_archive`` (none by default), rendered for a blank
  subscriber (no personal data), with a CSP that allows no script and a ``sandbox``.
- ``/.well-known/mta-sts.txt`` for ``Host: mta-sts.<domain>`` where ``<domain>`` is a
  sending domain or an inbound domain: the RFC 8461 policy (``mta_sts.policy_mode``,
  default ``testing``; ``mx`` from ``mta_sts.policy_mx`` or the inbound host name;
  ``max_age`` from ``mta_sts.policy_max_age``, default one week). 404 for other hosts.

Language: ``?lang=ja|en``, else the first of ja/en in ``Accept-Language``, else Japanese.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from kakitome.errors import InputError, NotFound
from kakitome.lists.model import SUBSCRIBED, UNSUBSCRIBED, MailingList, OptIn, TokenError
from kakitome.settings_overlay import current_settings
from kakitome.web.deps import ServicesDep

if TYPE_CHECKING:
    from kakitome.lists.service import ListService
    from kakitome.services import Services

__all__ = ["MAX_FORM_BYTES", "TEXTS", "choose_language", "mta_sts_policy", "router"]

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
        "prefs_title": "配信設定",
        "prefs_intro": "{address} の配信設定です。チェックを外したリストは配信を停止します。",
        "prefs_name": "お名前",
        "prefs_button": "保存する",
        "prefs_saved": "保存しました。",
        "archive_title": "バックナンバー",
        "archive_none": "まだ公開されているメールはありません。",
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
        "prefs_title": "Your preferences",
        "prefs_intro": "Preferences of {address}. Untick a list to stop its mail.",
        "prefs_name": "Name",
        "prefs_button": "Save",
        "prefs_saved": "Saved.",
        "archive_title": "Archive",
        "archive_none": "Nothing has been published yet.",
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


ARCHIVE_CSP = (
    "default-src 'none'; img-src data: https:; style-src 'unsafe-inline'; font-src data: https:; "
    "frame-ancestors 'none'; form-action 'none'; base-uri 'none'; sandbox"
)
DEFAULT_STS_MAX_AGE = 604_800


async def mta_sts_policy(services: Services, host: str) -> str | None:
    """The MTA-STS policy file (RFC 8461 §3.2) for ``Host: mta-sts.<domain>`` when
    ``<domain>`` is one of our sending or inbound domains; None otherwise."""
    name = host.strip().lower().rstrip(".")
    if name.startswith("[") or name.count(":") > 1:
        return None
    name = name.rpartition(":")[0] if ":" in name else name
    if not name.startswith("mta-sts."):
        return None
    domain = name[len("mta-sts.") :]
    # The inbound domains may change at run time: read the overlay as stored now.
    settings = await current_settings(services.settings, services.settings_store)
    ours = {d.lower().rstrip(".") for d in settings.inbound.domains}
    ours |= {view.name.ascii for view in await services.domains.list_domains()}
    if not domain or domain not in ours:
        return None
    policy = settings.mta_sts
    mode = str(getattr(policy, "policy_mode", "testing"))
    if mode not in ("enforce", "testing", "none"):
        mode = "testing"
    mx = tuple(getattr(policy, "policy_mx", ()) or ())
    if not mx:
        mx = (settings.inbound.hostname or settings.delivery.helo_hostname,)
    max_age = int(getattr(policy, "policy_max_age", DEFAULT_STS_MAX_AGE))
    lines = ["version: STSv1", f"mode: {mode}"]
    lines += [f"mx: {host_name}" for host_name in mx]
    lines.append(f"max_age: {max_age}")
    return "\r\n".join(lines) + "\r\n"


def archive_lists(services: Services) -> tuple[str, ...]:
    """Names of the lists whose sent campaigns are public (``lists.public_archive``)."""
    return tuple(getattr(services.settings.lists, "public_archive", ()) or ())


_env = Environment(
    loader=FileSystemLoader(str(_TEMPLATES)),
    autoescape=select_autoescape(default=True, default_for_string=True),
    auto_reload=False,
)
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
            p for p in (mailing_list.sender_organization, mailing_list.sender_postal_address) if p
        )
    html = _env.get_template("public/page.html").render(
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
async def unsubscribe_page(token: str, request: Request, services: ServicesDep) -> HTMLResponse:
    """Show what a POST would do; change nothing."""
    texts = TEXTS[choose_language(request)]
    try:
        mailing_list, member = await services.lists.describe_token(token)
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
async def unsubscribe(token: str, request: Request, services: ServicesDep) -> HTMLResponse:
    """Unsubscribe (RFC 8058 one-click or our page's button); 200, never a redirect."""
    texts = TEXTS[choose_language(request)]
    body = await _read_body(request)
    one_click = b"list-unsubscribe=one-click" in body.lower()
    try:
        mailing_list, subscriber, changed = await services.lists.unsubscribe_by_token(
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
async def confirm_page(token: str, request: Request, services: ServicesDep) -> HTMLResponse:
    """Show the confirmation button; change nothing."""
    texts = TEXTS[choose_language(request)]
    lists = services.lists
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
async def confirm(token: str, request: Request, services: ServicesDep) -> HTMLResponse:
    """Confirm a double opt-in subscription."""
    texts = TEXTS[choose_language(request)]
    lists = services.lists
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
async def signup_page(name: str, request: Request, services: ServicesDep) -> HTMLResponse:
    """The sign-up form of a list."""
    texts = TEXTS[choose_language(request)]
    try:
        mailing_list = await services.lists.get_list(name)
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
async def signup(name: str, request: Request, services: ServicesDep) -> HTMLResponse:
    """Sign up from the form (urlencoded ``email`` and optional ``name``)."""
    texts = TEXTS[choose_language(request)]
    lists = services.lists
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


@router.get("/.well-known/mta-sts.txt", response_class=PlainTextResponse)
async def mta_sts(request: Request, services: ServicesDep) -> Response:
    """The MTA-STS policy of one of our domains (by the Host header)."""
    policy = await mta_sts_policy(services, request.headers.get("host", ""))
    if policy is None:
        return PlainTextResponse("not found\n", status_code=404)
    return PlainTextResponse(policy, headers={"Cache-Control": "max-age=300"})


async def memberships(lists: ListService, subscriber_id: int) -> list[tuple[MailingList, str]]:
    found: list[tuple[MailingList, str]] = []
    for item in await lists.lists():
        try:
            member = await lists.membership(item.id, subscriber_id)
        except NotFound:
            continue
        found.append((item, member.status))
    return found


def render_prefs(
    request: Request, token: str, address: str, name: str, rows: list[tuple[MailingList, str]],
    saved: bool,
) -> HTMLResponse:  # fmt: skip
    lang = choose_language(request)
    texts = TEXTS[lang]
    html = _env.get_template("public/preferences.html").render(
        lang=lang,
        texts=texts,
        title=texts["prefs_title"],
        intro=texts["prefs_intro"].format(address=address),
        name=name,
        rows=rows,
        action=here(request),
        saved=saved,
        note=texts["note_no_cookie"],
    )
    return HTMLResponse(html, headers=_HEADERS)


@router.get("/preferences/{token}", response_class=HTMLResponse)
async def preferences_page(token: str, request: Request, services: ServicesDep) -> HTMLResponse:
    """The preference page: change nothing, show a form whose POST saves."""
    lists = services.lists
    try:
        _, member = await lists.describe_token(token)
    except (TokenError, NotFound) as exc:
        return fail(request, exc)
    person = member.subscriber
    rows = await memberships(lists, person.id)
    return render_prefs(request, token, person.address, person.name, rows, False)


@router.post("/preferences/{token}", response_class=HTMLResponse)
async def preferences(token: str, request: Request, services: ServicesDep) -> HTMLResponse:
    """Save the name; unsubscribe from the lists left unticked (token in the path, no
    cookie, no redirect)."""
    lists = services.lists
    body = await _read_body(request)
    form = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=200)
    try:
        _, member = await lists.describe_token(token)
        person = member.subscriber
        name = (form.get("name") or [person.name])[0].strip()[:255]
        if name != person.name:
            await lists.update_subscriber(person.id, name=name, attributes=person.attributes)
        keep = set(form.get("keep") or [])
        for item, status in await memberships(lists, person.id):
            if status in (SUBSCRIBED, "unconfirmed") and str(item.id) not in keep:
                await lists.unsubscribe(
                    item.id, person.id, method="preferences", ip=_client_ip(request)
                )
    except (TokenError, NotFound, InputError) as exc:
        return fail(request, exc)
    rows = await memberships(lists, person.id)
    return render_prefs(request, token, person.address, name, rows, True)


async def archive_list(services: Services, name: str) -> MailingList | None:
    if name not in archive_lists(services):
        return None
    try:
        return await services.lists.get_list(name)
    except NotFound:
        return None


@router.get("/archive/{name}", response_class=HTMLResponse)
async def archive(name: str, request: Request, services: ServicesDep) -> HTMLResponse:
    """バックナンバー: the sent campaigns of a public list, newest first."""
    mailing_list = await archive_list(services, name)
    if mailing_list is None:
        return fail(request, NotFound(name))
    lang = choose_language(request)
    texts = TEXTS[lang]
    rows = [
        c
        for c in reversed(await services.campaigns.db.campaigns())
        if c.list_id == mailing_list.id and c.status == "finished"
    ]
    html = _env.get_template("public/archive.html").render(
        lang=lang,
        title=texts["archive_title"],
        list_title=mailing_list.display_title,
        rows=rows,
        none=texts["archive_none"],
        name=mailing_list.name,
        sender=" ".join(
            p for p in (mailing_list.sender_organization, mailing_list.sender_postal_address) if p
        ),
    )
    return HTMLResponse(html, headers=_HEADERS)


@router.get("/archive/{name}/{campaign_id}", response_class=HTMLResponse)
async def archive_item(
    name: str, campaign_id: int, request: Request, services: ServicesDep
) -> Response:
    """One archived campaign, as a blank subscriber would get it (no personal data)."""
    mailing_list = await archive_list(services, name)
    campaigns = services.campaigns
    try:
        if mailing_list is None:
            raise NotFound(name)
        row = await campaigns.get(campaign_id)
        if row.list_id != mailing_list.id or row.status != "finished":
            raise NotFound(str(campaign_id))
        shown = await campaigns.preview(row.id, None, tracking=False)
    except (NotFound, InputError) as exc:
        return fail(request, exc if isinstance(exc, NotFound) else NotFound(str(exc)))
    headers = {**_HEADERS, "Content-Security-Policy": ARCHIVE_CSP}
    if shown.html is None:
        return PlainTextResponse(f"{shown.subject}\n\n{shown.text or ''}", headers=headers)
    return HTMLResponse(shown.html, headers=headers)


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
