"""API keys: created, checked, listed and revoked on the ``Database``.

A key is ``kk_<prefix>_<secret>``: an 8-character prefix that finds the row and is safe to
show, and 256 random bits. Only the key's SHA-256 is kept; checks compare hashes in
constant time. ``last_used_at`` is a write on a read path, refreshed at most once a minute
per key.

Listeners (``add_api_key_listener``) are called after every committed change to the keys
other than the last-use time (a key created or revoked): ``web/auth.py``'s cache of
verified keys empties itself, so a key revoked in this process is refused at once.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from kakitome.errors import StorageError
from kakitome.store.database import Database
from kakitome.store.schema import api_keys

__all__ = ["API_KEY_PREFIX", "ApiKeyInfo", "ApiKeyRecord", "ApiKeyStore"]

log = logging.getLogger(__name__)

API_KEY_PREFIX = "kk_"
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
_PREFIX_LENGTH = 8
# last_used_at is a write on a read path: refresh it at most this often per key.
_LAST_USED_RESOLUTION = 60.0


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    id: int
    name: str
    prefix: str
    scopes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An API key as listed to its owners: never the secret."""

    id: int
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: float
    last_used_at: float | None
    revoked_at: float | None


class ApiKeyStore:
    """The ``api_keys`` table. Each public method is one transaction."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._listeners: list[Callable[[], None]] = []

    def add_api_key_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (in the event loop, must not block) after each committed
        change to the keys other than ``last_used_at`` (a key created or revoked)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:  # a listener's trouble must not fail a committed write
                log.exception("API key listener failed")

    async def create_api_key(self, name: str, scopes: Sequence[str], *, now: float) -> str:
        """Create a key and return it whole (shown once; only its hash is kept).

        The key is ``kk_<prefix>_<secret>``: an 8-character prefix that finds the row and
        is safe to show, and 256 random bits."""
        for _ in range(5):
            prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(_PREFIX_LENGTH))
            key = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
            row = {
                "name": name,
                "prefix": prefix,
                "secret_hash": _hash_key(key),
                "scopes": list(scopes),
                "created_at": now,
            }
            try:
                async with self._db.write() as conn:
                    await conn.execute(insert(api_keys), [row])
            except StorageError as exc:
                if isinstance(exc.__cause__, IntegrityError):
                    continue  # the prefix is taken (one chance in 2.8e12): draw another
                raise
            self._changed()
            return key
        raise StorageError("could not find a free API key prefix")

    async def check_api_key(self, key: str, *, now: float) -> ApiKeyInfo | None:
        """The key's owner and scopes, or None when the key is malformed, unknown or
        revoked. Compares hashes in constant time."""
        prefix = _key_prefix(key)
        if prefix is None:
            return None
        async with self._db.read() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.prefix == prefix))).first()
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(_hash_key(key), row.secret_hash):
            return None
        if row.last_used_at is None or now - row.last_used_at >= _LAST_USED_RESOLUTION:
            async with self._db.write() as conn:
                await conn.execute(
                    update(api_keys).where(api_keys.c.id == row.id).values(last_used_at=now)
                )
        return ApiKeyInfo(id=row.id, name=row.name, prefix=row.prefix, scopes=tuple(row.scopes))

    async def revoke_api_key(self, key_id: int, *, now: float) -> bool:
        """Revoke a key by id; False when there is no such key or it was revoked already."""
        async with self._db.write() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        self._changed()
        return bool(result.rowcount)

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        async with self._db.read() as conn:
            rows = await conn.execute(select(api_keys).order_by(api_keys.c.id))
            return [
                ApiKeyRecord(
                    id=row.id,
                    name=row.name,
                    prefix=row.prefix,
                    scopes=tuple(row.scopes),
                    created_at=row.created_at,
                    last_used_at=row.last_used_at,
                    revoked_at=row.revoked_at,
                )
                for row in rows
            ]


def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _key_prefix(key: str) -> str | None:
    """The prefix of a well-formed key, else None."""
    if not key.startswith(API_KEY_PREFIX) or len(key) < len(API_KEY_PREFIX) + _PREFIX_LENGTH + 2:
        return None
    prefix = key[len(API_KEY_PREFIX) : len(API_KEY_PREFIX) + _PREFIX_LENGTH]
    if key[len(API_KEY_PREFIX) + _PREFIX_LENGTH] != "_":
        return None
    if any(c not in _PREFIX_ALPHABET for c in prefix):
        return None
    return prefix
