"""``ListService``: lists, subscribers, opt-in, unsubscribe, segments, bounce cleaning.

This is the one entry point other parts call (web, CLI, campaigns, inbound). It never
sends mail itself except through the ``Injector`` (confirmation mails), and it reads and
writes only through ``kakitome.store.lists_store.ListsStore``.

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

import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from kakitome.config import Settings
from kakitome.injection import Injector
from kakitome.lists.model import (
    AudienceMember,
    BounceVerdict,
    ImportReport,
    ListMailResult,
    MailingList,
    Membership,
    NewList,
    OptIn,
    Segment,
    Subscriber,
)
from kakitome.lists.tokens import TokenSigner
from kakitome.store.repository import Store

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
    activity name (``opened``, ``clicked``...) to a function that compiles it to SQL
    (``bounced`` is built in)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        injector: Injector | None = None,
        clock: Clock = time.time,
        signer: TokenSigner | None = None,
        activity_sources: Mapping[str, Any] | None = None,
    ) -> None:
        raise NotImplementedError

    # -- lists ---------------------------------------------------------------------------

    async def create_list(self, spec: NewList) -> MailingList:
        """Create a list; InputError for a bad name/field, or a name already taken."""
        raise NotImplementedError

    async def get_list(self, ref: ListRef) -> MailingList:
        """The list by id or name; NotFound otherwise."""
        raise NotImplementedError

    async def lists(self) -> list[MailingList]:
        """All lists, by name."""
        raise NotImplementedError

    async def remove_list(self, ref: ListRef) -> None:
        """Delete a list and its memberships (subscribers stay, with their history)."""
        raise NotImplementedError

    async def count_members(self, ref: ListRef) -> dict[str, int]:
        """Members per status."""
        raise NotImplementedError

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
        through the Injector. An existing ``unsubscribed``/``bounced``/``complained``
        membership is re-opened only through a new opt-in (it restarts the flow).
        AddressError for a bad address; InputError for a bounced address when the
        sign-up is not confirmed by the person."""
        raise NotImplementedError

    async def get_subscriber(self, ref: int | str) -> Subscriber:
        """A subscriber by id or address (case-insensitive); NotFound otherwise."""
        raise NotImplementedError

    async def membership(self, ref: ListRef, subscriber: int | str) -> Membership:
        """One membership; NotFound otherwise."""
        raise NotImplementedError

    async def members(
        self,
        ref: ListRef,
        *,
        status: str | None = None,
        after_subscriber_id: int = 0,
        limit: int = 100,
    ) -> list[Membership]:
        """Members of a list in subscriber-id order (paging with ``after_subscriber_id``)."""
        raise NotImplementedError

    async def remove_subscriber(self, ref: ListRef, address: str) -> bool:
        """Delete one membership (no history of consent kept: prefer ``unsubscribe``)."""
        raise NotImplementedError

    async def erase_subscriber(self, address: str) -> bool:
        """Delete a subscriber, every membership and the history (right to erasure)."""
        raise NotImplementedError

    async def set_status(
        self, list_id: int, subscriber_id: int, status: str, *, reason: str = ""
    ) -> bool:
        """Set a membership's status (admin action); records it in the history."""
        raise NotImplementedError

    # -- double opt-in -------------------------------------------------------------------

    def confirmation_url(self, list_id: int, subscriber_id: int) -> str:
        """The confirmation link (valid for ``lists.confirmation_lifetime``)."""
        raise NotImplementedError

    async def confirm(self, token: str, *, ip: str | None = None) -> Membership:
        """Confirm a double opt-in membership with a token; TokenError when invalid or
        expired. Confirming twice is harmless."""
        raise NotImplementedError

    # -- unsubscribe ---------------------------------------------------------------------

    def unsubscribe_token(self, list_id: int, subscriber_id: int) -> str:
        """The permanent unsubscribe token of one subscriber on one list."""
        raise NotImplementedError

    def verify_unsubscribe_token(self, token: str) -> tuple[int, int]:
        """``(list_id, subscriber_id)``; TokenError when malformed or tampered with."""
        raise NotImplementedError

    def unsubscribe_url(self, list_id: int, subscriber_id: int) -> str:
        """``<public_url>/unsubscribe/<token>``: GET shows a page, POST unsubscribes."""
        raise NotImplementedError

    def unsubscribe_mailto(self, mailing_list: MailingList, subscriber_id: int) -> str | None:
        """``mailto:<name>+u-<token>@<mail_domain>?subject=unsubscribe``, or None when the
        list has no mail domain."""
        raise NotImplementedError

    def list_unsubscribe_headers(
        self, mailing_list: MailingList, subscriber_id: int
    ) -> dict[str, str]:
        """``List-Unsubscribe`` (HTTPS, and mailto when available) and
        ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058) for one message."""
        raise NotImplementedError

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
        raise NotImplementedError

    async def unsubscribe_by_token(
        self, token: str, *, method: str, ip: str | None = None
    ) -> tuple[MailingList, Subscriber, bool]:
        """Verify a token and unsubscribe; the list, the subscriber and whether it changed."""
        raise NotImplementedError

    # -- audience (campaigns) ------------------------------------------------------------

    def iter_audience(
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
        once, before the first batch (SegmentError then). Each batch is one short read."""
        raise NotImplementedError

    async def count_audience(
        self,
        ref: ListRef,
        *,
        segment: SegmentRef = None,
        expression: str | Mapping[str, Any] | None = None,
    ) -> int:
        """How many ``iter_audience`` would yield now."""
        raise NotImplementedError

    # -- segments ------------------------------------------------------------------------

    async def save_segment(
        self, name: str, expression: str | Mapping[str, Any], *, list_ref: ListRef | None = None
    ) -> Segment:
        """Parse and compile (SegmentError when invalid), then save a segment (stored in
        its canonical text form)."""
        raise NotImplementedError

    async def segments(self) -> list[Segment]:
        raise NotImplementedError

    async def get_segment(self, ref: int | str) -> Segment:
        raise NotImplementedError

    async def remove_segment(self, ref: int | str) -> bool:
        raise NotImplementedError

    # -- CSV -----------------------------------------------------------------------------

    async def import_csv(
        self,
        ref: ListRef,
        source: Path | IO[bytes],
        *,
        mapping: Mapping[str, str] | None = None,
        encoding: str | None = None,
        optin: OptIn | None = None,
        status: str = "subscribed",
        update_existing: bool = True,
    ) -> ImportReport:
        """Import subscribers from CSV, streaming and in batches.

        ``mapping``: CSV column header → field (``email``, ``name``, ``attr.<key>``, or
        ``-`` to skip); without it, ``email``/``mail``/``メールアドレス`` etc. are
        recognised and every other column becomes an attribute. ``encoding``: ``utf-8``,
        ``utf-8-sig``, ``shift_jis``/``cp932``, or None to detect (BOM, then UTF-8, then
        CP932). Upsert by address: never a duplicate subscriber or membership. Every
        refused row is in the report with its line number and reason."""
        raise NotImplementedError

    async def export_csv(
        self,
        ref: ListRef,
        out: IO[bytes],
        *,
        status: str | None = None,
        segment: SegmentRef = None,
        encoding: str = "utf-8-sig",
    ) -> int:
        """Write members as CSV (email, name, status, opt-in record, attributes);
        cells that a spreadsheet would run as a formula (leading ``= + - @``, tab, CR)
        are neutralised with a leading apostrophe. Returns the row count."""
        raise NotImplementedError

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
        raise NotImplementedError

    async def record_complaint(self, address: str, *, detail: str = "") -> int:
        """A spam complaint: ``complained`` on every list; the number of lists changed."""
        raise NotImplementedError

    async def purge_history(self) -> int:
        """Delete history older than ``lists.history_retention`` (≥ 90 days)."""
        raise NotImplementedError

    async def history(self, address: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """A subscriber's history, newest first."""
        raise NotImplementedError

    # -- inbound (blank mail, mailto unsubscribe) ----------------------------------------

    async def is_list_address(self, local_part: str, domain: str) -> bool:
        """True when ``local_part@domain`` is a list address this service handles."""
        raise NotImplementedError

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
          that someone could forge the sender address.
        - ``<name>+unsubscribe@...``: unsubscribe ``sender`` from the list.
        - ``<name>+u-<token>@...``: the mailto of ``List-Unsubscribe``; unsubscribes the
          token's subscriber whoever sent it (RFC 2369)."""
        raise NotImplementedError


def _quote_path(token: str) -> str:
    return quote(token, safe="")
