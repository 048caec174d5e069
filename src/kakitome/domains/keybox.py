"""DKIM private keys at rest: sealed with AES-256-GCM under a secret from the settings.

The secret never lives in the database, so a copy of the database (a backup, a replica, a
dump attached to a ticket) holds no usable key. It comes from, in this order:

1. ``domains.key_passphrase``: stretched once per process with scrypt (n=2**15, r=8, p=1);
2. ``domains.key_file``: a file whose bytes (at least 16) are the secret, through HKDF;
3. neither: ``<data_dir>/domain-keys.secret``, 32 random bytes made on first use with mode
   0600. Fine for one machine; several machines sharing PostgreSQL need the same secret, so
   set ``key_file`` or ``key_passphrase`` on all of them.

A sealed key is ``kb1:`` + base64(12-byte nonce ‖ ciphertext ‖ tag). The associated data
is ``<domain>/<selector>``, so a sealed key moved to another row does not open. The PEM
inside is PKCS#8 without its own passphrase. Errors (an unreadable key file, a wrong
passphrase) are ``KeyBoxError`` with the file or setting named and no key material.

The same secret, through HKDF with another label, keys the HMAC of VERP return paths
(``kakitome.domains.verp``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kakitome.config import Settings
from kakitome.errors import ConfigError

__all__ = ["SECRET_FILE_NAME", "KeyBox", "KeyBoxError"]

SECRET_FILE_NAME = "domain-keys.secret"
_PREFIX = "kb1:"
_NONCE = 12
_MIN_SECRET = 16
# A fixed salt: the passphrase is stretched once per process, not per key, and the
# derived key never leaves memory. scrypt n=2**15 costs ~60 ms and 32 MiB.
_SCRYPT_SALT = b"kakitome/domains/keybox/v1"


class KeyBoxError(ConfigError):
    """The secret for DKIM keys is missing, unreadable, or not the one they were sealed with."""


class KeyBox:
    """Seal and open DKIM private keys. Build with ``KeyBox.from_settings(settings)``."""

    def __init__(self, master: bytes, *, source: str) -> None:
        if len(master) < _MIN_SECRET:
            raise KeyBoxError(f"{source}: the secret must be at least {_MIN_SECRET} bytes")
        self.source = source
        self._aead = AESGCM(_derive(master, b"dkim-private-keys"))
        self._verp_key = _derive(master, b"verp-return-path")

    def __repr__(self) -> str:  # never the secret
        return f"KeyBox(source={self.source!r})"

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyBox:
        config = settings.domains
        if config.key_passphrase is not None:
            phrase = config.key_passphrase.get_secret_value().encode("utf-8")
            if len(phrase) < _MIN_SECRET:
                raise KeyBoxError(
                    f"domains.key_passphrase is too short: use at least {_MIN_SECRET} characters"
                )
            master = hashlib.scrypt(phrase, salt=_SCRYPT_SALT, n=2**15, r=8, p=1, maxmem=2**26)
            return cls(master, source="domains.key_passphrase")
        if config.key_file:
            return cls(_read_secret(Path(config.key_file)), source=f"key file {config.key_file}")
        path = settings.data_dir / SECRET_FILE_NAME
        return cls(_read_or_make_secret(path), source=f"key file {path}")

    @property
    def verp_key(self) -> bytes:
        """The HMAC key for VERP return paths."""
        return self._verp_key

    def seal(self, pem: bytes, *, domain: str, selector: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, pem, _aad(domain, selector))
        return _PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, sealed: str, *, domain: str, selector: str) -> bytes:
        if not sealed.startswith(_PREFIX):
            raise KeyBoxError(f"the stored key {selector} of {domain} is not a sealed key")
        try:
            data = base64.b64decode(sealed[len(_PREFIX) :], validate=True)
            return self._aead.decrypt(data[:_NONCE], data[_NONCE:], _aad(domain, selector))
        except (InvalidTag, ValueError):
            raise KeyBoxError(
                f"the DKIM key {selector} of {domain} does not open with the secret from "
                f"{self.source}: the secret changed, or the stored key was altered"
            ) from None


def _aad(domain: str, selector: str) -> bytes:
    return f"{domain}/{selector}".encode("ascii")


def _derive(master: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(master)


def _read_secret(path: Path) -> bytes:
    try:
        data = path.read_bytes().strip()
    except OSError as exc:
        raise KeyBoxError(
            f"cannot read the DKIM key secret file {path}: {exc.strerror or exc}"
        ) from None
    if len(data) < _MIN_SECRET:
        raise KeyBoxError(f"the DKIM key secret file {path} holds fewer than {_MIN_SECRET} bytes")
    return data


def _read_or_make_secret(path: Path) -> bytes:
    if path.exists():
        return _read_secret(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting at once cannot both write a secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    except OSError as exc:
        raise KeyBoxError(
            f"cannot create the DKIM key secret file {path}: {exc.strerror or exc}"
        ) from None
    secret = base64.b64encode(secrets.token_bytes(32))
    try:
        os.write(fd, secret + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o600)
    return secret
