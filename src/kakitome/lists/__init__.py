"""Newsletter lists: subscribers, opt-in, unsubscribe, segments, CSV, bounce cleaning.

Start with ``kakitome.lists.service.ListService``; values are in ``kakitome.lists.model``,
tokens in ``kakitome.lists.tokens``, the segment language in ``kakitome.lists.segments``.
Campaigns, templates and sending live in ``kakitome.campaigns`` and call this service.
"""

from __future__ import annotations

from kakitome.lists.model import (
    BOUNCED,
    COMPLAINED,
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
    SegmentError,
    Subscriber,
    TokenError,
)
from kakitome.lists.service import ListService
from kakitome.lists.tokens import TokenSigner

__all__ = [
    "BOUNCED",
    "COMPLAINED",
    "STATUSES",
    "SUBSCRIBED",
    "UNCONFIRMED",
    "UNSUBSCRIBED",
    "AudienceMember",
    "BounceVerdict",
    "ImportReport",
    "ListMailResult",
    "ListService",
    "MailingList",
    "Membership",
    "NewList",
    "OptIn",
    "RejectedRow",
    "Segment",
    "SegmentError",
    "Subscriber",
    "TokenError",
    "TokenSigner",
]
