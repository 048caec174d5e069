"""Signed tokens for unsubscribe links and double opt-in confirmation (HMAC-SHA256).

What it trusts: only the secret (``lists.token_secret``, or 32 random bytes made on first
use in ``<data_dir>/lists-token.secret`` with mode 0600). Everything else in a token comes
from the network and is checked with a constant-time comparison before it is believed.

Formats (lower-case base36 ids and base32 MACs, so they survive MTAs that lower-case
local parts, URL paths and copy-paste):

- unsubscribe: ``<list_id>-<subscriber_id>-<mac18>``; never expires (RFC 8058 links
  must keep working for as long as the mail sits in a mailbox). 90 bits of MAC: tokens can
  only be checked online, against a rate-limited endpoint. Short enough that
  ``<list name>+u-<token>`` fits a 64-octet local part (list names ≤ 24 characters).
- confirmation: ``<list_id>-<subscriber_id>-<expires>-<mac26>``; expires after
  ``lists.confirmation_lifetime``.

Each kind has its own key (HMAC of the secret with a label), so a token of one kind is
never valid as the other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from kakitome.config import Settings
from kakitome.errors import ConfigError
from kakitome.lists.model import TokenError

__all__ = ["SECRET_FILE_NAME", "TokenSigner"]

SECRET_FILE_NAME = "lists-token.secret"
_MIN_SECRET = 16
_UNSUB_MAC = 18
_CONFIRM_MAC = 26
_MAX_TOKEN = 120
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


class TokenSigner:
    """Make and check list tokens. Build with ``TokenSigner.from_settings(settings)`` or
    ``TokenSigner(secret_bytes)`` (tests)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < _MIN_SECRET:
            raise ConfigError(f"the list token secret must be at least {_MIN_SECRET} bytes")
        self._unsub_key = hmac.new(secret, b"kakitome/lists/unsubscribe", hashlib.sha256).digest()
        self._confirm_key = hmac.new(secret, b"kakitome/lists/confirm", hashlib.sha256).digest()

    def __repr__(self) -> str:  # never the secret
        return "TokenSigner()"

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenSigner:
        if settings.lists.token_secret is not None:
            return cls(settings.lists.token_secret.get_secret_value().encode("utf-8"))
        return cls(_read_or_make_secret(settings.data_dir / SECRET_FILE_NAME))

    # -- unsubscribe ---------------------------------------------------------------------

    def unsubscribe_token(self, list_id: int, subscriber_id: int) -> str:
        """The permanent unsubscribe token of one subscriber on one list."""
        body = f"{_b36(list_id)}-{_b36(subscriber_id)}"
        return f"{body}-{_mac(self._unsub_key, body, _UNSUB_MAC)}"

    def verify_unsubscribe_token(self, token: str) -> tuple[int, int]:
        """``(list_id, subscriber_id)`` of a valid token; TokenError otherwise."""
        parts = _split(token, 3)
        body = "-".join(parts[:2])
        _check(self._unsub_key, body, parts[2], _UNSUB_MAC)
        return _int36(parts[0]), _int36(parts[1])

    # -- confirmation --------------------------------------------------------------------

    def confirmation_token(self, list_id: int, subscriber_id: int, *, expires_at: float) -> str:
        """A double opt-in token valid until ``expires_at`` (epoch seconds)."""
        body = f"{_b36(list_id)}-{_b36(subscriber_id)}-{_b36(int(expires_at))}"
        return f"{body}-{_mac(self._confirm_key, body, _CONFIRM_MAC)}"

    def verify_confirmation_token(self, token: str, *, now: float) -> tuple[int, int]:
        """``(list_id, subscriber_id)`` of a valid, unexpired token; TokenError otherwise
        (the signature is checked before the expiry, so a forged date says "tampered")."""
        parts = _split(token, 4)
        body = "-".join(parts[:3])
        _check(self._confirm_key, body, parts[3], _CONFIRM_MAC)
        if _int36(parts[2]) < now:
            raise TokenError("this confirmation link has expired; please sign up again", "expired")
        return _int36(parts[0]), _int36(parts[1])


def _b36(value: int) -> str:
    if value < 0:
        raise ValueError("token numbers are not negative")
    out = ""
    while True:
        value, digit = divmod(value, 36)
        out = _B36[digit] + out
        if not value:
            return out


def _int36(text: str) -> int:
    return int(text, 36)


def _mac(key: bytes, body: str, length: int) -> str:
    digest = hmac.new(key, body.encode("ascii"), hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:length]


def _split(token: str, count: int) -> list[str]:
    text = token.strip().lower()
    if not text or len(text) > _MAX_TOKEN or not text.isascii():
        raise TokenError("this link is not valid (malformed token)", "malformed")
    parts = text.split("-")
    if len(parts) != count or not all(parts):
        raise TokenError("this link is not valid (malformed token)", "malformed")
    for part in parts[:-1]:
        if any(c not in _B36 for c in part) or len(part) > 13:
            raise TokenError("this link is not valid (malformed token)", "malformed")
    return parts


def _check(key: bytes, body: str, given: str, length: int) -> None:
    if not hmac.compare_digest(_mac(key, body, length), given):
        raise TokenError("this link is not valid (signature does not match)", "bad_signature")


def _read_or_make_secret(path: Path) -> bytes:
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # O_EXCL: two processes starting at once cannot both write a secret.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigError(f"cannot create the list token secret file {path}: {exc}") from None
        else:
            try:
                os.write(fd, base64.b64encode(secrets.token_bytes(32)) + b"\n")
            finally:
                os.close(fd)
    try:
        data = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the list token secret file {path}: {exc}") from None
    if len(data) < _MIN_SECRET:
        raise ConfigError(f"the list token secret file {path} holds fewer than {_MIN_SECRET} bytes")
    return data
