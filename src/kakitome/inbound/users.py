"""Submission credentials: argon2id hashes, and a guard that slows and locks out guessing.

Talks to: the ``smtp_users`` table through ``InboundStore``. Trusts: nothing a client says
until the hash verifies. Limits: each failed attempt waits ``failure_delay`` × the failures
in a row from that address (at most ``MAX_DELAY`` seconds) before the 535 reply;
``max_failures`` failures within ``window`` seconds, counted per client address and per
user name, lock both out for ``lockout`` seconds (answers 454 4.7.0 without checking the
password, so a locked account cannot be probed). Hash checks run in a thread: argon2 is
meant to be slow, and the event loop must not be.

The guard lives in memory, per process; a restart forgets it (the lockout is a brake on
guessing, not a ban list).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from kakitome.config import InboundSettings
from kakitome.errors import InputError
from kakitome.inbound.store import InboundStore

__all__ = ["AuthGuard", "AuthOutcome", "Authenticator", "hash_password", "validate_username"]

MAX_DELAY = 5.0
MAX_USERNAME = 255
MIN_PASSWORD = 12
_HASHER = PasswordHasher()
# Verified against when a user does not exist, so both paths cost the same time.
_DUMMY_HASH = _HASHER.hash("kakitome-no-such-user")


def hash_password(password: str) -> str:
    """An argon2id PHC string for ``password`` (RFC 9106 parameters of argon2-cffi)."""
    if len(password) < MIN_PASSWORD:
        raise InputError(f"the password needs at least {MIN_PASSWORD} characters")
    return _HASHER.hash(password)


def validate_username(username: str) -> str:
    name = username.strip()
    if not name or len(name) > MAX_USERNAME or any(c.isspace() or ord(c) < 32 for c in name):
        raise InputError("a user name is 1-255 characters without spaces or control characters")
    return name


class AuthOutcome(StrEnum):
    OK = "ok"
    BAD = "bad"  # 535 5.7.8
    LOCKED = "locked"  # 454 4.7.0


@dataclass
class _Record:
    failures: deque[float]
    locked_until: float = 0.0
    in_a_row: int = 0


class AuthGuard:
    """Failure counting and lockout per key (``ip:<address>``, ``user:<name>``)."""

    def __init__(
        self,
        *,
        max_failures: int,
        window: float,
        lockout: float,
        failure_delay: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self.failure_delay = failure_delay
        self._clock = clock
        self._records: dict[str, _Record] = {}

    @classmethod
    def from_settings(cls, settings: InboundSettings) -> AuthGuard:
        return cls(
            max_failures=settings.max_auth_failures,
            window=settings.auth_window,
            lockout=settings.auth_lockout,
            failure_delay=settings.auth_failure_delay,
        )

    def locked(self, *keys: str) -> bool:
        now = self._clock()
        return any((r := self._records.get(k)) is not None and r.locked_until > now for k in keys)

    def failed(self, *keys: str) -> float:
        """Count a failure against each key; return the delay to impose before replying."""
        now = self._clock()
        delay = 0.0
        for key in keys:
            record = self._records.setdefault(key, _Record(deque()))
            record.failures.append(now)
            while record.failures and record.failures[0] < now - self.window:
                record.failures.popleft()
            record.in_a_row += 1
            if len(record.failures) >= self.max_failures:
                record.locked_until = now + self.lockout
                record.failures.clear()
            delay = max(delay, min(MAX_DELAY, self.failure_delay * record.in_a_row))
        if len(self._records) > 100_000:  # bound memory under a spray of addresses
            self._records = {k: r for k, r in self._records.items() if r.locked_until > now}
        return delay

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            record = self._records.get(key)
            if record is not None:
                record.in_a_row = 0


class Authenticator:
    """Checks a user name and password for the submission listeners."""

    def __init__(self, store: InboundStore, guard: AuthGuard) -> None:
        self._store = store
        self.guard = guard

    async def check(self, username: str, password: str, client_ip: str) -> AuthOutcome:
        keys = (f"ip:{client_ip}", f"user:{username.lower()}")
        if self.guard.locked(*keys):
            return AuthOutcome.LOCKED
        found = await self._store.smtp_user_hash(username)
        stored = found[1] if found is not None else _DUMMY_HASH
        ok = await asyncio.to_thread(_verify, stored, password)
        if ok and found is not None:
            self.guard.succeeded(*keys)
            if _HASHER.check_needs_rehash(stored):
                await self._store.set_smtp_password_hash(found[0], _HASHER.hash(password))
            await self._store.touch_smtp_user(found[0], now=time.time())
            return AuthOutcome.OK
        delay = self.guard.failed(*keys)
        if delay:
            await asyncio.sleep(delay)
        return AuthOutcome.LOCKED if self.guard.locked(*keys) else AuthOutcome.BAD


def _verify(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
