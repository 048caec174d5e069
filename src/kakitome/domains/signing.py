"""The signer the injection path calls last, and the VERP return path of signed mail.

``DomainSigning`` holds, per configured domain, a ``kakitome.auth.dkim_sign.DKIMSigner``
built from the domain's *active* keys (RSA-2048 and Ed25519: both signatures on every
message), opened from the key box once per key, not per message. The injector gets two
plain callables:

- ``sign(content, from_domain) -> bytes``: the message with its DKIM-Signature fields; a
  From domain that is not configured is refused with ``UnconfiguredDomainError`` (an
  ``InputError``: HTTP 422, CLI exit 2, nothing stored) unless
  ``domains.allow_unconfigured_from``, which lets it through unsigned;
- ``return_path(from_domain, sender) -> str``: for a configured domain, a fresh VERP
  address ``bounce+<id>-<mac>@<return-path domain>`` (format in ``kakitome.domains.verp``);
  otherwise ``sender`` unchanged. The null sender never reaches it.

Keys are loaded with ``await DomainSigning.load(store, settings)`` and reloaded by
``run_refresh`` every ``domains.signer_refresh`` seconds, so a domain added or a rotation
completed by another process signs within that time. Signing is synchronous and
CPU-bound (about 1 ms per message for RSA-2048 in OpenSSL).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from kakitome.auth.dkim_keys import DKIMKeyError, DKIMKeyPair, ascii_domain, load_private_key
from kakitome.auth.dkim_sign import DKIMSigner
from kakitome.config import Settings
from kakitome.domains.keybox import KeyBox
from kakitome.domains.repository import ACTIVE, DomainRepository, DomainRow
from kakitome.domains.verp import make_return_path
from kakitome.errors import MessageError
from kakitome.store.database import Database

__all__ = ["DomainSigning", "UnconfiguredDomainError"]

log = structlog.get_logger("kakitome.domains")


class UnconfiguredDomainError(MessageError):
    """Mail From a domain we have no keys for (and the settings do not allow that)."""


class _Entry:
    __slots__ = ("key_ids", "return_path", "signer")

    def __init__(self, key_ids: tuple[int, ...], signer: DKIMSigner, return_path: str) -> None:
        self.key_ids = key_ids
        self.signer = signer
        self.return_path = return_path


class DomainSigning:
    """Signs for configured domains and makes their return paths. Thread-safe to call."""

    def __init__(
        self, settings: Settings, keybox: KeyBox, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._settings = settings
        self._keybox = keybox
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    @classmethod
    async def load(
        cls, store: Database, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> DomainSigning:
        signing = cls(settings, KeyBox.from_settings(settings), clock=clock)
        await signing.refresh(store)
        return signing

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(sorted(self._entries))

    def selectors(self, domain: str) -> tuple[str, ...]:
        entry = self._entries.get(ascii_domain(domain))
        return entry.signer.selectors if entry is not None else ()

    async def refresh(self, store: Database) -> None:
        """Reload the domains and their active keys; keys already open are kept."""
        rows = await DomainRepository(store).all()
        entries: dict[str, _Entry] = {}
        for row in rows:
            entry = self._entry(row)
            if entry is not None:
                entries[row.name] = entry
        self._entries = entries

    def _entry(self, row: DomainRow) -> _Entry | None:
        active = row.keys_in(ACTIVE)
        if not active:
            return None
        key_ids = tuple(k.id for k in active)
        current = self._entries.get(row.name)
        if current is not None and current.key_ids == key_ids:
            current.return_path = row.return_path
            return current
        pairs = []
        # RSA on top: verifiers that stop at the first signature mostly know RSA only.
        for key in sorted(active, key=lambda k: k.key_type != "rsa"):
            pem = self._keybox.open(key.sealed_private_key, domain=row.name, selector=key.selector)
            source = f"DKIM key {key.selector} of {row.name}"
            pairs.append(DKIMKeyPair(key.selector, load_private_key(pem, source=source)))
        signer = DKIMSigner(row.name, pairs, clock=self._clock)
        return _Entry(key_ids, signer, row.return_path)

    def sign(self, content: bytes, from_domain: str) -> bytes:
        """``Signer`` for the injector: DKIM-sign for a configured From domain."""
        entry = self._entries.get(ascii_domain(from_domain))
        if entry is not None:
            return entry.signer.sign(content)
        if self._settings.domains.allow_unconfigured_from:
            return content
        raise UnconfiguredDomainError(
            f"{from_domain} is not a configured sending domain: add it with "
            f"`kakitome domain add {from_domain}` so that its mail is signed (or set "
            "domains.allow_unconfigured_from to send unsigned mail)"
        )

    def sign_notice(self, content: bytes, from_domain: str) -> bytes:
        """``notice_signer`` for the injector (DSNs): sign with the keys of ``from_domain``
        or of the nearest parent domain that is configured (``MAILER-DAEMON@mx.example.jp``
        is signed ``d=example.jp``: aligned for DMARC in relaxed mode); unchanged when none
        is. Never refuses."""
        try:
            labels = ascii_domain(from_domain).split(".")
        except DKIMKeyError:
            return content
        for start in range(len(labels) - 1):
            entry = self._entries.get(".".join(labels[start:]))
            if entry is not None:
                return entry.signer.sign(content)
        return content

    def return_path(self, from_domain: str, sender: str) -> str:
        """The envelope sender: a VERP address for configured domains, else ``sender``."""
        entry = self._entries.get(ascii_domain(from_domain))
        if entry is None or not sender:
            return sender
        return make_return_path(self._keybox.verp_key, entry.return_path).address

    async def run_refresh(self, store: Database, stop: asyncio.Event) -> None:
        """Reload every ``domains.signer_refresh`` seconds until ``stop``."""
        interval = self._settings.domains.signer_refresh
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            if stop.is_set():
                return
            try:
                await self.refresh(store)
            except Exception as exc:  # keep the keys we have; try again next round
                log.error("reloading DKIM keys failed", error=f"{type(exc).__name__}: {exc}")
