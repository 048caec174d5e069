"""Storage of sending domains and their DKIM keys (tables in ``kakitome.store.schema_domains``).

Each public function is one transaction on the ``Database``'s engine, on SQLite and PostgreSQL
alike; writes on SQLite take the write lock at BEGIN (``sqlite_begin="IMMEDIATE"``, see
``kakitome.store.db``). Database failures become ``StorageError``. Private keys pass
through here only sealed (``kakitome.domains.keybox``); rows read back carry the sealed
text, which only the signer opens.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection

from kakitome.errors import InputError, StorageError
from kakitome.store.database import Database
from kakitome.store.schema_domains import dkim_keys, sending_domains

__all__ = [
    "ACTIVE",
    "KEY_STATES",
    "PENDING",
    "RETIRED",
    "RETIRING",
    "DomainRow",
    "KeyChange",
    "KeyRow",
    "NewKey",
]

PENDING = "pending"
ACTIVE = "active"
RETIRING = "retiring"
RETIRED = "retired"
KEY_STATES = (PENDING, ACTIVE, RETIRING, RETIRED)

_ERRORS: tuple[type[BaseException], ...] = (DBAPIError, PoolTimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class NewKey:
    selector: str
    key_type: str
    public_txt: str
    sealed_private_key: str
    state: str


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: int
    selector: str
    key_type: str
    public_txt: str
    sealed_private_key: str  # "" once retired
    state: str
    created_at: float
    activated_at: float | None
    retire_at: float | None


@dataclass(frozen=True, slots=True)
class DomainRow:
    id: int
    name: str
    unicode_name: str
    return_path: str
    created_at: float
    state: str
    verified_at: float | None
    findings: dict[str, Any] | None
    keys: tuple[KeyRow, ...]

    def keys_in(self, *states: str) -> tuple[KeyRow, ...]:
        return tuple(k for k in self.keys if k.state in states)


@dataclass(frozen=True, slots=True)
class KeyChange:
    key_id: int
    state: str
    activated_at: float | None = None
    retire_at: float | None = None
    wipe: bool = False  # forget the private key (retired keys)


class DomainRepository:
    """Domains and keys on the store's database."""

    def __init__(self, store: Database) -> None:
        self._engine = store.engine
        self._writer = store.engine.execution_options(sqlite_begin="IMMEDIATE")

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._writer.begin() as conn:
                yield conn
        except IntegrityError:
            raise
        except _ERRORS as exc:
            raise StorageError(f"database did not commit: {type(exc).__name__}") from exc

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.execution_options(sqlite_begin="DEFERRED").begin() as conn:
                yield conn
        except _ERRORS as exc:
            raise StorageError(f"database unavailable: {type(exc).__name__}") from exc

    async def add_domain(
        self,
        *,
        name: str,
        unicode_name: str,
        return_path: str,
        keys: Sequence[NewKey],
        now: float,
    ) -> DomainRow:
        """The domain and its keys in one transaction; InputError if it exists already."""
        try:
            async with self._write() as conn:
                result = await conn.execute(
                    insert(sending_domains)
                    .values(
                        name=name,
                        unicode_name=unicode_name,
                        return_path=return_path,
                        created_at=now,
                        state="new",
                    )
                    .returning(sending_domains.c.id)
                )
                domain_id = int(result.scalar_one())
                await _insert_keys(conn, domain_id, keys, now)
        except IntegrityError:
            raise InputError(f"{name} is already a sending domain") from None
        found = await self.get(name)
        assert found is not None
        return found

    async def add_keys(self, domain_id: int, keys: Sequence[NewKey], *, now: float) -> None:
        try:
            async with self._write() as conn:
                await _insert_keys(conn, domain_id, keys, now)
        except IntegrityError:
            raise InputError("a key with that selector exists already; try again") from None

    async def change_keys(self, changes: Sequence[KeyChange]) -> None:
        if not changes:
            return
        async with self._write() as conn:
            for change in changes:
                values: dict[str, Any] = {"state": change.state}
                if change.activated_at is not None:
                    values["activated_at"] = change.activated_at
                if change.retire_at is not None:
                    values["retire_at"] = change.retire_at
                if change.wipe:
                    values["private_key"] = ""
                await conn.execute(
                    update(dkim_keys).where(dkim_keys.c.id == change.key_id).values(**values)
                )

    async def get(self, name: str) -> DomainRow | None:
        async with self._read() as conn:
            rows = await _load(conn, name)
        return rows[0] if rows else None

    async def all(self) -> list[DomainRow]:
        async with self._read() as conn:
            return await _load(conn, None)

    async def remove(self, name: str) -> bool:
        async with self._write() as conn:
            found = await conn.execute(
                select(sending_domains.c.id).where(sending_domains.c.name == name)
            )
            domain_id = found.scalar_one_or_none()
            if domain_id is None:
                return False
            # Explicit: SQLite cascades only with foreign_keys=ON, and keys must not linger.
            await conn.execute(delete(dkim_keys).where(dkim_keys.c.domain_id == domain_id))
            await conn.execute(delete(sending_domains).where(sending_domains.c.id == domain_id))
            return True

    async def set_verification(
        self, domain_id: int, *, state: str, findings: dict[str, Any], now: float
    ) -> str | None:
        """Record a verification; returns the state it replaced (None: domain gone)."""
        async with self._write() as conn:
            found = await conn.execute(
                select(sending_domains.c.state).where(sending_domains.c.id == domain_id)
            )
            previous = found.scalar_one_or_none()
            if previous is None:
                return None
            await conn.execute(
                update(sending_domains)
                .where(sending_domains.c.id == domain_id)
                .values(state=state, findings=findings, verified_at=now)
            )
            return str(previous)


async def _insert_keys(
    conn: AsyncConnection, domain_id: int, keys: Sequence[NewKey], now: float
) -> None:
    if not keys:
        return
    await conn.execute(
        insert(dkim_keys),
        [
            {
                "domain_id": domain_id,
                "selector": key.selector,
                "key_type": key.key_type,
                "public_txt": key.public_txt,
                "private_key": key.sealed_private_key,
                "state": key.state,
                "created_at": now,
                "activated_at": now if key.state == ACTIVE else None,
                "retire_at": None,
            }
            for key in keys
        ],
    )


async def _load(conn: AsyncConnection, name: str | None) -> list[DomainRow]:
    query = select(sending_domains).order_by(sending_domains.c.name)
    if name is not None:
        query = query.where(sending_domains.c.name == name)
    domains = list(await conn.execute(query))
    if not domains:
        return []
    ids = [row.id for row in domains]
    key_rows = await conn.execute(
        select(dkim_keys).where(dkim_keys.c.domain_id.in_(ids)).order_by(dkim_keys.c.id)
    )
    by_domain: dict[int, list[KeyRow]] = {}
    for k in key_rows:
        by_domain.setdefault(int(k.domain_id), []).append(
            KeyRow(
                id=int(k.id),
                selector=k.selector,
                key_type=k.key_type,
                public_txt=k.public_txt,
                sealed_private_key=k.private_key,
                state=k.state,
                created_at=k.created_at,
                activated_at=k.activated_at,
                retire_at=k.retire_at,
            )
        )
    return [
        DomainRow(
            id=int(d.id),
            name=d.name,
            unicode_name=d.unicode_name,
            return_path=d.return_path,
            created_at=d.created_at,
            state=d.state,
            verified_at=d.verified_at,
            findings=d.findings,
            keys=tuple(by_domain.get(int(d.id), ())),
        )
        for d in domains
    ]
