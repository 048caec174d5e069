"""One personalised campaign (or step) message, as bytes ready for the Injector.

What it trusts: the list's settings and the template (checked by ``templates``); not the
subscriber's fields, which reach headers only as RFC 2047 encoded words or escaped
quoted strings, and the HTML body only escaped.

Header choices, and why:

- ``List-Unsubscribe`` (HTTPS and, when the list has a mail domain, mailto) and
  ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` on every message (RFC 2369,
  RFC 8058, T38). They are written here, before the Injector signs, so the DKIM signature
  covers them (the signer signs them when present).
- ``List-Id`` (RFC 2919): the list's name under its mail domain (or the From domain).
  With the List-* fields it also tells auto-responders not to answer (RFC 3834 §2).
- ``Feedback-ID`` (Gmail's feedback loop): ``<ref>:<list>:<kind>:<sender>``.
- No ``Precedence: bulk``: it was never standardised (RFC 2076 discourages it), Google's
  sender guidelines do not ask for it, and some filters count it against the sender; the
  List-* fields do its one useful job (quieting auto-replies) in a standard way.
- ``X-Auto-Response-Suppress: OOF, AutoReply``: Exchange does not read RFC 3834, and
  out-of-office floods to a newsletter's bounce address help nobody.

Body: ``multipart/alternative`` (text, then HTML) or a single text part. The footer the
law asks for (特定電子メール法 art. 4: sender's name, postal address, how to refuse mail)
is added to both parts unless the mailing turns it off, in which case the body must
contain ``{{ unsubscribe_url }}`` (checked in ``check_mailing``). Japanese text gets the
Japanese footer, other text the English one.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kakitome.addresses import parse_mailbox
from kakitome.campaigns.encoding import (
    body_part,
    header_field,
    jis_safe,
    phrase,
    wrap_text,
)
from kakitome.campaigns.htmltext import html_to_text
from kakitome.campaigns.templates import (
    CompiledTemplate,
    TemplateError,
    TemplateSource,
    compile_template,
    names_used,
)
from kakitome.campaigns.tracking import LinkSigner
from kakitome.errors import InputError
from kakitome.lists.model import AudienceMember, MailingList

__all__ = [
    "ComposedMail",
    "Composer",
    "Mailing",
    "UnsubscribeLinks",
    "check_mailing",
    "template_context",
]

_JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uff66-\uff9f]")


class UnsubscribeLinks(Protocol):
    """What the composer needs from ``kakitome.lists.ListService``."""

    def unsubscribe_url(self, list_id: int, subscriber_id: int) -> str: ...

    def list_unsubscribe_headers(
        self, mailing_list: MailingList, subscriber_id: int
    ) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class Mailing:
    """What is being sent: a campaign (``c<id>``) or a step of a sequence (``s<id>``)."""

    kind: str  # campaign | step
    id: int
    name: str
    tracking: bool = True
    footer: bool = True

    @property
    def ref(self) -> str:
        return f"{'c' if self.kind == 'campaign' else 's'}{self.id}"

    @property
    def feedback_type(self) -> str:
        return "newsletter" if self.kind == "campaign" else "stepmail"


@dataclass(frozen=True, slots=True)
class ComposedMail:
    content: bytes
    address: str
    subject: str
    # Characters ISO-2022-JP could not carry (replaced by 〓), for the sender to see.
    lost_characters: tuple[str, ...] = ()


_FOOTER_JA = TemplateSource(
    subject="",
    body=(
        '<hr style="border:0;border-top:1px solid #ccc;margin:2em 0 1em">'
        '<p style="font-size:12px;line-height:1.6;color:#666">'
        "発行者: {{ sender_name }}<br>住所: {{ postal_address }}<br>"
        "{% if contact %}お問い合わせ: {{ contact }}<br>{% endif %}"
        '配信停止: <a href="{{ unsubscribe_url }}">{{ unsubscribe_url }}</a>'
        "</p>"
    ),
    text=(
        "\n\n----------------------------------------\n"
        "発行者: {{ sender_name }}\n住所: {{ postal_address }}\n"
        "{% if contact %}お問い合わせ: {{ contact }}\n{% endif %}"
        "配信停止: {{ unsubscribe_url }}\n"
    ),
)
_FOOTER_EN = TemplateSource(
    subject="",
    body=(
        '<hr style="border:0;border-top:1px solid #ccc;margin:2em 0 1em">'
        '<p style="font-size:12px;line-height:1.6;color:#666">'
        "Sent by {{ sender_name }}, {{ postal_address }}<br>"
        "{% if contact %}Contact: {{ contact }}<br>{% endif %}"
        'Unsubscribe: <a href="{{ unsubscribe_url }}">{{ unsubscribe_url }}</a>'
        "</p>"
    ),
    text=(
        "\n\n--\nSent by {{ sender_name }}, {{ postal_address }}\n"
        "{% if contact %}Contact: {{ contact }}\n{% endif %}"
        "Unsubscribe: {{ unsubscribe_url }}\n"
    ),
)
_FOOTER_NAMES = frozenset({"sender_name", "postal_address", "contact", "unsubscribe_url"})
_FOOTERS = {
    "ja": compile_template(_FOOTER_JA, names=_FOOTER_NAMES),
    "en": compile_template(_FOOTER_EN, names=_FOOTER_NAMES),
}


def list_today(mailing_list: MailingList, now: float) -> str:
    return datetime.fromtimestamp(now, _zone(mailing_list.time_zone)).date().isoformat()


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InputError(f"unknown time zone {name!r}") from exc


def template_context(
    mailing_list: MailingList,
    member: AudienceMember,
    mailing: Mailing,
    *,
    unsubscribe_url: str,
    now: float,
) -> dict[str, Any]:
    """The names a template sees (``templates.CONTEXT_NAMES``)."""
    attributes = dict(member.attributes)
    return {
        "subscriber": {
            "id": member.subscriber_id,
            "email": member.address,
            "name": member.name,
            "attributes": attributes,
        },
        "email": member.address,
        "name": member.name,
        "attributes": attributes,
        "list": {
            "id": mailing_list.id,
            "name": mailing_list.display_title,
            "sender_name": mailing_list.sender_organization or mailing_list.from_name,
        },
        "campaign": {"id": mailing.id, "name": mailing.name},
        "unsubscribe_url": unsubscribe_url,
        "today": list_today(mailing_list, now),
    }


def check_mailing(compiled: CompiledTemplate, mailing_list: MailingList, mailing: Mailing) -> None:
    """Refuse what may not be sent at all, before anything is: a list without sender
    identity (特定電子メール法), or a mailing without footer whose body lacks the
    unsubscribe link. Raises InputError (TemplateError for the template's part)."""
    if not mailing_list.from_address:
        raise InputError(f"list {mailing_list.name!r} has no from address")
    parse_mailbox(mailing_list.from_address)
    if mailing.footer:
        missing = [
            what
            for what, value in (
                ("sender name (sender_organization or from_name)",
                 mailing_list.sender_organization or mailing_list.from_name),
                ("postal address (sender_postal_address)", mailing_list.sender_postal_address),
            )
            if not value.strip()
        ]  # fmt: skip
        if missing:
            raise InputError(
                f"list {mailing_list.name!r} has no {' and no '.join(missing)}: the footer "
                "needs them, as Japan's 特定電子メール法 requires"
            )
    else:
        if "unsubscribe_url" not in names_used(compiled.source):
            raise TemplateError(
                "body",
                "the footer is off, so the body must contain {{ unsubscribe_url }} "
                "(every newsletter must say how to stop it)",
            )
    if mailing_list.encoding not in ("utf-8", "iso-2022-jp"):
        raise InputError(f"list {mailing_list.name!r}: unknown encoding {mailing_list.encoding!r}")


class Composer:
    """Render and encode messages for one kind of mailing; shared by the runner, the
    step-mail scheduler, preview and test sends."""

    def __init__(
        self,
        links: UnsubscribeLinks,
        signer: LinkSigner | None,
        *,
        wrap_width: int = 76,
        feedback_sender: str = "kakitome",
    ) -> None:
        self._links = links
        self._signer = signer
        self._wrap_width = wrap_width
        self._feedback_sender = feedback_sender

    def compose(
        self,
        compiled: CompiledTemplate,
        mailing: Mailing,
        mailing_list: MailingList,
        member: AudienceMember,
        *,
        now: float,
        test: bool = False,
    ) -> ComposedMail:
        """The message for one subscriber. Raises TemplateError when the template fails
        for this subscriber (an attribute it lacks), InputError for a bad address."""
        unsubscribe_url = self._links.unsubscribe_url(mailing_list.id, member.subscriber_id)
        context = template_context(
            mailing_list, member, mailing, unsubscribe_url=unsubscribe_url, now=now
        )
        parts = compiled.render(context)
        html = parts.html
        text = parts.text
        if mailing.footer:
            language = "ja" if _JAPANESE.search(parts.subject + (html or text or "")) else "en"
            footer = _FOOTERS[language].render(
                {
                    "sender_name": mailing_list.sender_organization or mailing_list.from_name,
                    "postal_address": mailing_list.sender_postal_address,
                    "contact": mailing_list.reply_to or mailing_list.from_address,
                    "unsubscribe_url": unsubscribe_url,
                }
            )
            if html is not None:
                html = _append_html(html, footer.html or "")
            if text is not None:
                text = text.rstrip("\n") + (footer.text or "")
            elif html is None:  # pragma: no cover (render always gives html or text)
                text = footer.text
        if text is None:
            text = html_to_text(html or "")
        if html is not None and mailing.tracking and self._signer is not None and not test:
            html = self._signer.rewrite_html(
                html, mailing.ref, member.subscriber_id, keep=frozenset({unsubscribe_url})
            )
        subject = ("[TEST] " if test else "") + parts.subject
        return self._encode(mailing, mailing_list, member, subject, html, text, now)

    def _encode(
        self,
        mailing: Mailing,
        mailing_list: MailingList,
        member: AudienceMember,
        subject: str,
        html: str | None,
        text: str,
        now: float,
    ) -> ComposedMail:
        charset = mailing_list.encoding
        from_box = parse_mailbox(mailing_list.from_address)
        to_box = parse_mailbox(member.address)
        from_name = mailing_list.from_name
        to_name = member.name
        lost: list[str] = []
        if charset == "iso-2022-jp":
            subject, lost_s = jis_safe(subject)
            text, lost_t = jis_safe(text)
            from_name, lost_f = jis_safe(from_name)
            to_name, lost_n = jis_safe(to_name)
            lost += lost_s + lost_t + lost_f + lost_n
            if html is not None:
                html, lost_h = jis_safe(html)
                lost += lost_h

            def measure(line: str) -> int:
                return len(line.encode("iso-2022-jp"))
        else:

            def measure(line: str) -> int:
                return len(line.encode("utf-8"))

        text = wrap_text(text, self._wrap_width, measure=measure)

        headers = [
            _address_field("From", from_name, from_box.address, charset),
            _address_field("To", to_name, to_box.address, charset),
            header_field("Subject", subject, charset),
            "Date: " + format_datetime(datetime.fromtimestamp(now, UTC)),
            f"Message-ID: <{mailing.ref}.{member.subscriber_id}.{int(now)}."
            f"{secrets.token_hex(6)}@{from_box.domain}>",
        ]
        if mailing_list.reply_to:
            reply = parse_mailbox(mailing_list.reply_to)
            headers.append(f"Reply-To: {reply.address}")
        list_domain = mailing_list.mail_domain or from_box.domain
        list_label = phrase(mailing_list.display_title, charset)
        headers.append(
            header_field_raw("List-Id", f"{list_label} <{mailing_list.name}.{list_domain}>")
        )
        unsubscribe = self._links.list_unsubscribe_headers(mailing_list, member.subscriber_id)
        for name in ("List-Unsubscribe", "List-Unsubscribe-Post"):
            if name in unsubscribe:
                headers.append(header_field(name, unsubscribe[name]))
        headers.append(
            "Feedback-ID: "
            f"{mailing.ref}:l{mailing_list.id}:{mailing.feedback_type}:{self._feedback_sender}"
        )
        headers.append("X-Auto-Response-Suppress: OOF, AutoReply")
        headers.append("MIME-Version: 1.0")

        text_part = body_part(text, "plain", charset)
        if html is None:
            body = text_part
        else:
            boundary = f"=_kakitome_{secrets.token_hex(12)}"
            html_part = body_part(html, "html", charset)
            body = (
                f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
                f"--{boundary}\r\n"
            ).encode("ascii")
            body += text_part + f"--{boundary}\r\n".encode("ascii")
            body += html_part + f"--{boundary}--\r\n".encode("ascii")
        head = "\r\n".join(headers).encode("utf-8") + b"\r\n"
        return ComposedMail(
            content=head + body,
            address=to_box.address,
            subject=subject,
            lost_characters=tuple(dict.fromkeys(lost)),
        )


def _address_field(name: str, display: str, address: str, charset: str) -> str:
    display = re.sub(r"[\x00-\x1f\x7f]+", " ", display).strip()
    if not display:
        return f"{name}: {address}"
    return header_field_raw(name, f"{phrase(display, charset)} <{address}>")


def header_field_raw(name: str, value: str) -> str:
    """A field whose value is already ASCII-safe (encoded words, quoted strings), folded
    at spaces."""
    line = f"{name}: {value}"
    if len(line) <= 78:
        return line
    out: list[str] = []
    current = ""
    for piece in re.split(r"(?<=\S)(?= )", line):
        if current and len(current) + len(piece) > 76:
            out.append(current)
            current = piece
        else:
            current += piece
    out.append(current)
    return "\r\n".join(out)


def _append_html(html: str, footer: str) -> str:
    index = html.lower().rfind("</body>")
    if index >= 0:
        return html[:index] + footer + html[index:]
    return html + footer


def sample_member(
    mailing_list: MailingList, fields: Mapping[str, Any] | None = None
) -> AudienceMember:
    """A stand-in subscriber for previews without one (``name`` empty, no attributes)."""
    fields = dict(fields or {})
    return AudienceMember(
        subscriber_id=0,
        list_id=mailing_list.id,
        address=str(fields.pop("email", "preview@example.invalid")),
        name=str(fields.pop("name", "")),
        attributes=fields,
        confirmed_at=None,
    )
