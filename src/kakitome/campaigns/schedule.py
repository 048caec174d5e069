"""Time rules of sending: quiet hours (夜間配信停止) and step-mail due times.

Pure functions of an injected ``now`` (epoch seconds) and a list's IANA time zone; no
clock is read here. Quiet hours ``start``–``end`` are wall-clock times in the list's zone;
a span that crosses midnight (22:00–08:00) is the usual case. Daylight-saving gaps and
folds are handled by ``zoneinfo`` (the wall-clock end of a quiet span on a DST day is the
first instant at or after that local time).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kakitome.errors import InputError

__all__ = ["QuietHours", "step_due_at", "zone"]


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InputError(f"unknown time zone {name!r}") from exc


def _clock_time(text: str) -> time:
    try:
        hours, minutes = text.strip().split(":")
        return time(int(hours), int(minutes))
    except ValueError as exc:
        raise InputError(f"not a time of day (HH:MM): {text!r}") from exc


@dataclass(frozen=True, slots=True)
class QuietHours:
    start: time
    end: time
    tz: ZoneInfo

    @classmethod
    def of(cls, start: str | None, end: str | None, time_zone: str) -> QuietHours | None:
        """Quiet hours from a list's settings; None when it has none."""
        if not start or not end:
            return None
        begin, finish = _clock_time(start), _clock_time(end)
        if begin == finish:
            return None
        return cls(begin, finish, zone(time_zone))

    def _contains(self, local: time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def is_quiet(self, now: float) -> bool:
        local = datetime.fromtimestamp(now, self.tz)
        return self._contains(local.time().replace(tzinfo=None))

    def resume_at(self, now: float) -> float:
        """``now`` when sending is allowed; else the end of the current quiet span."""
        if not self.is_quiet(now):
            return now
        local = datetime.fromtimestamp(now, self.tz)
        candidate = datetime.combine(local.date(), self.end, tzinfo=self.tz)
        if candidate.timestamp() <= now:
            candidate = datetime.combine(local.date() + timedelta(days=1), self.end, tzinfo=self.tz)
        return candidate.timestamp()

    def quiet_from(self, now: float) -> float:
        """When the next quiet span starts (``now`` when one is running)."""
        if self.is_quiet(now):
            return now
        local = datetime.fromtimestamp(now, self.tz)
        candidate = datetime.combine(local.date(), self.start, tzinfo=self.tz)
        if candidate.timestamp() <= now:
            candidate = datetime.combine(
                local.date() + timedelta(days=1), self.start, tzinfo=self.tz
            )
        return candidate.timestamp()


def step_due_at(anchor: float, delay_days: int, send_hour: int | None, tz: ZoneInfo) -> float:
    """When a step is due for a subscriber confirmed at ``anchor``: ``delay_days`` later,
    at ``send_hour`` o'clock local time when given (the first such hour at or after
    ``anchor + delay_days`` days, so "day 0 at 9:00" for a 10:00 sign-up is tomorrow 9:00)."""
    local = datetime.fromtimestamp(anchor, tz) + timedelta(days=delay_days)
    if send_hour is None:
        return local.timestamp()
    candidate = datetime.combine(local.date(), time(send_hour), tzinfo=tz)
    if candidate < local:
        candidate = datetime.combine(local.date() + timedelta(days=1), time(send_hour), tzinfo=tz)
    return candidate.timestamp()
