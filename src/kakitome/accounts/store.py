"""Storage for the admin web UI: users, sessions, login attempts, message search, and the
dashboard's hourly roll-up.

``WebStore(store.engine)`` shares the engine of the ``Database``. Each public method is
one transaction. Passwords are hashed with argon2id (argon2-cffi) in a worker thread, so a
login never blocks the event loop. Session cookies are 256-bit random tokens of which only
the SHA-256 is stored.

Message search never scans the whole table: message ids sort by creation time (ULID
layout), so dates become id ranges and pages are cut with an id cursor ("older than");
filters on deliveries (status, domain, recipient) are driven by their indexes; subject
words by a trigram index (kakitome.store.search: FTS5 on SQLite, pg_trgm on PostgreSQL).

The roll-up (``web_stats_hourly``) counts events newer than a cursor, a bounded chunk per
call, so a dashboard view costs a few thousand events at most; the first catch-up over a
large history happens in chunks across calls (or at once with ``catch_up``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import re
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kakitome.errors import InputError, StorageError
from kakitome.queue.store import DELIVERY_COLUMNS, delivery_row
from kakitome.queue.types import PENDING, STATUSES, DeliveryRow
from kakitome.store import search
from kakitome.store.ids import ALPHABET, LENGTH, encode
from kakitome.store.schema import deliveries, events
from kakitome.store.schema import messages as message_table
from kakitome.store.schema_web import (
    ROLES,
    web_login_attempts,
    web_sessions,
    web_stats_cursor,
    web_stats_hourly,
    web_users,
)
from kakitome.store.transactions import STORAGE_ERRORS

__all__ = [
    "ROLES",
    "HourlyStats",
    "MessagePage",
    "MessageQuery",
    "MessageSummary",
    "SessionInfo",
    "UserRecord",
    "WebStore",
    "id_bound",
]

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; a bound keeps hashing cheap to refuse
# A session's last_seen_at is a write on a read path: refresh it at most this often.
_TOUCH_RESOLUTION = 60.0
_ROLLUP_CURSOR = "hourly"
_ID_CHARS = frozenset(ALPHABET)


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    username: str
    role: str
    language: str | None
    disabled: bool
    created_at: float
    last_login_at: float | None


@dataclass(frozen=True, slots=True)
class SessionInfo:
    user: UserRecord
    csrf_token: str
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class MessageQuery:
    """What the Messages page and ``GET /api/v1/messages`` search for.

    ``q``: a message id, an address (sender or recipient), a domain (``@example.com`` or
    ``example.com``), or else words of the subject (each a case-insensitive substring, all
    required, Japanese without spaces). ``since``/``until``: epoch seconds.
    ``before``: the cursor of the next page (an id; newer pages are not needed)."""

    q: str = ""
    status: str | None = None
    since: float | None = None
    until: float | None = None
    before: str | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True)
class MessageSummary:
    id: str
    created_at: float
    sender: str
    header_from: str
    subject: str
    size: int
    recipients: int
    first_recipient: str
    statuses: dict[str, int]


@dataclass(frozen=True, slots=True)
class MessagePage:
    items: list[MessageSummary]
    next_before: str | None  # cursor of the next (older) page, None on the last page
    kind: str  # how q was read: all | id | address | domain | subject
    # Subject words all shorter than 3 characters cannot use the index: the page looked at
    # only this many messages below the cursor (0: the whole range was searched).
    window: int = 0


@dataclass(slots=True)
class HourlyStats:
    """Counts for one hour (or one domain): what the dashboard draws."""

    key: str | float
    queued: int = 0
    delivered: int = 0
    delivered_tls: int = 0
    delivered_verified: int = 0
    downgraded: int = 0
    deferred: int = 0
    bounced: int = 0

    @property
    def verified_share(self) -> float | None:
        return None if not self.delivered else self.delivered_verified / self.delivered

    @property
    def encrypted_share(self) -> float | None:
        return None if not self.delivered else self.delivered_tls / self.delivered

    def add(self, other: HourlyStats | dict[str, Any]) -> None:
        get = other.get if isinstance(other, dict) else lambda n: getattr(other, n)
        for name in _COUNTERS:
            setattr(self, name, getattr(self, name) + int(get(name) or 0))


_COUNTERS = (
    "queued",
    "delivered",
    "delivered_tls",
    "delivered_verified",
    "downgraded",
    "deferred",
    "bounced",
)


@dataclass(frozen=True, slots=True)
class Stats:
    hours: list[HourlyStats]
    domains: list[HourlyStats]
    total: HourlyStats
    pending_events: bool = False  # the roll-up has not caught up with the events yet
    extra: dict[str, Any] = field(default_factory=dict)


def id_bound(timestamp: float) -> str:
    """The smallest message id made at ``timestamp`` (ids are time-ordered)."""
    ms = max(0, min(int(timestamp * 1000), (1 << 48) - 1))
    return encode(ms << 80)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _user(row: Any) -> UserRecord:
    return UserRecord(
        id=int(row.id),
        username=row.username,
        role=row.role,
        language=row.language,
        disabled=bool(row.disabled),
        created_at=row.created_at,
        last_login_at=row.last_login_at,
    )


def check_username(username: str) -> str:
    """The normalised (lower-case) user name, or InputError."""
    name = username.strip().lower()
    if not USERNAME_RE.match(name):
        raise InputError("a user name is 1-64 characters: letters, digits, '.', '_', '@' or '-'")
    return name


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InputError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InputError(f"a password has at most {MAX_PASSWORD_LENGTH} characters")


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InputError(f"unknown role {role!r} (admin, sender or viewer)")
    return role


def hour_of(timestamp: float) -> float:
    return float(math.floor(timestamp / 3600.0) * 3600)


class WebStore:
    """Users, sessions, login attempts, message search and statistics for the UI."""

    def __init__(self, engine: AsyncEngine, *, hasher: PasswordHasher | None = None) -> None:
        self._engine = engine
        self._is_pg = engine.dialect.name == "postgresql"
        self._writer = engine.execution_options(sqlite_begin="IMMEDIATE")
        self.hasher = hasher or PasswordHasher()
        # A hash to verify against when the user does not exist, so that the answer takes
        # as long as for a real user (no user enumeration by timing).
        self._dummy_hash: str | None = None

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._writer.begin() as conn:
                yield conn
        except IntegrityError:
            raise
        except Exception as exc:
            if _is_storage_error(exc):
                raise StorageError(f"database did not commit: {exc}") from exc
            raise

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.execution_options(sqlite_begin="DEFERRED").connect() as conn:
                yield conn
        except Exception as exc:
            if _is_storage_error(exc):
                raise StorageError(f"database unavailable: {exc}") from exc
            raise

    # -- users ----------------------------------------------------------------------------

    async def hash_password(self, password: str) -> str:
        check_password(password)
        return await asyncio.to_thread(self.hasher.hash, password)

    async def create_user(
        self, username: str, password: str, role: str, *, now: float
    ) -> UserRecord:
        """Create a user; InputError when the name is taken or a value is not acceptable."""
        name = check_username(username)
        check_role(role)
        password_hash = await self.hash_password(password)
        row = {
            "username": name,
            "password_hash": password_hash,
            "role": role,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with self._write() as conn:
                await conn.execute(insert(web_users), [row])
        except IntegrityError as exc:
            raise InputError(f"a user named {name!r} exists already") from exc
        user = await self.user_by_name(name)
        assert user is not None
        return user

    async def count_users(self) -> int:
        async with self._read() as conn:
            return int(await conn.scalar(select(func.count()).select_from(web_users)) or 0)

    async def list_users(self) -> list[UserRecord]:
        async with self._read() as conn:
            rows = await conn.execute(select(web_users).order_by(web_users.c.username))
            return [_user(row) for row in rows]

    async def user_by_name(self, username: str) -> UserRecord | None:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(web_users).where(web_users.c.username == username.strip().lower())
                )
            ).first()
        return None if row is None else _user(row)

    async def user_by_id(self, user_id: int) -> UserRecord | None:
        async with self._read() as conn:
            row = (await conn.execute(select(web_users).where(web_users.c.id == user_id))).first()
        return None if row is None else _user(row)

    async def set_password(self, username: str, password: str, *, now: float) -> bool:
        """Change a password and end the user's sessions. False when there is no such user."""
        password_hash = await self.hash_password(password)
        async with self._write() as conn:
            user_id = await conn.scalar(
                select(web_users.c.id).where(web_users.c.username == username.strip().lower())
            )
            if user_id is None:
                return False
            await conn.execute(
                update(web_users)
                .where(web_users.c.id == user_id)
                .values(password_hash=password_hash, updated_at=now)
            )
            await conn.execute(delete(web_sessions).where(web_sessions.c.user_id == user_id))
        return True

    async def set_role(self, user_id: int, role: str, *, now: float) -> bool:
        check_role(role)
        async with self._write() as conn:
            result = await conn.execute(
                update(web_users).where(web_users.c.id == user_id).values(role=role, updated_at=now)
            )
        return bool(result.rowcount)

    async def set_language(self, user_id: int, language: str | None) -> None:
        async with self._write() as conn:
            await conn.execute(
                update(web_users).where(web_users.c.id == user_id).values(language=language)
            )

    async def remove_user(self, username: str) -> bool:
        """Remove a user and their sessions. False when there is no such user."""
        async with self._write() as conn:
            user_id = await conn.scalar(
                select(web_users.c.id).where(web_users.c.username == username.strip().lower())
            )
            if user_id is None:
                return False
            await conn.execute(delete(web_sessions).where(web_sessions.c.user_id == user_id))
            await conn.execute(delete(web_users).where(web_users.c.id == user_id))
        return True

    async def count_admins(self) -> int:
        async with self._read() as conn:
            return int(
                await conn.scalar(
                    select(func.count())
                    .select_from(web_users)
                    .where(web_users.c.role == "admin", web_users.c.disabled.is_(False))
                )
                or 0
            )

    async def authenticate(self, username: str, password: str, *, now: float) -> UserRecord | None:
        """The user when the password is right (and the account enabled), else None.

        Always spends one argon2 verification, also for unknown names."""
        name = username.strip().lower()
        async with self._read() as conn:
            row = (
                await conn.execute(select(web_users).where(web_users.c.username == name))
            ).first()
        if len(password) > MAX_PASSWORD_LENGTH:
            return None
        if row is None:
            if self._dummy_hash is None:
                self._dummy_hash = await asyncio.to_thread(
                    self.hasher.hash, secrets.token_urlsafe(16)
                )
            with contextlib.suppress(VerificationError, InvalidHashError):
                await asyncio.to_thread(self.hasher.verify, self._dummy_hash, password)
            return None
        try:
            await asyncio.to_thread(self.hasher.verify, row.password_hash, password)
        except (VerificationError, VerifyMismatchError, InvalidHashError):
            return None
        if row.disabled:
            return None
        values: dict[str, Any] = {"last_login_at": now}
        if self.hasher.check_needs_rehash(row.password_hash):
            values["password_hash"] = await asyncio.to_thread(self.hasher.hash, password)
        async with self._write() as conn:
            await conn.execute(update(web_users).where(web_users.c.id == row.id).values(**values))
        return _user(row)

    # -- sessions -------------------------------------------------------------------------

    async def create_session(
        self,
        user_id: int,
        *,
        now: float,
        lifetime: float,
        ip: str | None = None,
        user_agent: str | None = None,
    ) -> tuple[str, str]:
        """A new session; returns (cookie token, CSRF token). Expired sessions are swept."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        async with self._write() as conn:
            await conn.execute(delete(web_sessions).where(web_sessions.c.expires_at <= now))
            await conn.execute(
                insert(web_sessions),
                [
                    {
                        "id": _token_hash(token),
                        "user_id": user_id,
                        "csrf_token": csrf,
                        "created_at": now,
                        "last_seen_at": now,
                        "expires_at": now + lifetime,
                        "ip": (ip or "")[:64] or None,
                        "user_agent": (user_agent or "")[:300] or None,
                    }
                ],
            )
        return token, csrf

    async def session(self, token: str, *, now: float) -> SessionInfo | None:
        """The live session of a cookie token, with its user; None when unknown/expired."""
        if not token or len(token) > 200:
            return None
        key = _token_hash(token)
        s, u = web_sessions, web_users
        statement = (
            select(
                s.c.csrf_token,
                s.c.created_at,
                s.c.last_seen_at,
                s.c.expires_at,
                u.c.id.label("user_id"),
                u.c.username,
                u.c.role,
                u.c.language,
                u.c.disabled,
                u.c.created_at.label("user_created_at"),
                u.c.last_login_at,
            )
            .join(u, u.c.id == s.c.user_id)
            .where(s.c.id == key)
        )
        async with self._read() as conn:
            row = (await conn.execute(statement)).first()
        if row is None or row.expires_at <= now or row.disabled:
            return None
        if now - row.last_seen_at >= _TOUCH_RESOLUTION:
            async with self._write() as conn:
                await conn.execute(update(s).where(s.c.id == key).values(last_seen_at=now))
        user = UserRecord(
            id=int(row.user_id),
            username=row.username,
            role=row.role,
            language=row.language,
            disabled=bool(row.disabled),
            created_at=row.user_created_at,
            last_login_at=row.last_login_at,
        )
        return SessionInfo(
            user=user,
            csrf_token=row.csrf_token,
            created_at=row.created_at,
            expires_at=row.expires_at,
        )

    async def delete_session(self, token: str) -> None:
        async with self._write() as conn:
            await conn.execute(delete(web_sessions).where(web_sessions.c.id == _token_hash(token)))

    # -- login attempts -------------------------------------------------------------------

    async def record_attempt(self, username: str, ip: str, *, success: bool, now: float) -> None:
        """Remember an attempt; old ones (a day) are swept now and then."""
        async with self._write() as conn:
            await conn.execute(
                insert(web_login_attempts),
                [{"at": now, "username": username[:64], "ip": ip[:64], "success": success}],
            )
            if secrets.randbelow(50) == 0:
                await conn.execute(
                    delete(web_login_attempts).where(web_login_attempts.c.at < now - 86_400)
                )

    async def recent_failures(
        self, *, since: float, username: str | None = None, ip: str | None = None
    ) -> int:
        """Failed attempts since ``since`` for a user name or an IP, counted after the last
        success of that user name (a successful login clears the account's count)."""
        t = web_login_attempts
        where = [t.c.at >= since, t.c.success.is_(False)]
        if username is not None:
            last_ok = (
                select(func.max(t.c.at))
                .where(t.c.username == username, t.c.success.is_(True))
                .scalar_subquery()
            )
            where += [t.c.username == username, t.c.at > func.coalesce(last_ok, 0.0)]
        if ip is not None:
            where.append(t.c.ip == ip)
        async with self._read() as conn:
            return int(await conn.scalar(select(func.count()).select_from(t).where(*where)) or 0)

    # -- message search -------------------------------------------------------------------

    async def search_messages(self, query: MessageQuery) -> MessagePage:
        """One page of messages, newest first. InputError for an unknown status."""
        if query.status is not None and query.status not in STATUSES:
            raise InputError(f"unknown status {query.status!r}")
        limit = max(1, min(query.limit, 500))
        q = query.q.strip()
        kind = _classify(q)
        upper: str | None = None  # ids strictly below
        lower: str | None = None  # ids at or above
        if query.until is not None:
            upper = id_bound(query.until)
        if query.before:
            upper = query.before if upper is None else min(upper, query.before)
        if query.since is not None:
            lower = id_bound(query.since)
        m, d = message_table, deliveries

        def id_range(column: Any) -> list[Any]:
            where = []
            if upper is not None:
                where.append(column < upper)
            if lower is not None:
                where.append(column >= lower)
            return where

        if kind == "subject":
            return await self._search_subject(query, q, lower=lower, limit=limit)
        statements: list[Any] = []
        if kind == "id":
            statements.append(select(m.c.id).where(m.c.id == q.lower(), *id_range(m.c.id)))
        else:
            delivery_filters: list[Any] = []
            message_filters: list[Any] = []
            if query.status is not None:
                delivery_filters.append(d.c.status == query.status)
            if kind == "domain":
                delivery_filters.append(d.c.domain == _ascii_domain(q.lstrip("@")))
            if kind == "address":
                addresses = {q, _normal_address(q)}
                # Recipients: driven by ix_deliveries_recipient.
                statements.append(
                    select(d.c.message_id.label("id"))
                    .where(d.c.recipient.in_(addresses), *delivery_filters)
                    .where(*id_range(d.c.message_id))
                    .group_by(d.c.message_id)
                )
                # Envelope senders: driven by ix_messages_sender.
                by_sender = select(m.c.id).where(m.c.sender.in_(addresses), *id_range(m.c.id))
                if delivery_filters:
                    by_sender = by_sender.where(
                        select(d.c.id).where(d.c.message_id == m.c.id, *delivery_filters).exists()
                    )
                statements.append(by_sender)
            elif delivery_filters and not message_filters:
                statements.append(
                    select(d.c.message_id.label("id"))
                    .where(*delivery_filters, *id_range(d.c.message_id))
                    .group_by(d.c.message_id)
                )
            else:
                stmt = select(m.c.id).where(*message_filters, *id_range(m.c.id))
                if delivery_filters:
                    stmt = stmt.where(
                        select(d.c.id).where(d.c.message_id == m.c.id, *delivery_filters).exists()
                    )
                statements.append(stmt)
        found: set[str] = set()
        async with self._read() as conn:
            for stmt in statements:
                column = stmt.selected_columns[0]
                rows = await conn.execute(stmt.order_by(column.desc()).limit(limit + 1))
                found.update(row[0] for row in rows)
            page_ids = sorted(found, reverse=True)[: limit + 1]
            more = len(page_ids) > limit
            page_ids = page_ids[:limit]
            items = await self._summaries(conn, page_ids)
        return MessagePage(items=items, next_before=page_ids[-1] if more else None, kind=kind)

    async def _search_subject(
        self, query: MessageQuery, q: str, *, lower: str | None, limit: int
    ) -> MessagePage:
        """Subject words through the trigram index (kakitome.store.search)."""
        m, d = message_table, deliveries
        words = search.subject_words(q)
        indexed = [w for w in words if len(w) >= search.MIN_INDEXED_LENGTH]
        sqlite = self._engine.dialect.name == "sqlite"
        until = id_bound(query.until) if query.until is not None else None
        upper = until
        if query.before:
            upper = query.before if upper is None else min(upper, query.before)

        def matches(subject: Any, ws: Sequence[str]) -> list[Any]:
            # SQLite's LIKE ignores ASCII case; ILIKE (PostgreSQL) any case.
            op = subject.like if sqlite else subject.ilike
            return [op(search.like_pattern(w), escape="\\") for w in ws]

        def with_status(stmt: Any, message_id: Any) -> Any:
            if query.status is None:
                return stmt
            return stmt.where(
                select(d.c.id)
                .where(d.c.message_id == message_id, d.c.status == query.status)
                .exists()
            )

        window = 0
        async with self._read() as conn:
            if indexed and sqlite:
                # Pages follow the index's insertion order: the cursor becomes its bound.
                where = [m.c.id >= lower] if lower is not None else []
                if until is not None:
                    where.append(m.c.id < until)
                below = None
                if query.before:
                    below = await conn.scalar(search.sqlite_cursor(query.before))
                    if below is None:  # not an indexed message: fall back to its id
                        where.append(m.c.id < query.before)
                # Messages not in the index yet (fewer than a batch): every word filters.
                upto = int(await conn.scalar(search.sqlite_indexed_upto()) or 0)
                pending = search.sqlite_pending(
                    upto=upto,
                    below=below,
                    limit=limit + 1,
                    where=where + matches(m.c.subject, words),
                )
                ids = [row[0] for row in await conn.execute(with_status(pending, m.c.id))]
                if len(ids) <= limit:
                    # The index finds the rarest word; the other words filter its matches.
                    rarest = await search.sqlite_rarest(conn, indexed)
                    short = [w for w in words if w != rarest]
                    stmt = search.sqlite_candidates(
                        [rarest],
                        below=below,
                        upto=upto,
                        limit=limit + 1 - len(ids),
                        where=where + matches(m.c.subject, short),
                    )
                    ids += [row[0] for row in await conn.execute(with_status(stmt, m.c.id))]
            elif indexed:
                where = [m.c.id < upper] if upper is not None else []
                if lower is not None:
                    where.append(m.c.id >= lower)
                # As on SQLite, the index serves the rarest word only: GIN would otherwise
                # AND the bitmaps of a common word too (116 ms at a million messages).
                rarest = await search.pg_rarest(conn, indexed)
                others = [w for w in words if w != rarest]
                unindexed = m.c.subject + ""  # an expression the GIN index does not cover
                stmt = select(m.c.id).where(
                    *where, *matches(m.c.subject, [rarest]), *matches(unindexed, others)
                )
                stmt = with_status(stmt, m.c.id).order_by(m.c.id.desc()).limit(limit + 1)
                ids = [row[0] for row in await conn.execute(stmt)]
            else:
                # Only short words: look at a bounded window of the newest messages.
                where = [m.c.id < upper] if upper is not None else []
                if lower is not None:
                    where.append(m.c.id >= lower)
                recent = (
                    select(m.c.id, m.c.subject)
                    .where(*where)
                    .order_by(m.c.id.desc())
                    .limit(search.SHORT_QUERY_WINDOW)
                    .subquery()
                )
                stmt = select(recent.c.id).where(*matches(recent.c.subject, words))
                stmt = with_status(stmt, recent.c.id).order_by(recent.c.id.desc())
                ids = [row[0] for row in await conn.execute(stmt.limit(limit + 1))]
                if len(ids) <= limit:
                    span = (
                        select(m.c.id)
                        .where(*where)
                        .order_by(m.c.id.desc())
                        .limit(search.SHORT_QUERY_WINDOW)
                        .subquery()
                    )
                    seen, oldest = (
                        await conn.execute(select(func.count(), func.min(span.c.id)))
                    ).one()
                    if int(seen) >= search.SHORT_QUERY_WINDOW:
                        window = search.SHORT_QUERY_WINDOW
                        items = await self._summaries(conn, ids)
                        return MessagePage(
                            items=items, next_before=oldest, kind="subject", window=window
                        )
            more = len(ids) > limit
            ids = ids[:limit]
            items = await self._summaries(conn, ids)
        return MessagePage(
            items=items, next_before=ids[-1] if more else None, kind="subject", window=window
        )

    async def _summaries(self, conn: AsyncConnection, ids: Sequence[str]) -> list[MessageSummary]:
        if not ids:
            return []
        m, d = message_table, deliveries
        rows = {
            row.id: row
            for row in await conn.execute(
                select(
                    m.c.id, m.c.created_at, m.c.sender, m.c.header_from, m.c.subject, m.c.size
                ).where(m.c.id.in_(ids))
            )
        }
        per: dict[str, dict[str, int]] = {}
        first: dict[str, str] = {}
        grouped = await conn.execute(
            select(d.c.message_id, d.c.status, func.count(), func.min(d.c.recipient))
            .where(d.c.message_id.in_(ids))
            .group_by(d.c.message_id, d.c.status)
        )
        for message_id, status, count, recipient in grouped:
            per.setdefault(message_id, {})[status] = int(count)
            if message_id not in first or recipient < first[message_id]:
                first[message_id] = recipient
        return [
            MessageSummary(
                id=row.id,
                created_at=row.created_at,
                sender=row.sender,
                header_from=row.header_from,
                subject=row.subject,
                size=row.size,
                recipients=sum(per.get(row.id, {}).values()),
                first_recipient=first.get(row.id, ""),
                statuses=per.get(row.id, {}),
            )
            for row in (rows[i] for i in ids if i in rows)
        ]

    async def pending_counts(self) -> dict[str, int]:
        """Deliveries per non-final status (queued, deferred, held), each counted on its
        index: cheap however many final deliveries there are."""
        counts: dict[str, int] = {}
        async with self._read() as conn:
            for status in PENDING:
                counts[status] = int(
                    await conn.scalar(
                        select(func.count())
                        .select_from(deliveries)
                        .where(deliveries.c.status == status)
                    )
                    or 0
                )
        return counts

    async def queue_page(
        self,
        statuses: Sequence[str],
        *,
        domain: str | None = None,
        before: str | None = None,
        limit: int = 100,
    ) -> tuple[list[DeliveryRow], str | None]:
        """Deliveries in ``statuses``, newest message first, cut at a message boundary;
        returns (rows, cursor of the next page)."""
        d = deliveries
        rows: list[Any] = []
        async with self._read() as conn:
            for status in statuses:
                stmt = select(*DELIVERY_COLUMNS).where(d.c.status == status)
                if domain:
                    stmt = stmt.where(d.c.domain == _ascii_domain(domain.lstrip("@")))
                if before:
                    stmt = stmt.where(d.c.message_id < before)
                stmt = stmt.order_by(d.c.message_id.desc(), d.c.id).limit(limit + 1)
                rows.extend(await conn.execute(stmt))
        rows.sort(key=lambda r: (r.message_id, -r.id), reverse=True)
        more = len(rows) > limit
        rows = rows[: limit + 1]
        next_before: str | None = None
        if more:
            last = rows[limit].message_id
            kept = [r for r in rows[:limit] if r.message_id != last]
            if kept:
                rows, next_before = kept, kept[-1].message_id
            else:
                rows, next_before = rows[:limit], None
        return [delivery_row(r) for r in rows], next_before

    # -- statistics -----------------------------------------------------------------------

    async def refresh_rollup(self, *, now: float, max_events: int = 20_000) -> tuple[int, bool]:
        """Count up to ``max_events`` new events into the hourly roll-up.

        Returns (events counted, whether more are waiting). Safe to run in several
        processes: the cursor moves with a compare-and-set, a loser counts nothing."""
        e, d = events, deliveries
        async with self._read() as conn:
            start = await conn.scalar(
                select(web_stats_cursor.c.last_event_id).where(
                    web_stats_cursor.c.name == _ROLLUP_CURSOR
                )
            )
            start = int(start or 0)
            rows = (
                await conn.execute(
                    select(e.c.id, e.c.at, e.c.kind, e.c.data, d.c.domain)
                    .select_from(e.outerjoin(d, d.c.id == e.c.delivery_id))
                    .where(
                        e.c.id > start,
                        e.c.kind.in_(("queued", "delivered", "deferred", "bounced")),
                    )
                    .order_by(e.c.id)
                    .limit(max_events)
                )
            ).all()
            last_id = rows[-1].id if rows else start
            more = len(rows) == max_events
        if not rows:
            return 0, False
        buckets: dict[tuple[float, str], dict[str, int]] = {}
        for row in rows:
            data = row.data if isinstance(row.data, dict) else {}
            hour = hour_of(row.at)
            domain = row.domain or ""
            if row.kind == "queued":
                counter = buckets.setdefault((hour, ""), dict.fromkeys(_COUNTERS, 0))
                counter["queued"] += int(data.get("recipients") or 1)
                continue
            counter = buckets.setdefault((hour, domain), dict.fromkeys(_COUNTERS, 0))
            counter[row.kind] += 1
            if row.kind == "delivered":
                tls = data.get("tls") or {}
                if tls.get("used"):
                    counter["delivered_tls"] += 1
                if tls.get("verified") or tls.get("verification") == "verified":
                    counter["delivered_verified"] += 1
                if tls.get("downgraded"):
                    counter["downgraded"] += 1
        try:
            async with self._write() as conn:
                cursor = web_stats_cursor
                if start == 0 and not await conn.scalar(
                    select(func.count()).select_from(cursor).where(cursor.c.name == _ROLLUP_CURSOR)
                ):
                    await conn.execute(
                        insert(cursor),
                        [{"name": _ROLLUP_CURSOR, "last_event_id": last_id, "updated_at": now}],
                    )
                else:
                    moved = await conn.execute(
                        update(cursor)
                        .where(cursor.c.name == _ROLLUP_CURSOR, cursor.c.last_event_id == start)
                        .values(last_event_id=last_id, updated_at=now)
                    )
                    if not moved.rowcount:
                        raise _Lost
                await self._add_counts(conn, buckets)
        except (_Lost, IntegrityError):
            return 0, True
        return len(rows), more

    async def _add_counts(
        self, conn: AsyncConnection, buckets: dict[tuple[float, str], dict[str, int]]
    ) -> None:
        h = web_stats_hourly
        keys = list(buckets)
        existing: set[tuple[float, str]] = set()
        for hour in {k[0] for k in keys}:
            domains = [k[1] for k in keys if k[0] == hour]
            for start in range(0, len(domains), 500):
                chunk = domains[start : start + 500]
                rows = await conn.execute(
                    select(h.c.hour, h.c.domain).where(h.c.hour == hour, h.c.domain.in_(chunk))
                )
                existing.update((float(r.hour), r.domain) for r in rows)
        new_rows = [
            {"hour": k[0], "domain": k[1], **v} for k, v in buckets.items() if k not in existing
        ]
        if new_rows:
            await conn.execute(insert(h), new_rows)
        for key in existing:
            counts = buckets[key]
            await conn.execute(
                update(h)
                .where(h.c.hour == key[0], h.c.domain == key[1])
                .values({name: getattr(h.c, name) + counts[name] for name in _COUNTERS})
            )

    async def catch_up(self, *, now: float, chunk: int = 50_000) -> int:
        """Count every event not yet in the roll-up; returns how many."""
        total = 0
        while True:
            counted, more = await self.refresh_rollup(now=now, max_events=chunk)
            total += counted
            if not more:
                return total

    async def stats(self, *, since: float, until: float, top_domains: int = 10) -> Stats:
        """Per hour and per receiving domain between ``since`` and ``until``."""
        h = web_stats_hourly
        first, last = hour_of(since), hour_of(until)
        sums = [func.sum(getattr(h.c, name)).label(name) for name in _COUNTERS]
        async with self._read() as conn:
            by_hour = await conn.execute(
                select(h.c.hour, *sums)
                .where(h.c.hour >= first, h.c.hour <= last)
                .group_by(h.c.hour)
            )
            hours = {float(row.hour): row._mapping for row in by_hour}
            by_domain = await conn.execute(
                select(h.c.domain, *sums)
                .where(h.c.hour >= first, h.c.hour <= last, h.c.domain != "")
                .group_by(h.c.domain)
                .order_by(func.sum(h.c.delivered).desc(), h.c.domain)
                .limit(top_domains)
            )
            domain_rows = [row._mapping for row in by_domain]
        series: list[HourlyStats] = []
        total = HourlyStats(key="total")
        hour = first
        while hour <= last:
            item = HourlyStats(key=hour)
            if hour in hours:
                item.add(dict(hours[hour]))
            total.add(item)
            series.append(item)
            hour += 3600.0
        domains = []
        for row in domain_rows:
            item = HourlyStats(key=row["domain"])
            item.add(dict(row))
            domains.append(item)
        return Stats(hours=series, domains=domains, total=total)


class _Lost(Exception):
    """Another process moved the roll-up cursor first."""


def _classify(q: str) -> str:
    if not q:
        return "all"
    if len(q) == LENGTH and all(c in _ID_CHARS for c in q.lower()):
        return "id"
    if "@" in q and not q.startswith("@") and " " not in q:
        return "address"
    if (q.startswith("@") and len(q) > 1) or re.fullmatch(r"[\w.-]+\.[\w-]+", q):
        return "domain"
    return "subject"


def _ascii_domain(domain: str) -> str:
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return domain.lower()


def _normal_address(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return f"{local}@{_ascii_domain(domain)}"


def _is_storage_error(exc: BaseException) -> bool:
    return isinstance(exc, STORAGE_ERRORS)
