"""The sending-domain service: add, list, show, remove, rotate, records, verify.

The CLI (``kakitome domain ...``), the web API and ``serve`` call this class, never the
tables. What it guarantees:

- ``add`` validates the name (IDN allowed, kept in both forms), makes an RSA-2048 and an
  Ed25519 key with dated selectors (or imports them from PEM files), seals them with the
  key box, and stores domain and keys in one transaction: any failure (a bad name, an
  unreadable key file, a missing secret, a duplicate) leaves nothing behind;
- private keys never leave this package unsealed except into the signer; views
  (``DomainView.to_dict``) carry public keys only;
- ``rotate_dkim`` adds a *pending* RSA + Ed25519 pair; signing switches to it only when a
  verification sees both records published with the right keys; the keys it replaces
  become *retiring* (still published, no longer signing) and are *retired* (private key
  wiped) after ``domains.rotation_grace`` seconds;
- ``verify`` records the state (``verified`` / ``failing``) and its findings, and adds an
  event (``domain_state``) when the state changes; ``run_periodic`` does that for every
  domain each ``domains.verify_interval`` seconds in ``serve`` (worker role).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from kakitome.auth.dkim_keys import (
    DKIMKeyPair,
    KeyType,
    generate_key_pair,
    key_type_of,
    load_private_key_file,
    make_selector,
)
from kakitome.auth.dnsio import AsyncLookup
from kakitome.config import Settings
from kakitome.domains.keybox import KeyBox
from kakitome.domains.names import DomainName, parse_domain_name
from kakitome.domains.records import DomainRecords, domain_records
from kakitome.domains.repository import (
    ACTIVE,
    PENDING,
    RETIRED,
    RETIRING,
    DomainRepository,
    DomainRow,
    KeyChange,
    NewKey,
)
from kakitome.domains.verify import DomainDNSError, Verification, resolver_lookup, verify_domain
from kakitome.errors import InputError, NotFound
from kakitome.queue.store import QueueStore
from kakitome.store.database import Database

__all__ = ["DomainService", "DomainView"]

log = structlog.get_logger("kakitome.domains")

EVENT_STATE = "domain_state"
EVENT_ROTATED = "dkim_rotated"
EVENT_RETIRED = "dkim_retired"


@dataclass(frozen=True, slots=True)
class DomainView:
    """A domain as shown to people and API clients: no private key material."""

    name: DomainName
    row: DomainRow

    def to_dict(self) -> dict[str, Any]:
        row = self.row
        return {
            "domain": self.name.ascii,
            "unicode": self.name.unicode,
            "return_path": row.return_path,
            "state": row.state,
            "created_at": _iso(row.created_at),
            "verified_at": _iso(row.verified_at),
            "signing_selectors": [k.selector for k in row.keys_in(ACTIVE)],
            "keys": [
                {
                    "selector": k.selector,
                    "type": k.key_type,
                    "state": k.state,
                    "created_at": _iso(k.created_at),
                    "activated_at": _iso(k.activated_at),
                    "retire_at": _iso(k.retire_at),
                    "record": {
                        "name": f"{k.selector}._domainkey.{self.name.ascii}",
                        "value": k.public_txt,
                    },
                }
                for k in row.keys
            ],
            "failing": [
                f["code"]
                for f in (row.findings or {}).get("findings", [])
                if f.get("required") and f.get("status") != "ok"
            ],
        }


def _iso(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")


class DomainService:
    """Sending domains on one store. ``clock`` and ``lookup`` are injectable for tests."""

    def __init__(
        self,
        store: Database,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        lookup: AsyncLookup | None = None,
        keybox: KeyBox | None = None,
    ) -> None:
        self._store = store
        self._queue = QueueStore(store)
        self._settings = settings
        self._repo = DomainRepository(store)
        self._clock = clock
        self._lookup = lookup
        self._keybox = keybox

    @property
    def keybox(self) -> KeyBox:
        if self._keybox is None:
            self._keybox = KeyBox.from_settings(self._settings)
        return self._keybox

    @property
    def lookup(self) -> AsyncLookup:
        if self._lookup is None:
            self._lookup = resolver_lookup(self._settings)
        return self._lookup

    # -- add / list / show / remove -------------------------------------------------------

    async def add(
        self,
        name: str,
        *,
        rsa_key_file: str | Path | None = None,
        ed25519_key_file: str | Path | None = None,
    ) -> DomainView:
        """Configure ``name`` with fresh (or imported) keys; InputError when it cannot be."""
        domain = parse_domain_name(name)
        _ = self.keybox  # a missing or unreadable secret fails before anything is made
        if await self._repo.get(domain.ascii) is not None:
            raise InputError(f"{domain.display()} is already a sending domain")
        now = self._clock()
        pairs = [
            self._key(KeyType.RSA, rsa_key_file, now, set()),
            self._key(KeyType.ED25519, ed25519_key_file, now, set()),
        ]
        row = await self._repo.add_domain(
            name=domain.ascii,
            unicode_name=domain.unicode,
            return_path=f"{self._settings.domains.return_path_label}.{domain.ascii}",
            keys=[self._new_key(domain.ascii, pair, ACTIVE) for pair in pairs],
            now=now,
        )
        return DomainView(domain, row)

    async def list_domains(self) -> list[DomainView]:
        return [DomainView(_name_of(row), row) for row in await self._repo.all()]

    async def show(self, name: str) -> DomainView:
        domain = parse_domain_name(name)
        return DomainView(domain, await self._get(domain))

    async def remove(self, name: str) -> None:
        domain = parse_domain_name(name)
        if not await self._repo.remove(domain.ascii):
            raise NotFound(f"{domain.display()} is not a sending domain")

    async def records(self, name: str) -> DomainRecords:
        domain = parse_domain_name(name)
        return domain_records(domain, await self._get(domain), self._settings, now=self._clock())

    # -- rotation -------------------------------------------------------------------------

    async def rotate_dkim(self, name: str) -> DomainView:
        """Make the next RSA + Ed25519 keys, pending until DNS shows them."""
        domain = parse_domain_name(name)
        row = await self._get(domain)
        pending = row.keys_in(PENDING)
        if pending:
            raise InputError(
                f"a rotation of {domain.display()} is already waiting for DNS: publish "
                + ", ".join(f"{k.selector}._domainkey.{domain.ascii}" for k in pending)
                + " (see `kakitome domain dns`), then run `kakitome domain verify`"
            )
        used = {k.selector for k in row.keys}
        now = self._clock()
        pairs = [self._key(kind, None, now, used) for kind in (KeyType.RSA, KeyType.ED25519)]
        await self._repo.add_keys(
            row.id, [self._new_key(domain.ascii, p, PENDING) for p in pairs], now=now
        )
        return DomainView(domain, await self._get(domain))

    async def _advance_keys(self, row: DomainRow, verification: Verification) -> bool:
        """Promote pending keys that DNS shows, retire keys past their grace period.
        Returns True when the signing keys changed."""
        now = self._clock()
        changes: list[KeyChange] = []
        pending = row.keys_in(PENDING)
        promoted = bool(pending) and all(
            k.selector in verification.published_selectors for k in pending
        )
        if promoted:
            retire_at = now + self._settings.domains.rotation_grace
            changes += [KeyChange(k.id, ACTIVE, activated_at=now) for k in pending]
            changes += [KeyChange(k.id, RETIRING, retire_at=retire_at) for k in row.keys_in(ACTIVE)]
        retired = [
            k
            for k in row.keys_in(RETIRING)
            if k.retire_at is not None and k.retire_at <= now and not promoted
        ]
        changes += [KeyChange(k.id, RETIRED, wipe=True) for k in retired]
        await self._repo.change_keys(changes)
        if promoted:
            await self._queue.add_event(
                EVENT_ROTATED,
                now=now,
                data={
                    "domain": row.name,
                    "signing": [k.selector for k in pending],
                    "retiring": [k.selector for k in row.keys_in(ACTIVE)],
                },
            )
        if retired:
            await self._queue.add_event(
                EVENT_RETIRED,
                now=now,
                data={"domain": row.name, "retired": [k.selector for k in retired]},
            )
        return promoted

    # -- verification -----------------------------------------------------------------------

    async def verify(self, name: str) -> Verification:
        """Check DNS, record the state (event on change), advance a rotation."""
        domain = parse_domain_name(name)
        row = await self._get(domain)
        return await self._verify_row(domain, row)

    async def _verify_row(self, domain: DomainName, row: DomainRow) -> Verification:
        now = self._clock()
        verification = await verify_domain(domain, row, self._settings, self.lookup, now=now)
        if await self._advance_keys(row, verification):
            # The signing keys changed: judge the domain by the keys that now sign.
            row = await self._get(domain)
            verification = await verify_domain(domain, row, self._settings, self.lookup, now=now)
        document = verification.to_dict()
        previous = await self._repo.set_verification(
            row.id, state=verification.state, findings=document, now=now
        )
        if previous is not None and previous != verification.state:
            await self._queue.add_event(
                EVENT_STATE,
                now=now,
                data={
                    "domain": row.name,
                    "from": previous,
                    "to": verification.state,
                    "failing": verification.failing_codes(),
                },
            )
        return verification

    async def verify_all(self) -> dict[str, str]:
        """Verify every domain; a domain whose DNS does not answer keeps its state.
        Returns ``{domain: state or "dns_error"}``."""
        out: dict[str, str] = {}
        for row in await self._repo.all():
            domain = _name_of(row)
            try:
                out[row.name] = (await self._verify_row(domain, row)).state
            except DomainDNSError as exc:
                log.warning("domain verification postponed", domain=row.name, error=str(exc))
                out[row.name] = "dns_error"
        return out

    async def run_periodic(self, stop: asyncio.Event) -> None:
        """Re-verify every domain each ``domains.verify_interval`` seconds until ``stop``."""
        interval = self._settings.domains.verify_interval
        if interval <= 0:
            return
        while not stop.is_set():
            try:
                await self.verify_all()
            except Exception as exc:  # keep serving: the next round may work
                log.error("domain verification failed", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    # -- helpers --------------------------------------------------------------------------

    async def _get(self, domain: DomainName) -> DomainRow:
        row = await self._repo.get(domain.ascii)
        if row is None:
            raise NotFound(
                f"{domain.display()} is not a sending domain; add it with "
                f"`kakitome domain add {domain.unicode}`"
            )
        return row

    def _key(
        self, kind: KeyType, path: str | Path | None, now: float, used: set[str]
    ) -> DKIMKeyPair:
        when = datetime.fromtimestamp(now, UTC)
        sequence = 1
        while make_selector(kind, when, sequence) in used:
            sequence += 1
        if path is None:
            return generate_key_pair(kind, when, sequence=sequence)
        key = load_private_key_file(path)
        if key_type_of(key) is not kind:
            raise InputError(f"{path} holds a {key_type_of(key).value} key, not a {kind} key")
        return DKIMKeyPair(make_selector(kind, when, sequence), key)

    def _new_key(self, domain: str, pair: DKIMKeyPair, state: str) -> NewKey:
        return NewKey(
            selector=pair.selector,
            key_type=pair.key_type.value,
            public_txt=pair.txt_value(),
            sealed_private_key=self.keybox.seal(
                pair.private_pem(), domain=domain, selector=pair.selector
            ),
            state=state,
        )


def _name_of(row: DomainRow) -> DomainName:
    return DomainName(row.name, row.unicode_name)
