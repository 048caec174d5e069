"""What an attempt's result does to a delivery: the retry, expiry and bounce decisions.

Pure functions over the delivery's current state and a clock value; no database.
``kakitome.queue.store`` turns the decision into the row update and the event it writes.

- Delivered and bounced results are final.
- A deferred result is tried again at ``schedule.next_attempt(attempts, now)`` (the
  attempt count includes this attempt). A delivery an operator put on hold meanwhile stays
  held (with the new time, for when it is released).
- Expiry: when that time would come after the delivery's ``expires_at`` (the queue
  lifetime from injection), the delivery bounces instead, with the last reply's code,
  enhanced status 4.4.7 and "queue lifetime expired: " followed by the last reply; its
  ``next_attempt_at`` is left as it was.
- Every delivery that ends bounced (a bounce or an expiry) may need a DSN.
"""

from __future__ import annotations

from dataclasses import dataclass

from kakitome.delivery.types import Outcome
from kakitome.queue.schedule import RetryPolicy
from kakitome.queue.types import BOUNCED, DEFERRED, DELIVERED, EXPIRED_ENHANCED, HELD
from kakitome.smtp.replies import Reply

__all__ = ["EXPIRED_PREFIX", "Transition", "after_attempt", "expiry_text"]

EXPIRED_PREFIX = "queue lifetime expired: "


@dataclass(frozen=True, slots=True)
class Transition:
    """A delivery's state after one attempt."""

    status: str
    attempts: int
    next_attempt_at: float
    reply_code: int
    reply_enhanced: str | None
    reply_text: str
    expired: bool  # deferred past the queue lifetime: bounced with 4.4.7

    @property
    def event_kind(self) -> str:
        """The kind of the event recorded for the attempt: the outcome's name, and
        ``bounced`` for an expiry."""
        if self.expired:
            return BOUNCED
        return self.status if self.status != HELD else DEFERRED

    @property
    def shows_next_attempt(self) -> bool:
        """Whether the event reports ``next_attempt_at`` (the delivery will be tried)."""
        return self.status == DEFERRED or (self.status == HELD and not self.expired)

    @property
    def bounced(self) -> bool:
        """The delivery ended bounced: the sender may get a DSN."""
        return self.status == BOUNCED


def expiry_text(reply: Reply) -> str:
    """The reply text of an expiry bounce: the prefix and the last reply."""
    return f"{EXPIRED_PREFIX}{reply}"


def after_attempt(
    *,
    outcome: Outcome,
    reply: Reply,
    status: str,
    attempts: int,
    next_attempt_at: float,
    expires_at: float,
    now: float,
    schedule: RetryPolicy,
) -> Transition:
    """The delivery's state after an attempt with ``outcome`` and ``reply`` at ``now``,
    given its current ``status``, ``attempts`` (before this one), ``next_attempt_at`` and
    ``expires_at``."""
    attempts += 1
    code, enhanced, text = reply.code, reply.enhanced, reply.text
    next_at = next_attempt_at
    expired = False
    if outcome is Outcome.DELIVERED:
        new_status = DELIVERED
    elif outcome is Outcome.BOUNCED:
        new_status = BOUNCED
    else:
        retry_at = schedule.next_attempt(attempts, now)
        if retry_at > expires_at:
            new_status, expired = BOUNCED, True
            enhanced = EXPIRED_ENHANCED
            text = expiry_text(reply)
        else:
            new_status = HELD if status == HELD else DEFERRED
            next_at = retry_at
    return Transition(new_status, attempts, next_at, code, enhanced, text, expired)
