"""The one injection path: the HTTP API, the CLI, SMTP submission and campaigns hand
messages here.

Order of work, and why: validate every address and field, build (or check) the message,
decorate it, then call the signer last (DKIM must cover the final header), and only then
store it with one queued delivery per recipient in a single transaction. Everything that
can be refused is refused before the store is touched, so nothing is queued half-way; the
returned id means the message is committed.

Storing goes through a group committer (``kakitome.group_commit``): concurrent submissions
(HTTP requests, SMTP sessions) share one transaction and one fsync; each still returns
only after the transaction that holds its message committed, and a failed commit raises
``StorageError`` in every submitter of that batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeAlias

from kakitome.addresses import parse_mailbox
from kakitome.config import Settings
from kakitome.errors import InputError
from kakitome.group_commit import DEFAULT_MAX_BATCH, GroupCommitter
from kakitome.message import (
    Attachment,
    ComposedMessage,
    MessageTooLarge,
    build_message,
    parse_raw,
)
from kakitome.queue.store import QueueStore
from kakitome.queue.types import NewMessage, NewRecipient

Signer: TypeAlias = Callable[[bytes, str], bytes]
"""``signer(content, header_from_domain) -> signed content``: adds DKIM-Signature fields
(or returns the content unchanged when it has no key for the domain). Called last."""

ReturnPath: TypeAlias = Callable[[str, str], str]
"""``return_path(header_from_domain, sender) -> envelope sender`` (a VERP address for signed
domains, see ``kakitome.domains.verp``); not called for the null sender."""

Clock: TypeAlias = Callable[[], float]

SOURCES = frozenset({"api", "cli", "smtp", "campaign", "dsn"})


class Injector:
    """Validate, build, sign and store messages. ``submit_*`` return the message id once
    it is committed; they raise ``AddressError``/``MessageError`` (bad input, nothing
    stored), ``MessageTooLarge``, or ``StorageError`` (not committed)."""

    def __init__(
        self,
        queue: QueueStore,
        settings: Settings,
        clock: Clock = time.time,
        signer: Signer | None = None,
        return_path: ReturnPath | None = None,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        linger: float = 0.0,
        notice_signer: Signer | None = None,
    ) -> None:
        self._queue = queue
        self._settings = settings
        self._clock = clock
        self._signer = signer
        self._return_path = return_path
        self._notice_signer = notice_signer
        self.committer: GroupCommitter[NewMessage] = GroupCommitter(
            self._inject_many, max_batch=max_batch, linger=linger
        )

    @property
    def max_message_size(self) -> int:
        return self._settings.delivery.max_message_size

    def prepare_fields(
        self,
        *,
        from_: str,
        to: Sequence[str] = (),
        cc: Sequence[str] = (),
        bcc: Sequence[str] = (),
        reply_to: Sequence[str] | str | None = None,
        subject: str = "",
        text: str | None = None,
        html: str | None = None,
        attachments: Sequence[Attachment] = (),
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        sender: str | None = None,
        source: str = "api",
        requiretls: bool = False,
    ) -> NewMessage:
        """Build and sign a message from fields, without storing it."""
        composed = build_message(
            from_=from_,
            to=to,
            cc=cc,
            bcc=bcc,
            reply_to=reply_to,
            subject=subject,
            text=text,
            html=html,
            attachments=attachments,
            headers=headers,
            sender=sender,
            now=self._clock(),
            max_size=self.max_message_size,
        )
        return self._finish(composed, source=source, requiretls=requiretls)

    def prepare_raw(
        self,
        content: bytes,
        *,
        sender: str | None = None,
        recipients: Sequence[str] | None = None,
        source: str = "api",
        notify: Mapping[str, str] | None = None,
        orcpt: Mapping[str, str] | None = None,
        envid: str | None = None,
        ret: str | None = None,
        requiretls: bool = False,
    ) -> NewMessage:
        """Check and sign a raw RFC 5322 message, without storing it.

        ``sender`` "" is the null sender; None takes the From address. ``recipients``
        None takes To, Cc and Bcc. ``notify``/``orcpt`` (RFC 3461, from SMTP submission)
        are keyed by the recipient address as given.
        """
        composed = parse_raw(
            content,
            sender=sender,
            recipients=recipients,
            now=self._clock(),
            max_size=self.max_message_size,
        )
        params: dict[str, tuple[str | None, str | None]] = {}
        for given in recipients or ():
            params[given] = ((notify or {}).get(given), (orcpt or {}).get(given))
        return self._finish(
            composed,
            source=source,
            params=params,
            given=list(recipients or ()),
            envid=envid,
            ret=ret,
            requiretls=requiretls,
        )

    async def submit_fields(
        self,
        *,
        from_: str,
        to: Sequence[str] = (),
        cc: Sequence[str] = (),
        bcc: Sequence[str] = (),
        reply_to: Sequence[str] | str | None = None,
        subject: str = "",
        text: str | None = None,
        html: str | None = None,
        attachments: Sequence[Attachment] = (),
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        sender: str | None = None,
        source: str = "api",
        requiretls: bool = False,
    ) -> str:
        """Build a message from fields and queue it; returns the id once committed."""
        message = self.prepare_fields(
            from_=from_,
            to=to,
            cc=cc,
            bcc=bcc,
            reply_to=reply_to,
            subject=subject,
            text=text,
            html=html,
            attachments=attachments,
            headers=headers,
            sender=sender,
            source=source,
            requiretls=requiretls,
        )
        return await self.submit(message)

    async def submit_raw(
        self,
        content: bytes,
        *,
        sender: str | None = None,
        recipients: Sequence[str] | None = None,
        source: str = "api",
        notify: Mapping[str, str] | None = None,
        orcpt: Mapping[str, str] | None = None,
        envid: str | None = None,
        ret: str | None = None,
        requiretls: bool = False,
    ) -> str:
        """Check a raw message and queue it; returns the id once committed."""
        message = self.prepare_raw(
            content,
            sender=sender,
            recipients=recipients,
            source=source,
            notify=notify,
            orcpt=orcpt,
            envid=envid,
            ret=ret,
            requiretls=requiretls,
        )
        return await self.submit(message)

    async def submit_notice(
        self,
        content: bytes,
        *,
        header_from: str,
        subject: str,
        recipients: Sequence[NewRecipient],
        source: str = "dsn",
        requiretls: bool = False,
    ) -> str:
        """Queue a notice Kakitome wrote itself (a DSN: RFC 3464) from the null sender.

        Not parsed and not refused for size or encoding: its builder bounds it, and it may
        quote an original that was 8-bit or near the size limit — a bounce notice must not
        be lost for that. Signed by ``notice_signer`` when its From domain (or a parent of
        it) is a sending domain, else queued unsigned: unlike mail submitted to us, a
        notice from an unconfigured host name is not refused.
        """
        if source not in SOURCES:
            raise ValueError(f"unknown message source {source!r}")
        if self._notice_signer is not None:
            content = self._notice_signer(content, header_from.rpartition("@")[2])
        return await self.submit(
            NewMessage(
                source=source,
                sender="",
                header_from=header_from,
                subject=subject,
                content=content,
                recipients=tuple(recipients),
                eight_bit=any(b > 127 for b in content),
                requiretls=requiretls,
            )
        )

    async def submit(self, message: NewMessage) -> str:
        """Store a prepared message; returns its id after the commit (shared with other
        submissions waiting at the same time). InputError before anything is queued."""
        _check_recipients((message,))
        [message_id] = await self.committer.submit((message,))
        return message_id

    async def submit_many(self, messages: Sequence[NewMessage]) -> list[str]:
        """Store prepared messages, all in the same transaction (perhaps with others');
        their ids in order once committed."""
        _check_recipients(messages)
        return await self.committer.submit(messages)

    async def _inject_many(self, messages: Sequence[NewMessage]) -> list[str]:
        return await self._queue.inject_many(
            messages, now=self._clock(), lifetime=self._settings.queue.lifetime
        )

    def _finish(
        self,
        composed: ComposedMessage,
        *,
        source: str,
        params: Mapping[str, tuple[str | None, str | None]] | None = None,
        given: Sequence[str] = (),
        envid: str | None = None,
        ret: str | None = None,
        requiretls: bool = False,
    ) -> NewMessage:
        if source not in SOURCES:
            raise ValueError(f"unknown message source {source!r}")
        content = composed.content
        if self._signer is not None:
            content = self._signer(content, composed.header_from.domain)
            if len(content) > self.max_message_size:
                raise MessageTooLarge(
                    f"the signed message is {len(content):,} bytes; "
                    f"the limit is {self.max_message_size:,} bytes"
                )
        # Map each envelope recipient back to the parameters given for it (by position:
        # parse_raw keeps the order of the given list, minus duplicates).
        by_key: dict[str, tuple[str | None, str | None]] = {}
        if params:
            for raw in given:
                by_key.setdefault(parse_mailbox(raw).key, params.get(raw, (None, None)))
        recipients = tuple(
            NewRecipient(
                address=box.address,
                domain=box.domain,
                notify=by_key.get(box.key, (None, None))[0],
                orcpt=by_key.get(box.key, (None, None))[1],
            )
            for box in composed.recipients
        )
        sender = composed.sender.address if composed.sender is not None else ""
        if self._return_path is not None and sender:
            sender = self._return_path(composed.header_from.domain, sender)
        return NewMessage(
            source=source,
            sender=sender,
            header_from=composed.header_from.address,
            subject=composed.subject,
            content=content,
            recipients=recipients,
            eight_bit=not content.isascii(),
            smtputf8=composed.smtputf8,
            requiretls=requiretls,
            envid=envid,
            ret=ret.upper() if ret else None,
        )


def _check_recipients(messages: Iterable[NewMessage]) -> None:
    """What ``QueueStore.inject_many`` would refuse, refused before the message is queued
    (one bad message must not fail the others of its batch)."""
    for message in messages:
        if not message.recipients:
            raise InputError("a message needs at least one recipient")
