"""``ListService``: lists, subscribers, opt-in, unsubscribe, segments, bounce cleaning.

This is the one entry point other parts call (web, CLI, campaigns, inbound). It never
sends mail itself except through the ``Injector`` (confirmation mails), and it reads and
writes only through ``kakitome.lists.store.ListsStore``.

For the campaign engine:

- ``iter_audience(list_ref, segment=..., batch_size=..., after_subscriber_id=...)``
  yields batches of ``AudienceMember`` in ascending subscriber id, only ``subscribed``
  members who are not bounced; checkpoint with the last id of a batch and pass it back
  as ``after_subscriber_id`` to resume. Each batch is read in its own short transaction,
  so a long send holds no lock.
- ``unsubscribe_token`` / ``verify_unsubscribe_token``, ``unsubscribe_url``,
  ``unsubscribe_mailto`` and ``list_unsubscribe_headers`` (RFC 2369 + RFC 8058) for every
  message;
- ``AudienceMember.fields()`` for personalisation (``email``, ``name``, ``id``, attributes);
- ``unsubscribe``, ``set_status``, ``record_bounce``, ``record_complaint`` for status
  changes; ``ListService(..., activity_sources=...)`` to plug opened/clicked conditions
  of segments into the tracking tables (see ``kakitome.lists.segments.ActivitySource``).

For the inbound MX: ``handle_list_mail(local_part, domain, sender, ...)`` (blank-mail
sign-up 空メール and mailto unsubscribe) and ``is_list_address(local_part, domain)`` to
decide at RCPT time.

Errors: ``InputError`` (and its ``AddressError``, ``TokenError``, ``SegmentError``) for
bad input, ``NotFound`` for unknown lists/subscribers/segments, ``StorageError`` when the
database did not commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import ColumnElement

from kakitome.addresses import domain_to_ascii, parse_address
from kakitome.config import Settings
from kakitome.errors import InputError, NotFound
from kakitome.injection import Injector
from kakitome.lists import csvio
from kakitome.lists.model import (
    BOUNCED,
    COMPLAINED,
    ENCODINGS,
    OPT_IN_METHODS,
    OPT_IN_MODES,
    STATUSES,
    SUBSCRIBED,
    UNCONFIRMED,
    UNSUBSCRIBED,
    AudienceMember,
    BounceVerdict,
    ImportReport,
    ListMailResult,
    MailingList,
    Membership,
    NewList,
    OptIn,
    RejectedRow,
    Segment,
    Subscriber,
    TokenError,
)
from kakitome.lists.segments import (
    BUILTIN_ACTIVITY,
    ActivitySource,
    And,
    CompileContext,
    Node,
    compile_segment,
    list_names,
    parse,
    parse_any,
    to_text,
)
from kakitome.lists.store import IMPORT_BATCH_MAX, MAX_BATCH, ImportRow, ListsStore
from kakitome.lists.tokens import TokenSigner
from kakitome.store.database import Database

__all__ = ["ListRef", "ListService", "SegmentRef"]

ListRef = int | str
"""A list by id (int) or by name (str)."""

SegmentRef = int | str | None
"""A saved segment by id (int) or name (str), or None for the whole list. Use
``expression=`` on ``iter_audience`` for an unsaved expression."""

Clock = Callable[[], float]


class ListService:
    """The service over lists and subscribers. One per process; safe to share between
    tasks of one event loop.

    ``injector`` is needed only to send confirmation mails (double opt-in); ``signer``
    defaults to ``TokenSigner.from_settings(settings)``; ``activity_sources`` maps an
    activity name (``opened``, ``clicked``...) to an ``ActivitySource`` that compiles it
    to SQL (``bounced`` is built in)."""

    def __init__(
        self,
        store: Database,
        settings: Settings,
        *,
        injector: Injector | None = None,
        clock: Clock = time.time,
        signer: TokenSigner | None = None,
        activity_sources: Mapping[str, ActivitySource] | None = None,
    ) -> None:
        self._db = ListsStore(store.engine)
        self._settings = settings
        self._config = settings.lists
        self._injector = injector
        self._clock = clock
        self._signer = signer or TokenSigner.from_settings(settings)
        self._activity: dict[str, ActivitySource] = {**BUILTIN_ACTIVITY, **(activity_sources or {})}
        base = settings.http.public_url or f"http://{settings.http.host}:{settings.http.port}"
        self._public_url = base.rstrip("/")

    @property
    def public_url(self) -> str:
        return self._public_url

    # -- lists ---------------------------------------------------------------------------

    async def create_list(self, spec: NewList) -> MailingList:
        """Create a list; InputError for a bad name/field, or a name already taken."""
        values = _check_new_list(spec)
        values["created_at"] = self._clock()
        return await self._db.create_list(values)

    async def update_list(self, ref: ListRef, **changes: Any) -> MailingList:
        """Change a list's settings: any field of ``NewList`` but ``name`` (title,
        description, opt_in, sender identity, time zone, quiet hours, encoding,
        mail_domain); fields not given keep their value. Validated as ``create_list``
        validates (InputError; nothing is written then). The name cannot change: it is in
        the mailto unsubscribe addresses of mail already sent."""
        current = await self.get_list(ref)
        if "name" in changes and changes["name"] != current.name:
            raise InputError("a list's name cannot change (mail already sent refers to it)")
        unknown = set(changes) - _LIST_FIELDS
        if unknown:
            raise InputError(f"lists have no field {', '.join(sorted(unknown))}")
        fields = {name: getattr(current, name) for name in _LIST_FIELDS}
        values = _check_new_list(NewList(**{**fields, **changes}))
        values.pop("name")
        updated = await self._db.update_list(current.id, values)
        if updated is None:
            raise NotFound(f"no list {ref!r}")
        return updated

    async def get_list(self, ref: ListRef) -> MailingList:
        """The list by id or name; NotFound otherwise."""
        found = await self._db.get_list(ref)
        if found is None:
            raise NotFound(f"no list {ref!r}")
        return found

    async def lists(self) -> list[MailingList]:
        """All lists, by name."""
        return await self._db.all_lists()

    async def remove_list(self, ref: ListRef) -> None:
        """Delete a list, its memberships and segments (subscribers stay, with history)."""
        found = await self.get_list(ref)
        await self._db.delete_list(found.id)

    async def count_members(self, ref: ListRef) -> dict[str, int]:
        """Members per status."""
        found = await self.get_list(ref)
        return await self._db.count_members(found.id)

    # -- subscribers ---------------------------------------------------------------------

    async def add_subscriber(
        self,
        ref: ListRef,
        address: str,
        *,
        name: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        optin: OptIn,
        confirmed: bool = False,
        send_confirmation: bool = True,
    ) -> Membership:
        """Subscribe an address (upsert: an existing subscriber is reused, name and
        attributes merged when given).

        Single opt-in lists, or ``confirmed=True`` (consent already proven, e.g. an
        import of confirmed subscribers): status ``subscribed``. Double opt-in lists:
        ``unconfirmed`` and, when ``send_confirmation``, a confirmation mail is queued
        through the Injector. An existing ``unsubscribed``/``unconfirmed`` membership is
        restarted by a new opt-in; ``bounced``/``complained`` ones are re-opened only
        through double opt-in. AddressError for a bad address."""
        mailing_list = await self.get_list(ref)
        mailbox = parse_address(address)
        if optin.method not in OPT_IN_METHODS:
            raise InputError(f"unknown opt-in method {optin.method!r}")
        _check_attributes(attributes)
        if name is not None and len(name) > 255:
            raise InputError("the name is longer than 255 characters")
        double = mailing_list.opt_in == "double" and not confirmed
        status = UNCONFIRMED if double else SUBSCRIBED
        reopen: tuple[str, ...] = (UNSUBSCRIBED, UNCONFIRMED)
        if double:
            reopen = (UNSUBSCRIBED, UNCONFIRMED, BOUNCED, COMPLAINED)
        existing = await self._db.get_subscriber(mailbox.address)
        if existing is not None and existing.bounced_at is not None and not double:
            # A bounced address comes back only by proving it works (double opt-in).
            raise InputError(
                f"{mailbox.address} bounced before; it can only sign up again by confirming"
            )
        member, previous = await self._db.add_member(
            mailing_list.id,
            address=mailbox.address,
            name=name,
            attributes=attributes,
            status=status,
            optin={
                "method": optin.method,
                "source": optin.source,
                "ip": optin.ip,
                "detail": optin.detail,
            },
            now=self._clock(),
            reopen=reopen,
        )
        if (
            double
            and send_confirmation
            and member.status == UNCONFIRMED
            and (previous is None or previous in reopen)
        ):
            await self.send_confirmation(mailing_list, member.subscriber)
        return member

    async def get_subscriber(self, ref: int | str) -> Subscriber:
        """A subscriber by id or address (case-insensitive); NotFound otherwise."""
        key: int | str = ref
        if isinstance(ref, str):
            key = parse_address(ref).address
        found = await self._db.get_subscriber(key)
        if found is None:
            raise NotFound(f"no subscriber {ref!r}")
        return found

    async def membership(self, ref: ListRef, subscriber: int | str) -> Membership:
        """One membership; NotFound otherwise."""
        mailing_list = await self.get_list(ref)
        person = await self.get_subscriber(subscriber)
        found = await self._db.get_member(mailing_list.id, person.id)
        if found is None:
            raise NotFound(f"{person.address} is not on the list {mailing_list.name}")
        return found

    async def members(
        self,
        ref: ListRef,
        *,
        status: str | None = None,
        after_subscriber_id: int = 0,
        limit: int = 100,
        search: str = "",
    ) -> list[Membership]:
        """Members of a list in subscriber-id order (paging with ``after_subscriber_id``);
        ``search``: only those whose address or name contains it (case-insensitive)."""
        mailing_list = await self.get_list(ref)
        if status is not None and status not in STATUSES:
            raise InputError(f"unknown status {status!r}; known: {', '.join(STATUSES)}")
        return await self._db.members(
            mailing_list.id,
            status=status,
            after=after_subscriber_id,
            limit=max(1, min(limit, 10_000)),
            search=search,
        )

    async def update_subscriber(
        self, subscriber_id: int, *, name: str, attributes: Mapping[str, Any]
    ) -> None:
        """Replace a subscriber's name and attributes (not merged: the admin UI's edit
        form, the preference page). InputError for a name over 255 characters or
        attributes that are not small JSON; NotFound when there is no such subscriber."""
        if len(name) > 255:
            raise InputError("the name is longer than 255 characters")
        _check_attributes(attributes)
        if not await self._db.update_subscriber(
            subscriber_id, name=name, attributes=attributes, now=self._clock()
        ):
            raise NotFound(f"no subscriber {subscriber_id}")

    async def remove_subscriber(self, ref: ListRef, address: str) -> bool:
        """Delete one membership (no consent history kept: prefer ``unsubscribe``)."""
        mailing_list = await self.get_list(ref)
        found = await self._db.get_subscriber(parse_address(address).address)
        if found is None:
            return False
        return await self._db.delete_member(mailing_list.id, found.id)

    async def erase_subscriber(self, address: str) -> bool:
        """Delete a subscriber, every membership and the history (right to erasure)."""
        found = await self._db.get_subscriber(parse_address(address).address)
        return False if found is None else await self._db.delete_subscriber(found.id)

    async def set_status(
        self, list_id: int, subscriber_id: int, status: str, *, reason: str = ""
    ) -> bool:
        """Set a membership's status (admin action); records it in the history. NotFound
        when there is no such membership."""
        if status not in STATUSES:
            raise InputError(f"unknown status {status!r}; known: {', '.join(STATUSES)}")
        changed = await self._db.set_status(
            list_id, subscriber_id, status, now=self._clock(), kind=status, detail=reason
        )
        if changed is None:
            raise NotFound(f"subscriber {subscriber_id} is not on list {list_id}")
        return changed

    # -- double opt-in -------------------------------------------------------------------

    def confirmation_url(self, list_id: int, subscriber_id: int) -> str:
        """The confirmation link (valid for ``lists.confirmation_lifetime``)."""
        token = self._signer.confirmation_token(
            list_id, subscriber_id, expires_at=self._clock() + self._config.confirmation_lifetime
        )
        return f"{self._public_url}/confirm/{token}"

    async def send_confirmation(self, mailing_list: MailingList, subscriber: Subscriber) -> str:
        """Queue the double opt-in mail (Japanese and English); the message id.
        InputError when no injector was given or the list has no sender address."""
        if self._injector is None:
            raise InputError("confirmation mails need an injector (none configured)")
        if not mailing_list.from_address:
            raise InputError(f"the list {mailing_list.name} has no from_address to send from")
        url = self.confirmation_url(mailing_list.id, subscriber.id)
        title = mailing_list.display_title
        hours = int(self._config.confirmation_lifetime // 3600)
        honorific = f"{subscriber.name} 様\n\n" if subscriber.name else ""
        text = (
            f"{honorific}「{title}」への登録ありがとうございます。\n"
            f"次のリンクを開き、ボタンを押して登録を完了してください（{hours}時間有効）。\n\n"
            f"{url}\n\n"
            "お心当たりのない場合は、このメールを破棄してください。登録はされません。\n\n"
            "----\n\n"
            f'Thank you for signing up to "{title}".\n'
            f"Open this link and press the button to confirm (valid for {hours} hours):\n\n"
            f"{url}\n\n"
            "If you did not sign up, ignore this mail: nothing happens without confirmation.\n"
            + _sender_footer(mailing_list)
        )
        sender = mailing_list.from_address
        if mailing_list.from_name:
            sender = f'"{mailing_list.from_name}" <{mailing_list.from_address}>'
        return await self._injector.submit_fields(
            from_=sender,
            to=[subscriber.address],
            subject=f"【{title}】登録確認 / Please confirm your subscription",
            text=text,
            source="campaign",
        )

    def verify_confirmation_token(self, token: str) -> tuple[int, int]:
        """``(list_id, subscriber_id)`` of a valid, unexpired confirmation token."""
        return self._signer.verify_confirmation_token(token, now=self._clock())

    async def confirm(self, token: str, *, ip: str | None = None) -> Membership:
        """Confirm a double opt-in membership with a token; TokenError when invalid or
        expired, NotFound when the membership is gone. Confirming twice is harmless; an
        unsubscribed person is not re-subscribed by an old link."""
        list_id, subscriber_id = self._signer.verify_confirmation_token(token, now=self._clock())
        detail = f"confirmed from {ip}" if ip else "confirmed"
        changed = await self._db.set_status(
            list_id,
            subscriber_id,
            SUBSCRIBED,
            now=self._clock(),
            kind="confirmed",
            detail=detail,
            only_from=(UNCONFIRMED,),
        )
        if changed is None:
            raise NotFound("this subscription no longer exists")
        member = await self._db.get_member(list_id, subscriber_id)
        assert member is not None
        if changed and member.subscriber.bounced_at is not None:
            await self._db.clear_bounced(subscriber_id)
        return member

    # -- unsubscribe ---------------------------------------------------------------------

    def unsubscribe_token(self, list_id: int, subscriber_id: int) -> str:
        """The permanent unsubscribe token of one subscriber on one list."""
        return self._signer.unsubscribe_token(list_id, subscriber_id)

    def verify_unsubscribe_token(self, token: str) -> tuple[int, int]:
        """``(list_id, subscriber_id)``; TokenError when malformed or tampered with."""
        return self._signer.verify_unsubscribe_token(token)

    def unsubscribe_url(self, list_id: int, subscriber_id: int) -> str:
        """``<public_url>/unsubscribe/<token>``: GET shows a page, POST unsubscribes."""
        return f"{self._public_url}/unsubscribe/{self.unsubscribe_token(list_id, subscriber_id)}"

    def unsubscribe_mailto(self, mailing_list: MailingList, subscriber_id: int) -> str | None:
        """``mailto:<name>+u-<token>@<mail_domain>?subject=unsubscribe``, or None when the
        list has no mail domain."""
        if not mailing_list.mail_domain:
            return None
        token = self.unsubscribe_token(mailing_list.id, subscriber_id)
        return (
            f"mailto:{mailing_list.name}+u-{token}@{mailing_list.mail_domain}?subject=unsubscribe"
        )

    def list_unsubscribe_headers(
        self, mailing_list: MailingList, subscriber_id: int
    ) -> dict[str, str]:
        """``List-Unsubscribe`` (HTTPS, and mailto when available) and
        ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058) for one message."""
        links = [f"<{self.unsubscribe_url(mailing_list.id, subscriber_id)}>"]
        mailto = self.unsubscribe_mailto(mailing_list, subscriber_id)
        if mailto:
            links.append(f"<{mailto}>")
        return {
            "List-Unsubscribe": ", ".join(links),
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }

    async def unsubscribe(
        self,
        list_id: int,
        subscriber_id: int,
        *,
        method: str,
        ip: str | None = None,
        detail: str = "",
    ) -> bool:
        """Mark ``unsubscribed`` (method: ``one_click``, ``link``, ``mailto``, ``admin``,
        ``campaign``...). True when it changed something; False when already out.
        NotFound when there is no such membership."""
        note = " ".join(p for p in (method, f"ip={ip}" if ip else "", detail) if p)
        changed = await self._db.set_status(
            list_id,
            subscriber_id,
            UNSUBSCRIBED,
            now=self._clock(),
            kind=UNSUBSCRIBED,
            detail=note,
            only_from=(SUBSCRIBED, UNCONFIRMED),
        )
        if changed is None:
            raise NotFound("this subscription no longer exists")
        return changed

    async def unsubscribe_by_token(
        self, token: str, *, method: str, ip: str | None = None
    ) -> tuple[MailingList, Subscriber, bool]:
        """Verify a token and unsubscribe; the list, the subscriber and whether it changed."""
        list_id, subscriber_id = self.verify_unsubscribe_token(token)
        mailing_list = await self.get_list(list_id)
        changed = await self.unsubscribe(list_id, subscriber_id, method=method, ip=ip)
        subscriber = await self.get_subscriber(subscriber_id)
        return mailing_list, subscriber, changed

    async def describe_token(self, token: str) -> tuple[MailingList, Membership]:
        """The list and membership an unsubscribe token names, changing nothing (for the
        confirmation page). TokenError / NotFound."""
        list_id, subscriber_id = self.verify_unsubscribe_token(token)
        mailing_list = await self.get_list(list_id)
        member = await self._db.get_member(list_id, subscriber_id)
        if member is None:
            raise NotFound("this subscription no longer exists")
        return mailing_list, member

    # -- audience (campaigns) ------------------------------------------------------------

    async def _condition(
        self,
        mailing_list: MailingList,
        segment: SegmentRef,
        expression: str | Mapping[str, Any] | None,
    ) -> ColumnElement[bool] | None:
        nodes: list[Node] = []
        if segment is not None:
            saved = await self.get_segment(segment)
            if saved.list_id is not None and saved.list_id != mailing_list.id:
                raise InputError(f"the segment {saved.name} belongs to another list")
            nodes.append(parse(saved.expression))
        if expression is not None:
            nodes.append(parse_any(expression))
        if not nodes:
            return None
        node = nodes[0] if len(nodes) == 1 else And(tuple(nodes))
        return await self._compile(node, mailing_list.id)

    async def _compile(self, node: Node, list_id: int | None) -> ColumnElement[bool]:
        names = list_names(node)
        ids = await self._db.list_ids(names)
        context = CompileContext(
            dialect=self._db.dialect,
            now=self._clock(),
            list_id=list_id,
            list_ids=ids,
            activity=self._activity,
        )
        return compile_segment(node, context)

    async def iter_audience(
        self,
        ref: ListRef,
        *,
        segment: SegmentRef = None,
        expression: str | Mapping[str, Any] | None = None,
        batch_size: int = 1000,
        after_subscriber_id: int = 0,
    ) -> AsyncIterator[list[AudienceMember]]:
        """Batches of ``subscribed``, not-bounced members of a list, in ascending
        subscriber id, starting after ``after_subscriber_id``; optionally narrowed by a
        saved ``segment`` or an ``expression`` (text or JSON). The segment is compiled
        once, before the first batch (SegmentError then). Each batch is one short read;
        members who leave during a send are not yielded by later batches."""
        if not 1 <= batch_size <= MAX_BATCH:
            raise InputError(f"batch_size must be between 1 and {MAX_BATCH}")
        mailing_list = await self.get_list(ref)
        condition = await self._condition(mailing_list, segment, expression)
        after = after_subscriber_id
        while True:
            batch = await self._db.audience_batch(
                mailing_list.id, condition, after=after, limit=batch_size
            )
            if not batch:
                return
            yield batch
            if len(batch) < batch_size:
                return
            after = batch[-1].subscriber_id

    async def count_audience(
        self,
        ref: ListRef,
        *,
        segment: SegmentRef = None,
        expression: str | Mapping[str, Any] | None = None,
    ) -> int:
        """How many ``iter_audience`` would yield now."""
        mailing_list = await self.get_list(ref)
        condition = await self._condition(mailing_list, segment, expression)
        return await self._db.count_audience(mailing_list.id, condition)

    # -- segments ------------------------------------------------------------------------

    async def check_segment(
        self, expression: str | Mapping[str, Any], *, list_ref: ListRef | None = None
    ) -> str:
        """Parse and compile an expression; its canonical text. SegmentError if invalid."""
        node = parse_any(expression)
        list_id = None if list_ref is None else (await self.get_list(list_ref)).id
        await self._compile(node, list_id if list_id is not None else 0)
        return to_text(node)

    async def save_segment(
        self, name: str, expression: str | Mapping[str, Any], *, list_ref: ListRef | None = None
    ) -> Segment:
        """Parse and compile (SegmentError when invalid), then save a segment (stored in
        its canonical text form)."""
        if not _SEGMENT_NAME.fullmatch(name):
            raise InputError("a segment name has 1-64 letters, digits, '_' or '-'")
        text = await self.check_segment(expression, list_ref=list_ref)
        list_id = None if list_ref is None else (await self.get_list(list_ref)).id
        return await self._db.save_segment(name, text, list_id, self._clock())

    async def update_segment(
        self,
        ref: int | str,
        name: str,
        expression: str | Mapping[str, Any],
        *,
        list_ref: ListRef | None = None,
    ) -> Segment:
        """Replace a saved segment's name, expression and list, keeping its id (campaigns
        name segments; they keep working). Checked as ``save_segment`` checks; nothing
        changes when it fails. NotFound for an unknown segment."""
        current = await self.get_segment(ref)
        if not _SEGMENT_NAME.fullmatch(name):
            raise InputError("a segment name has 1-64 letters, digits, '_' or '-'")
        text = await self.check_segment(expression, list_ref=list_ref)
        list_id = None if list_ref is None else (await self.get_list(list_ref)).id
        updated = await self._db.update_segment(current.id, name, text, list_id)
        if updated is None:
            raise NotFound(f"no segment {ref!r}")
        return updated

    async def segments(self) -> list[Segment]:
        """All saved segments, by name."""
        return await self._db.all_segments()

    async def get_segment(self, ref: int | str) -> Segment:
        """A saved segment by id or name; NotFound otherwise."""
        found = await self._db.get_segment(ref)
        if found is None:
            raise NotFound(f"no segment {ref!r}")
        return found

    async def remove_segment(self, ref: int | str) -> bool:
        """Delete a saved segment."""
        found = await self.get_segment(ref)
        return await self._db.delete_segment(found.id)

    # -- CSV -----------------------------------------------------------------------------

    async def import_csv(
        self,
        ref: ListRef,
        source: Path | IO[bytes],
        *,
        mapping: Mapping[str, str] | None = None,
        encoding: str | None = None,
        optin: OptIn | None = None,
        status: str = SUBSCRIBED,
        update_existing: bool = True,
    ) -> ImportReport:
        """Import subscribers from CSV, streaming and in batches.

        ``mapping``: CSV column header → field (``email``, ``name``, ``attr.<key>``, or
        ``-`` to skip); without it, ``email``/``mail``/``メールアドレス`` etc. are
        recognised and every other column becomes an attribute. ``encoding``: ``utf-8``,
        ``utf-8-sig``, ``shift_jis``/``cp932``, or None to detect (BOM, then UTF-8, then
        CP932). Upsert by address: never a duplicate subscriber or membership; an
        existing membership keeps its status (an unsubscribed person stays out). Every
        refused row is in the report with its line number and reason. Each batch is
        committed on its own: after a StorageError, the batches before the failed one
        are in (on PostgreSQL the one after it may be too); importing the file again is
        safe."""
        if status not in (SUBSCRIBED, UNCONFIRMED, UNSUBSCRIBED):
            raise InputError("imported members are subscribed, unconfirmed or unsubscribed")
        mailing_list = await self.get_list(ref)
        if isinstance(source, Path):
            with source.open("rb") as handle:
                return await self._import(
                    mailing_list,
                    handle,
                    mapping,
                    encoding,
                    optin or OptIn("import", source.name),
                    status,
                    update_existing,
                )
        return await self._import(
            mailing_list,
            source,
            mapping,
            encoding,
            optin or OptIn("import"),
            status,
            update_existing,
        )

    async def _import(
        self,
        mailing_list: MailingList,
        handle: IO[bytes],
        mapping: Mapping[str, str] | None,
        encoding: str | None,
        optin: OptIn,
        status: str,
        update_existing: bool,
    ) -> ImportReport:
        started = time.perf_counter()
        chosen, rows = csvio.read_rows(handle, encoding)
        report = ImportReport(encoding=chosen)
        header = next(rows, None)
        if header is None:
            raise InputError("the file is empty")
        if header.error:
            raise InputError(f"the header line cannot be read: {header.error}")
        plan = csvio.plan_columns(header.cells, mapping)
        seen: set[str] = set()
        batch: list[ImportRow] = []
        # Rows per transaction: the set-based store has no bound-parameter limit, so at
        # least IMPORT_ROWS_PER_TRANSACTION (fsyncs and round trips amortised).
        size = min(
            max(self._config.import_batch_size, IMPORT_ROWS_PER_TRANSACTION), IMPORT_BATCH_MAX
        )
        record = {
            "method": optin.method,
            "source": optin.source,
            "ip": optin.ip,
            "detail": optin.detail,
        }

        # Each batch draws its new subscribers' ids after the batch before it in the file
        # (batches may be written at once below): ids follow the file order.
        previous: asyncio.Event | None = None

        async def flush(
            chunk: list[ImportRow], after: asyncio.Event | None, done: asyncio.Event
        ) -> None:
            counts = await self._db.import_batch(
                mailing_list.id,
                chunk,
                status=status,
                optin=record,
                now=self._clock(),
                update_existing=update_existing,
                insert_after=after,
                inserted=done,
            )
            report.inserted += counts.inserted
            report.updated += counts.updated

        # The next batch is read and validated while the database writes the previous
        # one (the loop yields now and then so that the write's statements go on). On
        # SQLite batches commit one at a time, in order; on PostgreSQL two batches (of
        # distinct addresses) are written at once on two connections, so a server on
        # two cores is busy on both.
        parallel = 2 if self._db.dialect == "postgresql" else 1
        pending: list[asyncio.Task[None]] = []
        try:
            for row in rows:
                report.rows += 1
                parsed = _import_row(row, plan, report)
                if parsed is None:
                    continue
                if parsed.key in seen:
                    report.duplicates += 1
                    report.rejected.append(
                        RejectedRow(
                            row.line,
                            "duplicate: the address appears earlier in the file",
                            parsed.address,
                        )
                    )
                    continue
                seen.add(parsed.key)
                batch.append(parsed)
                if len(batch) >= size:
                    while len(pending) >= parallel:
                        await pending.pop(0)
                    done = asyncio.Event()
                    pending.append(asyncio.create_task(flush(batch, previous, done)))
                    previous = done
                    batch = []
                elif pending and report.rows % 1024 == 0:
                    await asyncio.sleep(0)
            while pending:
                await pending.pop(0)
            if batch:
                await flush(batch, previous, asyncio.Event())
        finally:
            for task in pending:
                if not task.done():
                    task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        report.seconds = time.perf_counter() - started
        return report

    async def export_csv(
        self,
        ref: ListRef,
        out: IO[bytes],
        *,
        status: str | None = None,
        segment: SegmentRef = None,
        expression: str | Mapping[str, Any] | None = None,
        encoding: str = "utf-8-sig",
    ) -> int:
        """Write members as CSV (email, name, status, opt-in record, then one column per
        attribute); cells that a spreadsheet would run as a formula (leading ``= + - @``,
        tab, CR) get a leading apostrophe. ``encoding`` ``utf-8-sig`` (Excel-friendly,
        the default), ``utf-8`` or ``cp932`` (characters it lacks become ``?``). Returns
        the row count."""
        if status is not None and status not in STATUSES:
            raise InputError(f"unknown status {status!r}; known: {', '.join(STATUSES)}")
        codec = csvio.normalise_encoding(encoding)
        mailing_list = await self.get_list(ref)
        condition = await self._condition(mailing_list, segment, expression)
        keys: dict[str, None] = {}
        async for page in self._export_pages(mailing_list.id, status, condition):
            for member in page:
                for key in member.subscriber.attributes:
                    if len(keys) < 500:
                        keys.setdefault(key, None)
        text = io.TextIOWrapper(
            out, encoding=codec, errors="replace", newline="", write_through=True
        )
        try:
            writer = csv.writer(text, lineterminator="\r\n")
            csvio.write_row(
                writer,
                [
                    "email",
                    "name",
                    "status",
                    "subscribed_at",
                    "optin_method",
                    "optin_at",
                    "optin_source",
                    "optin_ip",
                    *keys,
                ],
            )
            count = 0
            async for page in self._export_pages(mailing_list.id, status, condition):
                for m in page:
                    attrs = m.subscriber.attributes
                    csvio.write_row(
                        writer,
                        [
                            m.subscriber.address,
                            m.subscriber.name,
                            m.status,
                            _iso(m.confirmed_at),
                            m.optin_method,
                            _iso(m.optin_at),
                            m.optin_source,
                            m.optin_ip or "",
                            *(_cell(attrs.get(k)) for k in keys),
                        ],
                    )
                    count += 1
            text.flush()
        finally:
            text.detach()
        return count

    async def _export_pages(
        self, list_id: int, status: str | None, condition: ColumnElement[bool] | None
    ) -> AsyncIterator[list[Membership]]:
        after = 0
        while True:
            page = await self._db.export_page(
                list_id, status=status, condition=condition, after=after, limit=5_000
            )
            if not page:
                return
            yield page
            after = page[-1].subscriber.id

    # -- bounces and complaints ----------------------------------------------------------

    async def record_bounce(
        self,
        address: str,
        *,
        permanent: bool,
        detail: str = "",
        list_id: int | None = None,
    ) -> BounceVerdict:
        """Record a failure for an address (called by the bounce processor). At
        ``lists.permanent_bounce_threshold`` permanent failures, or
        ``temporary_bounce_threshold`` temporary ones within ``temporary_bounce_window``,
        the subscriber is marked bounced on every list and left out of every audience.
        Unknown addresses are ignored (verdict with ``cleaned=False``)."""
        try:
            key = parse_address(address).address.lower()
        except InputError:
            return BounceVerdict(address, 0, 0, False)
        now = self._clock()
        result = await self._db.record_bounce(
            key,
            permanent=permanent,
            now=now,
            window_start=now - self._config.temporary_bounce_window,
            permanent_threshold=self._config.permanent_bounce_threshold,
            temporary_threshold=self._config.temporary_bounce_threshold,
            detail=detail,
            list_id=list_id,
        )
        if result is None:
            return BounceVerdict(address, 0, 0, False)
        perm, temp, cleaned, changed = result
        return BounceVerdict(address, perm, temp, cleaned, changed)

    async def record_complaint(self, address: str, *, detail: str = "") -> int:
        """A spam complaint: ``complained`` on every list; the number of lists changed."""
        try:
            key = parse_address(address).address.lower()
        except InputError:
            return 0
        changed = await self._db.record_complaint(key, now=self._clock(), detail=detail)
        return changed or 0

    async def purge_history(self) -> int:
        """Delete history older than ``lists.history_retention`` (≥ 90 days)."""
        return await self._db.purge_events(self._clock() - self._config.history_retention)

    async def history(self, address: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """A subscriber's history, newest first."""
        found = await self.get_subscriber(address)
        return await self._db.events(found.id, limit)

    # -- inbound (blank mail, mailto unsubscribe) ----------------------------------------

    async def _list_for(self, local_part: str, domain: str) -> tuple[MailingList, str] | None:
        name, _, detail = local_part.lower().partition("+")
        if not _LIST_NAME.fullmatch(name):
            return None
        found = await self._db.find_list(name, domain.lower().rstrip("."))
        return None if found is None else (found, detail)

    async def is_list_address(self, local_part: str, domain: str) -> bool:
        """True when ``local_part@domain`` is a list address this service handles."""
        found = await self._list_for(local_part, domain)
        if found is None:
            return False
        detail = found[1]
        return detail in ("", "subscribe", "unsubscribe") or detail.startswith("u-")

    async def handle_list_mail(
        self,
        local_part: str,
        domain: str,
        sender: str,
        *,
        client_ip: str | None = None,
        subject: str = "",
    ) -> ListMailResult | None:
        """Act on a message to a list address; None when the address is not a list's.

        - ``<name>@<mail_domain>`` or ``<name>+subscribe@...``: blank-mail sign-up
          (空メール) of ``sender`` (the envelope sender; a null sender is refused). On a
          double opt-in list this sends the confirmation mail: a blank mail proves only
          that someone could forge the sender address. The body is ignored.
        - ``<name>+unsubscribe@...``: unsubscribe ``sender`` from the list.
        - ``<name>+u-<token>@...``: the mailto of ``List-Unsubscribe``; unsubscribes the
          token's subscriber whoever sent it (RFC 2369, RFC 8058 §4).

        Never raises for bad input from the mail (a refused result says why);
        StorageError still propagates so the MX can answer 451."""
        found = await self._list_for(local_part, domain)
        if found is None:
            return None
        mailing_list, detail = found
        if detail.startswith("u-"):
            try:
                list_id, subscriber_id = self.verify_unsubscribe_token(detail[2:])
                if list_id != mailing_list.id:
                    raise TokenError("the token is for another list", "bad_signature")
                changed = await self.unsubscribe(
                    list_id,
                    subscriber_id,
                    method="mailto",
                    ip=client_ip,
                    detail=f"from {sender}" if sender else "",
                )
                person = await self.get_subscriber(subscriber_id)
            except (TokenError, NotFound) as exc:
                return ListMailResult("refused", mailing_list.name, sender, str(exc))
            action = "unsubscribed" if changed else "already_unsubscribed"
            return ListMailResult(action, mailing_list.name, person.address)
        if detail not in ("", "subscribe", "unsubscribe"):
            return None
        if not sender:
            return ListMailResult(
                "refused", mailing_list.name, "", "a null sender cannot subscribe"
            )
        try:
            mailbox = parse_address(sender)
        except InputError as exc:
            return ListMailResult("refused", mailing_list.name, sender, str(exc))
        if detail == "unsubscribe":
            known = await self._db.get_subscriber(mailbox.address)
            member = None if known is None else await self._db.get_member(mailing_list.id, known.id)
            if known is None or member is None:
                return ListMailResult("refused", mailing_list.name, mailbox.address, "not a member")
            changed = await self.unsubscribe(
                mailing_list.id, known.id, method="mail", ip=client_ip, detail=f"from {sender}"
            )
            action = "unsubscribed" if changed else "already_unsubscribed"
            return ListMailResult(action, mailing_list.name, mailbox.address)
        existing = await self._db.get_subscriber(mailbox.address)
        if existing is not None:
            current = await self._db.get_member(mailing_list.id, existing.id)
            if current is not None and current.status == SUBSCRIBED:
                return ListMailResult("already_subscribed", mailing_list.name, mailbox.address)
        try:
            member = await self.add_subscriber(
                mailing_list.id,
                mailbox.address,
                optin=OptIn(
                    "blank_mail",
                    source=mailbox.address,
                    ip=client_ip,
                    detail=f"blank mail to {local_part}@{domain}",
                ),
            )
        except InputError as exc:
            return ListMailResult("refused", mailing_list.name, mailbox.address, str(exc))
        action = "confirmation_sent" if member.status == UNCONFIRMED else "subscribed"
        return ListMailResult(action, mailing_list.name, mailbox.address)


_LIST_FIELDS = frozenset(NewList.__slots__)
_LIST_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,22}[a-z0-9])?")
_SEGMENT_NAME = re.compile(r"[\w\-]{1,64}")
_HHMM = re.compile(r"([01]\d|2[0-3]):[0-5]\d")
_MAX_ATTRIBUTES_JSON = 16 * 1024


def _check_new_list(spec: NewList) -> dict[str, Any]:
    if not _LIST_NAME.fullmatch(spec.name):
        raise InputError(
            "a list name has 1-24 lower-case letters, digits or inner hyphens "
            f"(it goes into URLs and mail addresses), not {spec.name!r}"
        )
    if spec.opt_in not in OPT_IN_MODES:
        raise InputError(f"opt_in must be single or double, not {spec.opt_in!r}")
    if spec.encoding not in ENCODINGS:
        raise InputError(f"encoding must be one of {', '.join(ENCODINGS)}, not {spec.encoding!r}")
    try:
        ZoneInfo(spec.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(f"unknown time zone {spec.time_zone!r} (e.g. Asia/Tokyo)") from None
    if (spec.quiet_start is None) != (spec.quiet_end is None):
        raise InputError("give both quiet_start and quiet_end, or neither")
    for value in (spec.quiet_start, spec.quiet_end):
        if value is not None and not _HHMM.fullmatch(value):
            raise InputError(f"quiet hours are HH:MM (24-hour), not {value!r}")
    from_address = parse_address(spec.from_address).address if spec.from_address else ""
    reply_to = parse_address(spec.reply_to).address if spec.reply_to else ""
    mail_domain = domain_to_ascii(spec.mail_domain) if spec.mail_domain else None
    for label, value in (
        ("title", spec.title),
        ("from_name", spec.from_name),
        ("sender_organization", spec.sender_organization),
    ):
        if len(value) > 255 or any(c in value for c in "\r\n"):
            raise InputError(f"{label} must be one line of at most 255 characters")
    return {
        "name": spec.name,
        "title": spec.title,
        "description": spec.description,
        "opt_in": spec.opt_in,
        "from_name": spec.from_name,
        "from_address": from_address,
        "reply_to": reply_to,
        "sender_organization": spec.sender_organization,
        "sender_postal_address": spec.sender_postal_address,
        "time_zone": spec.time_zone,
        "quiet_start": spec.quiet_start,
        "quiet_end": spec.quiet_end,
        "encoding": spec.encoding,
        "mail_domain": mail_domain,
    }


def _check_attributes(attributes: Mapping[str, Any] | None) -> None:
    if attributes is None:
        return
    try:
        size = len(json.dumps(dict(attributes), ensure_ascii=False))
    except (TypeError, ValueError):
        raise InputError("attributes must be JSON (strings, numbers, true/false, lists)") from None
    if size > _MAX_ATTRIBUTES_JSON:
        raise InputError(f"attributes are larger than {_MAX_ATTRIBUTES_JSON} characters of JSON")


# Plain ASCII addresses, the vast majority of a list, are checked with one regex and two
# length checks instead of ``parse_address``: a dot-atom local part, LDH labels of 1-63
# characters, at least two labels. Anything else (quotes, ``<>``, non-ASCII, IDN, a
# trailing dot, a numeric last label, a single label) goes through ``parse_address``; the
# result is the same address either way (the domain in lower case).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_ADDRESS = re.compile(rf"({_ATOM}(?:\.{_ATOM})*)@((?:{_LABEL}\.)+{_LABEL})")
IMPORT_ROWS_PER_TRANSACTION = 50_000


def _valid_address(raw: str) -> str:
    """The envelope address of ``raw`` (stripped); AddressError when it is not valid."""
    plain = _PLAIN_ADDRESS.fullmatch(raw) if len(raw) <= 254 else None
    if plain is not None:
        local, domain = plain.group(1), plain.group(2)
        if len(local) <= 64 and not domain.rpartition(".")[2].isdigit():
            return f"{local}@{domain.lower()}"
    return parse_address(raw).address


def _import_row(
    row: csvio.CsvRow, plan: csvio.ColumnPlan, report: ImportReport
) -> ImportRow | None:
    def reject(reason: str, value: str = "") -> None:
        report.rejected.append(RejectedRow(row.line, reason, value[:200]))

    if row.error:
        reject(row.error)
        return None
    cells = row.cells
    width = len(cells)
    if width > plan.width:
        extra = cells[plan.width :]
        if any(c.strip() for c in extra):
            reject(f"the row has {width} cells, the header {plan.width}")
            return None
    raw = cells[plan.email].strip() if plan.email < width else ""
    if not raw:
        reject("no address in the email column")
        return None
    try:
        address = _valid_address(raw)
    except InputError as exc:
        reject(f"invalid address: {exc}", raw)
        return None
    name = cells[plan.name].strip() if plan.name is not None and plan.name < width else ""
    if len(name) > 255:
        reject("the name is longer than 255 characters", raw)
        return None
    attributes: dict[str, Any] = {}
    for index, key in plan.attributes:
        if index < width:
            value = cells[index]
            if value != "":
                attributes[key] = value
    return ImportRow(address, address.lower(), name, attributes)


def _sender_footer(mailing_list: MailingList) -> str:
    lines = [mailing_list.sender_organization, mailing_list.sender_postal_address]
    shown = [line for line in lines if line]
    return ("\n----\n" + "\n".join(shown) + "\n") if shown else ""


def _iso(value: float | None) -> str:
    if value is None:
        return ""
    return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
