"""The retry, expiry and bounce decisions (kakitome.queue.transitions): no database."""

from __future__ import annotations

import pytest

from kakitome.delivery.types import Outcome
from kakitome.queue.schedule import RetrySchedule
from kakitome.queue.transitions import Transition, after_attempt
from kakitome.smtp.replies import Reply

NOW = 1_700_000_000.0
SCHEDULE = RetrySchedule(first=300.0, factor=2.0, maximum=3600.0, lifetime=86_400.0)
TEMPFAIL = Reply(451, "4.3.0", "try later")
OK = Reply(250, "2.0.0", "queued as X")
REJECT = Reply(550, "5.1.1", "no such user")


def attempt(
    outcome: Outcome,
    reply: Reply,
    *,
    status: str = "queued",
    attempts: int = 0,
    next_attempt_at: float = NOW - 10,
    expires_at: float = NOW + 86_400.0,
) -> Transition:
    return after_attempt(
        outcome=outcome,
        reply=reply,
        status=status,
        attempts=attempts,
        next_attempt_at=next_attempt_at,
        expires_at=expires_at,
        now=NOW,
        schedule=SCHEDULE,
    )


def test_delivered_is_final_and_keeps_the_due_time() -> None:
    step = attempt(Outcome.DELIVERED, OK, attempts=2)
    assert (step.status, step.attempts, step.next_attempt_at) == ("delivered", 3, NOW - 10)
    assert (step.reply_code, step.reply_enhanced, step.reply_text) == (250, "2.0.0", "queued as X")
    assert step.event_kind == "delivered"
    assert not step.expired and not step.bounced and not step.shows_next_attempt


def test_bounced_is_final_and_needs_a_dsn() -> None:
    step = attempt(Outcome.BOUNCED, REJECT)
    assert step.status == "bounced" and step.bounced and not step.expired
    assert (step.reply_code, step.reply_enhanced, step.reply_text) == (550, "5.1.1", "no such user")
    assert step.event_kind == "bounced"
    assert step.next_attempt_at == NOW - 10


@pytest.mark.parametrize(("attempts", "delay"), [(0, 300.0), (1, 600.0), (2, 1200.0), (9, 3600.0)])
def test_deferred_retries_with_back_off(attempts: int, delay: float) -> None:
    """The delay counts this attempt: the first failure waits ``first``, then doubles up to
    the maximum."""
    step = attempt(Outcome.DEFERRED, TEMPFAIL, status="deferred", attempts=attempts)
    assert step.status == "deferred"
    assert step.attempts == attempts + 1
    assert step.next_attempt_at == NOW + delay
    assert step.event_kind == "deferred" and step.shows_next_attempt
    assert (step.reply_enhanced, step.reply_text) == ("4.3.0", "try later")


def test_deferred_while_held_stays_held_with_the_new_time() -> None:
    step = attempt(Outcome.DEFERRED, TEMPFAIL, status="held", attempts=1)
    assert step.status == "held"
    assert step.next_attempt_at == NOW + 600.0
    assert step.event_kind == "deferred" and step.shows_next_attempt
    assert not step.bounced


def test_deferred_past_the_lifetime_expires_as_a_bounce() -> None:
    step = attempt(Outcome.DEFERRED, TEMPFAIL, attempts=3, expires_at=NOW + 100)
    assert step.status == "bounced" and step.expired and step.bounced
    assert step.reply_code == 451
    assert step.reply_enhanced == "4.4.7"
    assert step.reply_text == f"queue lifetime expired: {TEMPFAIL}"
    assert step.next_attempt_at == NOW - 10  # left as it was
    assert step.event_kind == "bounced" and not step.shows_next_attempt
    assert step.attempts == 4


def test_held_delivery_past_the_lifetime_expires_too() -> None:
    step = attempt(Outcome.DEFERRED, TEMPFAIL, status="held", expires_at=NOW + 299)
    assert step.status == "bounced" and step.expired


def test_retry_exactly_at_expiry_is_still_a_retry() -> None:
    """Expiry is strictly after ``expires_at``."""
    step = attempt(Outcome.DEFERRED, TEMPFAIL, expires_at=NOW + 300)
    assert step.status == "deferred" and not step.expired
    assert step.next_attempt_at == NOW + 300


def test_delivered_after_the_lifetime_is_still_delivered() -> None:
    """Only a deferral can expire: a success or a bounce past the lifetime is what it is."""
    assert attempt(Outcome.DELIVERED, OK, expires_at=NOW - 1).status == "delivered"
    step = attempt(Outcome.BOUNCED, REJECT, expires_at=NOW - 1)
    assert step.status == "bounced" and not step.expired and step.reply_enhanced == "5.1.1"
