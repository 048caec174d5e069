"""Value objects and errors of lists and subscribers (frozen dataclasses, no storage).

Statuses of a subscriber on one list (``Membership.status``):

- ``unconfirmed``: signed up on a double opt-in list, confirmation pending; gets no mail
  but the confirmation;
- ``subscribed``: gets the list's mail (the only status ``iter_audience`` yields);
- ``unsubscribed``: asked to stop (link, one-click POST, mailto, admin);
- ``bounced``: one permanent or three temporary failures (``ListSettings``); set on every
  list of the address at once;
- ``complained``: reported the mail as spam (feedback loop); set on every list at once.

The opt-in record (``OptIn``) is what Japan's 特定電子メール法 (Act on Regulation of
Transmission of Specified Electronic Mail, art. 3) asks a sender to keep: when, how and
from where consent was given. It is written once per membership and never overwritten by
later imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from kakitome.errors import InputError

__all__ = [
    "BOUNCED",
    "COMPLAINED",
    "ENCODINGS",
    "OPT_IN_METHODS",
    "OPT_IN_MODES",
    "STATUSES",
    "SUBSCRIBED",
    "UNCONFIRMED",
    "UNSUBSCRIBED",
    "AudienceMember",
    "BounceVerdict",
    "ImportReport",
    "ListMailResult",
    "MailingList",
    "Membership",
    "NewList",
    "OptIn",
    "RejectedRow",
    "Segment",
    "SegmentError",
    "Subscriber",
    "TokenError",
]

UNCONFIRMED = "unconfirmed"
SUBSCRIBED = "subscribed"
UNSUBSCRIBED = "unsubscribed"
BOUNCED = "bounced"
COMPLAINED = "complained"
STATUSES = (UNCONFIRMED, SUBSCRIBED, UNSUBSCRIBED, BOUNCED, COMPLAINED)

OPT_IN_MODES = ("single", "double")
ENCODINGS = ("utf-8", "iso-2022-jp")
# How consent was given: recorded with every membership.
OPT_IN_METHODS = ("form", "blank_mail", "import", "api", "cli", "admin")

OptInMode = Literal["single", "double"]


class TokenError(InputError):
    """An unsubscribe or confirmation token that is malformed, tampered with or expired.

    ``reason`` is one of ``malformed``, ``bad_signature``, ``expired``."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class SegmentError(InputError):
    """A segment expression that does not parse or names something unknown.

    ``position`` is the 0-based character offset of the problem in the expression text
    (None for JSON input or when it concerns the whole expression)."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message if position is None else f"{message} (at character {position})")
        self.position = position


@dataclass(frozen=True, slots=True)
class NewList:
    """What ``ListService.create_list`` needs. ``name`` is a slug (``[a-z0-9-]``, used in
    URLs and, with ``mail_domain``, as the list's address for blank-mail sign-up)."""

    name: str
    title: str = ""
    description: str = ""
    opt_in: OptInMode = "double"
    from_name: str = ""
    from_address: str = ""
    reply_to: str = ""
    # 特定電子メール法 art. 4: the sender's name and a postal address go into every mail.
    sender_organization: str = ""
    sender_postal_address: str = ""
    time_zone: str = "Asia/Tokyo"
    # Quiet hours (夜間配信停止) as "HH:MM" in the list's time zone; both or neither.
    quiet_start: str | None = None
    quiet_end: str | None = None
    encoding: str = "utf-8"
    mail_domain: str | None = None


@dataclass(frozen=True, slots=True)
class MailingList:
    """A list as stored. ``address`` is ``name@mail_domain`` (None without a mail domain)."""

    id: int
    name: str
    title: str
    description: str
    opt_in: str
    from_name: str
    from_address: str
    reply_to: str
    sender_organization: str
    sender_postal_address: str
    time_zone: str
    quiet_start: str | None
    quiet_end: str | None
    encoding: str
    mail_domain: str | None
    created_at: float

    @property
    def address(self) -> str | None:
        return f"{self.name}@{self.mail_domain}" if self.mail_domain else None

    @property
    def display_title(self) -> str:
        return self.title or self.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "opt_in": self.opt_in,
            "from_name": self.from_name,
            "from_address": self.from_address,
            "reply_to": self.reply_to,
            "sender_organization": self.sender_organization,
            "sender_postal_address": self.sender_postal_address,
            "time_zone": self.time_zone,
            "quiet_start": self.quiet_start,
            "quiet_end": self.quiet_end,
            "encoding": self.encoding,
            "mail_domain": self.mail_domain,
            "address": self.address,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class OptIn:
    """How consent was given: ``method`` (one of ``OPT_IN_METHODS``), ``source`` (the
    form's URL, the sender address of a blank mail, the CSV file name, the API key name),
    ``ip`` (the client address, when there was one) and free ``detail``."""

    method: str
    source: str = ""
    ip: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A person, once per address across all lists. ``address`` is as first given (domain
    in lower-case A-label form); ``bounced_at`` is set by bounce cleaning."""

    id: int
    address: str
    name: str
    attributes: dict[str, Any]
    created_at: float
    updated_at: float
    bounced_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "address": self.address,
            "name": self.name,
            "attributes": self.attributes,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "bounced_at": self.bounced_at,
        }


@dataclass(frozen=True, slots=True)
class Membership:
    """A subscriber on one list, with the status and the opt-in record."""

    list_id: int
    subscriber: Subscriber
    status: str
    created_at: float
    updated_at: float
    confirmed_at: float | None  # when it became ``subscribed`` (step mail counts from here)
    optin_method: str
    optin_at: float
    optin_source: str
    optin_ip: str | None
    optin_detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "list_id": self.list_id,
            "subscriber": self.subscriber.to_dict(),
            "status": self.status,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "confirmed_at": self.confirmed_at,
            "opt_in": {
                "method": self.optin_method,
                "at": self.optin_at,
                "source": self.optin_source,
                "ip": self.optin_ip,
                "detail": self.optin_detail,
            },
        }


@dataclass(frozen=True, slots=True)
class AudienceMember:
    """One recipient of a list mailing, as ``iter_audience`` yields it: enough to render
    and address a personalised message without another query."""

    subscriber_id: int
    list_id: int
    address: str
    name: str
    attributes: dict[str, Any]
    confirmed_at: float | None

    def fields(self) -> dict[str, Any]:
        """Personalisation fields: ``email``, ``name``, ``id`` and every attribute (an
        attribute never shadows the first three)."""
        out: dict[str, Any] = dict(self.attributes)
        out.update(email=self.address, name=self.name, id=self.subscriber_id)
        return out


@dataclass(frozen=True, slots=True)
class Segment:
    """A saved filter: ``expression`` in the segment language (see kakitome.lists.segments),
    optionally tied to one list."""

    id: int
    name: str
    expression: str
    list_id: int | None
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "expression": self.expression,
            "list_id": self.list_id,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A CSV row that was not imported: its physical line number (1 = the header line)
    and why, in plain words."""

    line: int
    reason: str
    value: str = ""


@dataclass(slots=True)
class ImportReport:
    """What a CSV import did. ``rejected`` lists every refused row."""

    encoding: str
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    duplicates: int = 0  # rows repeating an address seen earlier in the same file
    rejected: list[RejectedRow] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "encoding": self.encoding,
            "rows": self.rows,
            "inserted": self.inserted,
            "updated": self.updated,
            "duplicates": self.duplicates,
            "rejected": [
                {"line": r.line, "reason": r.reason, "value": r.value} for r in self.rejected
            ],
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True, slots=True)
class BounceVerdict:
    """What ``record_bounce`` decided: the counts within the window, and whether the
    address is now marked bounced (``cleaned``) on ``lists`` lists."""

    address: str
    permanent: int
    temporary: int
    cleaned: bool
    lists: int = 0


@dataclass(frozen=True, slots=True)
class ListMailResult:
    """What ``handle_list_mail`` did with a message to a list address.

    ``action``: ``subscribed``, ``confirmation_sent``, ``already_subscribed``,
    ``unsubscribed``, ``already_unsubscribed``, ``refused`` (e.g. bounced address, bad
    token). ``list_name`` names the list."""

    action: str
    list_name: str
    address: str
    detail: str = ""
