"""When to try again: exponential back-off bounded by a maximum and the queue lifetime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kakitome.config import QueueSettings


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    first: float = 300.0
    factor: float = 2.0
    maximum: float = 14_400.0
    lifetime: float = 5 * 86_400.0

    @classmethod
    def from_settings(cls, queue: QueueSettings) -> RetrySchedule:
        return cls(queue.retry_first, queue.retry_factor, queue.retry_max, queue.lifetime)

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1 = the first)."""
        if attempts < 1:
            return 0.0
        # Cap the exponent so large attempt counts cannot overflow a float.
        return float(min(self.maximum, self.first * self.factor ** min(attempts - 1, 64)))

    def next_attempt(self, attempts: int, now: float) -> float:
        return now + self.delay(attempts)


class RetryPolicy(Protocol):
    """What the store needs from a retry schedule (``RetrySchedule`` is one)."""

    def next_attempt(self, attempts: int, now: float) -> float: ...
