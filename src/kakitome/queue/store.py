"""The queue store: every read and write of messages, deliveries and their events.

``QueueStore(database)`` is built over the ``Database`` handle (``kakitome.store.database``:
engine, transactions, write lock, wake-ups). Callers (injection, the scheduler, web, CLI)
use it, never the tables. Each public method is one transaction, and a method that writes
returns only after the commit: when the database cannot commit it raises ``StorageError``
and nothing may be acknowledged. The same code runs on SQLite (WAL, ``synchronous=FULL``)
and PostgreSQL.

Only this package writes the queue tables (``messages``, ``deliveries``, ``events``). Parts
that must write queue rows inside a transaction of their own use the functions at the end
of this module on their connection: ``insert_messages`` (a campaign batch and its
checkpoint in one transaction), ``insert_event`` (a suppression, a TLS event) and
``mark_bounced`` (a DSN that came back).

Claiming. A delivery is due when its status is ``queued`` or ``deferred``, its
``next_attempt_at`` has come and it has no live lease. ``claim_due`` leases due
deliveries to one owner for ``lease_seconds``: on SQLite in a single
``UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING`` under the write lock; on
PostgreSQL the candidates are picked with ``FOR UPDATE SKIP LOCKED`` in a CTE, so many
workers on many machines claim in parallel and never get the same delivery. New mail
(``queued``) and retries (``deferred``) are taken in turn, oldest first, so a backlog of
one cannot starve the other. A lease that runs out (a dead worker) makes its deliveries
due again.

Results. ``record_results`` applies the results of one owner's attempts in one
transaction with bulk statements; what each result does to its delivery (retry, expiry,
bounce) is decided by ``kakitome.queue.transitions``. A result whose delivery is no longer
leased to that owner (the lease ran out and someone else took it, or the delivery was
deleted) is ignored: the newer owner's result is the one that counts.

Waking. ``wait_for_work`` returns early when new work may be due: PostgreSQL's
``LISTEN/NOTIFY`` on channel ``kakitome_queue`` (sent by inject, release, retry) wakes
workers in every process; on SQLite an in-process event does it, and other processes
find the work at their next poll (both are the ``Database``'s).

Limits: SQLite has one writer at a time; writers in this process queue on a lock,
writers in other processes wait up to ``busy_timeout``. A lease is not renewed: an
attempt that outlives ``lease_seconds`` may be made twice.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from kakitome.delivery.types import OutboundMessage, Recipient, RecipientResult
from kakitome.errors import InputError, NotFound
from kakitome.queue.schedule import RetryPolicy
from kakitome.queue.transitions import after_attempt
from kakitome.queue.types import (
    DEFERRED,
    HELD,
    PENDING,
    QUEUE_ACTIONS,
    QUEUED,
    STATUSES,
    Bounce,
    ClaimedBatch,
    DeliveryRow,
    MessageReceipt,
    NewMessage,
)
from kakitome.store.database import NOTIFY_CHANNEL, Database
from kakitome.store.ids import new_message_id
from kakitome.store.schema import deliveries, events
from kakitome.store.schema import messages as message_table
from kakitome.store.sqlite_thread import in_connection_thread
from kakitome.tls.receipt import TLSReceipt

__all__ = [
    "DELIVERY_COLUMNS",
    "QueueStore",
    "delivery_row",
    "injection_rows",
    "insert_event",
    "insert_messages",
    "mark_bounced",
]


# Bound parameters per statement, under SQLite's 32,766 and asyncpg's 32,767.
_CHUNK = 5_000

T = TypeVar("T")


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# Claiming SQL. Two arms (new mail, retries), each taken oldest first through
# ix_deliveries_due, interleaved by rank so that neither starves the other.
_DUE_ARM = """
    SELECT id, next_attempt_at FROM deliveries
    WHERE status = '{status}' AND next_attempt_at <= :now
      AND (lease_until IS NULL OR lease_until <= :now)
    ORDER BY next_attempt_at
    LIMIT :limit
"""
_RETURNING = "RETURNING id, message_id, recipient, domain, notify, orcpt"

_CLAIM_SQLITE = (
    f"""
    UPDATE deliveries SET lease_owner = :owner, lease_until = :until
    WHERE id IN (
        SELECT id FROM (
            SELECT id, row_number() OVER (ORDER BY next_attempt_at, id) AS turn
            FROM ({_DUE_ARM.format(status=QUEUED)})
            UNION ALL
            SELECT id, row_number() OVER (ORDER BY next_attempt_at, id) AS turn
            FROM ({_DUE_ARM.format(status=DEFERRED)})
        ) ORDER BY turn LIMIT :limit
    )
    {_RETURNING}
    """
)

_CLAIM_POSTGRESQL = text(
    f"""
    WITH fresh AS MATERIALIZED (
        {_DUE_ARM.format(status=QUEUED)} FOR UPDATE SKIP LOCKED
    ), retry AS MATERIALIZED (
        {_DUE_ARM.format(status=DEFERRED)} FOR UPDATE SKIP LOCKED
    ), pick AS MATERIALIZED (
        SELECT id FROM (
            SELECT id, row_number() OVER (ORDER BY next_attempt_at, id) AS turn FROM fresh
            UNION ALL
            SELECT id, row_number() OVER (ORDER BY next_attempt_at, id) AS turn FROM retry
        ) AS candidates ORDER BY turn LIMIT :limit
    )
    UPDATE deliveries SET lease_owner = :owner, lease_until = :until
    FROM pick WHERE deliveries.id = pick.id
    {_RETURNING.replace("RETURNING ", "RETURNING deliveries.").replace(", ", ", deliveries.")}
    """
)

_LOAD_MESSAGES_SQLITE = (
    "SELECT id, sender, content, eight_bit, smtputf8, requiretls, envid, ret"
    " FROM messages WHERE id IN ({marks})"
)
_CURRENT_SQLITE = (
    "SELECT d.id, d.message_id, d.recipient, d.status, d.attempts, d.next_attempt_at,"
    " d.expires_at, d.notify, d.orcpt, m.sender, m.envid, m.ret"
    " FROM deliveries AS d JOIN messages AS m ON m.id = d.message_id"
    " WHERE d.lease_owner = ? AND d.id IN ({marks})"
)


class _ClaimedRow(NamedTuple):  # _RETURNING's columns
    id: int
    message_id: str
    recipient: str
    domain: str
    notify: str | None
    orcpt: str | None


class _MessageRow(NamedTuple):  # _LOAD_MESSAGES_SQLITE's columns
    id: str
    sender: str
    content: bytes
    eight_bit: int
    smtputf8: int
    requiretls: int
    envid: str | None
    ret: str | None


class _CurrentRow(NamedTuple):  # _CURRENT_SQLITE's columns, as record_results' select
    id: int
    message_id: str
    recipient: str
    status: str
    attempts: int
    next_attempt_at: float
    expires_at: float
    notify: str | None
    orcpt: str | None
    sender: str
    envid: str | None
    ret: str | None


# record_results: one statement, run with executemany.
_APPLY_RESULT = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        attempts=bindparam("b_attempts"),
        next_attempt_at=bindparam("b_next"),
        updated_at=bindparam("b_now"),
        lease_owner=None,
        lease_until=None,
        reply_code=bindparam("b_code"),
        reply_enhanced=bindparam("b_enhanced"),
        reply_text=bindparam("b_text"),
        mx_host=bindparam("b_mx_host"),
        mx_ip=bindparam("b_mx_ip"),
        tls=bindparam("b_tls", type_=deliveries.c.tls.type),
    )
)


class QueueStore:
    """Messages, deliveries and their events on a ``Database`` (SQLite or PostgreSQL).

    Cheap to build: the write lock and the wake-ups belong to the database handle, so
    every ``QueueStore`` over one ``Database`` shares them.
    """

    def __init__(self, database: Database) -> None:
        self._db = database
        self._is_pg = database.is_postgresql

    @property
    def database(self) -> Database:
        return self._db

    # -- injection ----------------------------------------------------------------------

    async def inject(self, message: NewMessage, *, now: float, lifetime: float) -> str:
        """Store one message and a queued delivery per recipient in one transaction;
        return its id only after the commit. Raises StorageError when it cannot commit,
        InputError when the message has no recipients."""
        return (await self.inject_many([message], now=now, lifetime=lifetime))[0]

    async def inject_many(
        self, messages: Sequence[NewMessage], *, now: float, lifetime: float
    ) -> list[str]:
        """As inject, for many messages in one transaction (a group commit)."""
        if not messages:
            return []
        ids, message_rows, delivery_rows, event_rows = injection_rows(
            messages, now=now, lifetime=lifetime
        )
        if not self._is_pg:
            # Parameters made before the write lock is taken; the inserts in one hop.
            rows = _injection_tuples(message_rows, delivery_rows, event_rows)
            await self._db.write_sqlite(lambda db_: _insert_injection_sqlite(db_, *rows))
            self._db.work_committed()
            return ids
        async with self._db.write() as conn:
            await conn.execute(insert(message_table), message_rows)
            await conn.execute(insert(deliveries), delivery_rows)
            await conn.execute(insert(events), event_rows)
            await self._db.notify(conn)
        self._db.work_committed()
        return ids

    # -- the queue ----------------------------------------------------------------------

    async def claim_due(
        self, owner: str, *, now: float, limit: int, lease_seconds: float
    ) -> list[ClaimedBatch]:
        """Lease up to ``limit`` due deliveries (status queued/deferred, next_attempt_at <=
        now, lease free or expired) and return them grouped by domain, each message once
        per domain with its recipients there, content loaded."""
        if limit <= 0:
            return []
        params = {"owner": owner, "until": now + lease_seconds, "now": now, "limit": limit}
        if not self._is_pg:
            return await self._claim_due_sqlite(params)
        async with self._db.write() as conn:
            claimed = (await conn.execute(_CLAIM_POSTGRESQL, params)).all()
            if not claimed:
                return []
            message_ids = sorted({row.message_id for row in claimed})
            loaded: dict[str, Any] = {}
            columns = (
                message_table.c.id,
                message_table.c.sender,
                message_table.c.content,
                message_table.c.eight_bit,
                message_table.c.smtputf8,
                message_table.c.requiretls,
                message_table.c.envid,
                message_table.c.ret,
            )
            for chunk in _chunks(message_ids):
                result = await conn.execute(select(*columns).where(message_table.c.id.in_(chunk)))
                loaded.update((row.id, row) for row in result)
        return _group_claimed(claimed, loaded)

    async def _claim_due_sqlite(self, params: dict[str, Any]) -> list[ClaimedBatch]:
        """claim_due on SQLite: the lease in one hop to the connection's thread (the write
        lock is held only for that), the contents read after the commit. A message deleted
        in between is simply not there to deliver (its deliveries went with it)."""

        def lease(db_: sqlite3.Connection) -> list[_ClaimedRow]:
            return [_ClaimedRow(*row) for row in db_.execute(_CLAIM_SQLITE, params)]

        def load(db_: sqlite3.Connection, ids: list[str]) -> dict[str, _MessageRow]:
            loaded: dict[str, _MessageRow] = {}
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                for row in db_.execute(_LOAD_MESSAGES_SQLITE.format(marks=marks), chunk):
                    loaded[row[0]] = _MessageRow(*row)
            return loaded

        claimed = await self._db.write_sqlite(lease, delivery=True)
        if not claimed:
            return []
        ids = sorted({row.message_id for row in claimed})
        async with self._db.read() as conn:
            messages = await in_connection_thread(conn, lambda db_: load(db_, ids))
        return _group_claimed(claimed, messages)

    async def record_results(
        self,
        owner: str,
        results: Sequence[RecipientResult],
        *,
        now: float,
        schedule: RetryPolicy,
    ) -> list[Bounce]:
        """Apply attempt results: delivered/bounced are final; deferred gets
        next_attempt_at from ``schedule.next_attempt(attempts, now)`` or becomes bounced
        when that passes expires_at. Store reply, MX, TLS receipt; add an event per result;
        clear the lease. Returns the deliveries that became bounced.

        Results for deliveries not leased to ``owner`` are ignored. A deferred result for
        a delivery put on hold meanwhile keeps it held. An expiry bounce keeps the last
        reply's code, with enhanced status 4.4.7 and the text "queue lifetime expired: "
        followed by the last reply; its event has kind "bounced" and ``expired: true``."""
        if not results:
            return []
        by_id = {result.delivery_id: result for result in results}  # the last one wins
        wanted = sorted(by_id)
        bounces: list[Bounce] = []
        if not self._is_pg:

            def record(db_: sqlite3.Connection) -> None:
                rows: list[Any] = []
                for chunk in _chunks(wanted):
                    marks = ",".join("?" * len(chunk))
                    cursor = db_.execute(_CURRENT_SQLITE.format(marks=marks), [owner, *chunk])
                    rows.extend(_CurrentRow(*row) for row in cursor)
                updates, event_rows = _apply_all(rows, by_id, now, schedule, bounces)
                if updates:
                    _apply_results_sqlite(db_, updates, event_rows)

            await self._db.write_sqlite(record, delivery=True)
            return bounces
        current = _current_rows(owner)
        async with self._db.write() as conn:
            rows: list[Any] = []
            for chunk in _chunks(wanted):
                rows.extend(await conn.execute(current.where(deliveries.c.id.in_(chunk))))
            updates, event_rows = _apply_all(rows, by_id, now, schedule, bounces)
            if updates:
                await conn.execute(_APPLY_RESULT, updates)
                await conn.execute(insert(events), event_rows)
        return bounces

    async def release_leases(self, owner: str | None = None) -> int:
        """Free leases (of one owner, or all). Returns how many."""
        statement = (
            update(deliveries)
            .where(deliveries.c.lease_owner.is_not(None))
            .values(lease_owner=None, lease_until=None)
        )
        if owner is not None:
            statement = statement.where(deliveries.c.lease_owner == owner)
        async with self._db.write() as conn:
            count = (await conn.execute(statement)).rowcount
            if count:
                await self._db.notify(conn)
        if count:
            self._db.work_committed()
        return int(count)

    async def renew_leases(self, owner: str, delivery_ids: Sequence[int], *, until: float) -> int:
        """Extend ``owner``'s leases on these deliveries to ``until`` (a worker still at
        work on them); leases another worker took over are left alone. Returns how many."""
        count = 0
        async with self._db.write() as conn:
            for chunk in _chunks(sorted(delivery_ids)):
                result = await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id.in_(chunk), deliveries.c.lease_owner == owner)
                    .values(lease_until=until)
                )
                count += int(result.rowcount)
        return count

    def wake(self) -> None:
        """New work may be due (told by another process): wake ``wait_for_work``."""
        self._db.wake()

    def add_wake_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (in the event loop, must not block) after each commit of new
        or newly due work by this process (``Database.add_wake_listener``)."""
        self._db.add_wake_listener(listener)

    def work_committed(self) -> None:
        """Another process of ours committed new work (``Database.work_committed``)."""
        self._db.work_committed()

    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109 (agreed hook)
        """Return when new work may be due (an inject, a release, a retry) or after
        ``timeout`` seconds, whichever is first (``Database.wait_for_work``)."""
        await self._db.wait_for_work(timeout)

    async def next_due_at(self) -> float | None:
        """The earliest ``next_attempt_at`` of the unleased queued or deferred deliveries,
        or None when there are none. Leased deliveries are left out: they come back when
        their lease runs out, which the worker's poll interval covers."""
        earliest: float | None = None
        async with self._db.read() as conn:
            for status in (QUEUED, DEFERRED):
                value = await conn.scalar(
                    select(deliveries.c.next_attempt_at)
                    .where(deliveries.c.status == status, deliveries.c.lease_owner.is_(None))
                    .order_by(deliveries.c.next_attempt_at)
                    .limit(1)
                )
                if value is not None and (earliest is None or value < earliest):
                    earliest = float(value)
        return earliest

    # -- receipts and queue management --------------------------------------------------

    async def receipt(self, message_id: str) -> MessageReceipt:
        """The message and each recipient's state. Raises NotFound."""
        async with self._db.read() as conn:
            message = (
                await conn.execute(
                    select(
                        message_table.c.id,
                        message_table.c.created_at,
                        message_table.c.sender,
                        message_table.c.header_from,
                        message_table.c.subject,
                        message_table.c.size,
                    ).where(message_table.c.id == message_id)
                )
            ).first()
            if message is None:
                raise NotFound(f"no message {message_id!r}")
            rows = await conn.execute(
                select(*DELIVERY_COLUMNS)
                .where(deliveries.c.message_id == message_id)
                .order_by(deliveries.c.id)
            )
            recipients = tuple(delivery_row(row) for row in rows)
        return MessageReceipt(
            id=message.id,
            created_at=message.created_at,
            sender=message.sender,
            header_from=message.header_from,
            subject=message.subject,
            size=message.size,
            recipients=recipients,
        )

    async def list_deliveries(
        self,
        *,
        status: str | None = None,
        domain: str | None = None,
        message_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[DeliveryRow]:
        """Deliveries matching every given filter, oldest first."""
        statement = select(*DELIVERY_COLUMNS).order_by(deliveries.c.id).limit(limit)
        if offset:
            statement = statement.offset(offset)
        if status is not None:
            statement = statement.where(deliveries.c.status == status)
        if domain is not None:
            statement = statement.where(deliveries.c.domain == domain.lower())
        if message_id is not None:
            statement = statement.where(deliveries.c.message_id == message_id)
        async with self._db.read() as conn:
            return [delivery_row(row) for row in await conn.execute(statement)]

    async def queue_action(
        self,
        action: str,
        *,
        now: float,
        message_ids: Sequence[str] | None = None,
        domain: str | None = None,
        status: str | None = None,
    ) -> int:
        """retry | hold | release | delete on the matching non-final deliveries
        (delete removes the deliveries, and messages left without any). Returns count.

        retry makes queued/deferred deliveries due now; hold moves queued/deferred to
        held; release moves held back to queued (never tried) or deferred, due now;
        delete applies to queued, deferred and held. Each affected delivery gets an event
        (retried, held, released, deleted). Filters combine with AND; no filter means all.
        Raises InputError for an unknown action or status."""
        if action not in QUEUE_ACTIONS:
            raise InputError(f"unknown queue action {action!r} (retry, hold, release, delete)")
        if status is not None and status not in STATUSES:
            raise InputError(f"unknown status {status!r}")
        applicable = {
            "retry": (QUEUED, DEFERRED),
            "hold": (QUEUED, DEFERRED),
            "release": (HELD,),
            "delete": PENDING,
        }[action]
        if status is not None:
            applicable = tuple(s for s in applicable if s == status)
            if not applicable:
                return 0
        base: list[ColumnElement[bool]] = [deliveries.c.status.in_(applicable)]
        if domain is not None:
            base.append(deliveries.c.domain == domain.lower())
        groups: Iterable[Sequence[str] | None] = (
            [None] if message_ids is None else list(_chunks(list(message_ids)))
        )
        returning = (deliveries.c.id, deliveries.c.message_id)
        affected: list[Any] = []
        async with self._db.write() as conn:
            for group in groups:
                where = and_(*base)
                if group is not None:
                    where = and_(where, deliveries.c.message_id.in_(group))
                if action == "retry":
                    statement: Any = update(deliveries).values(next_attempt_at=now, updated_at=now)
                elif action == "hold":
                    statement = update(deliveries).values(status=HELD, updated_at=now)
                elif action == "release":
                    statement = update(deliveries).values(
                        status=case((deliveries.c.attempts > 0, DEFERRED), else_=QUEUED),
                        next_attempt_at=now,
                        updated_at=now,
                    )
                else:
                    statement = delete(deliveries)
                affected.extend(await conn.execute(statement.where(where).returning(*returning)))
            if not affected:
                return 0
            if action == "delete":
                touched = sorted({row.message_id for row in affected})
                for chunk in _chunks(touched):
                    orphan = ~exists().where(deliveries.c.message_id == message_table.c.id)
                    await conn.execute(
                        delete(message_table).where(message_table.c.id.in_(chunk), orphan)
                    )
            await conn.execute(
                insert(events),
                [
                    {
                        "at": now,
                        "kind": QUEUE_ACTIONS[action],
                        "message_id": row.message_id,
                        "delivery_id": row.id,
                        "data": None,
                    }
                    for row in affected
                ],
            )
            if action in ("retry", "release"):
                await self._db.notify(conn)
        if action in ("retry", "release"):
            self._db.work_committed()
        return len(affected)

    async def set_dsn_sent(self, delivery_ids: Sequence[int], dsn_message_id: str) -> None:
        """Remember which DSN message reported these deliveries."""
        async with self._db.write() as conn:
            for chunk in _chunks(list(delivery_ids)):
                await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id.in_(chunk))
                    .values(dsn_message_id=dsn_message_id)
                )

    async def add_event(
        self,
        kind: str,
        *,
        now: float,
        message_id: str | None = None,
        delivery_id: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                insert(events).values(
                    at=now, kind=kind, message_id=message_id, delivery_id=delivery_id, data=data
                )
            )

    async def events_for(self, message_id: str) -> list[dict[str, Any]]:
        """The message's events in the order they happened: dicts with id, at, kind,
        message_id, delivery_id and data."""
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(events).where(events.c.message_id == message_id).order_by(events.c.id)
            )
            return [dict(row._mapping) for row in rows]

    async def status_counts(self) -> dict[str, int]:
        """Deliveries per status; every status is present, 0 when none."""
        counts = dict.fromkeys(STATUSES, 0)
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
            )
            for status, count in rows:
                counts[status] = int(count)
        return counts

DELIVERY_COLUMNS = (
    deliveries.c.id,
    deliveries.c.message_id,
    deliveries.c.recipient,
    deliveries.c.domain,
    deliveries.c.status,
    deliveries.c.attempts,
    deliveries.c.next_attempt_at,
    deliveries.c.updated_at,
    deliveries.c.reply_code,
    deliveries.c.reply_enhanced,
    deliveries.c.reply_text,
    deliveries.c.mx_host,
    deliveries.c.mx_ip,
    deliveries.c.tls,
)


def delivery_row(row: Any) -> DeliveryRow:
    reply = None
    if row.reply_code is not None:
        reply = {"code": row.reply_code, "enhanced": row.reply_enhanced, "text": row.reply_text}
    mx = None if row.mx_host is None else {"host": row.mx_host, "ip": row.mx_ip}
    return DeliveryRow(
        id=row.id,
        message_id=row.message_id,
        recipient=row.recipient,
        domain=row.domain,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        updated_at=row.updated_at,
        reply=reply,
        mx=mx,
        tls=row.tls,
    )


_APPLY_RESULT_SQLITE = (
    "UPDATE deliveries SET status = ?, attempts = ?, next_attempt_at = ?, updated_at = ?,"
    " lease_owner = NULL, lease_until = NULL, reply_code = ?, reply_enhanced = ?,"
    " reply_text = ?, mx_host = ?, mx_ip = ?, tls = ? WHERE id = ?"
)
_INSERT_EVENT_SQLITE = (
    "INSERT INTO events (at, kind, message_id, delivery_id, data) VALUES (?, ?, ?, ?, ?)"
)


_INSERT_MESSAGE_SQLITE = (
    "INSERT INTO messages (id, created_at, source, sender, header_from, subject, size,"
    " content, eight_bit, smtputf8, requiretls, envid, ret)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_DELIVERY_SQLITE = (
    "INSERT INTO deliveries (message_id, recipient, domain, status, attempts, created_at,"
    " updated_at, next_attempt_at, expires_at, notify, orcpt)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_MESSAGE_INSERT_COLUMNS = (
    "id", "created_at", "source", "sender", "header_from", "subject", "size", "content",
    "eight_bit", "smtputf8", "requiretls", "envid", "ret",
)  # fmt: skip
_DELIVERY_INSERT_COLUMNS = (
    "message_id", "recipient", "domain", "status", "attempts", "created_at", "updated_at",
    "next_attempt_at", "expires_at", "notify", "orcpt",
)  # fmt: skip

_Rows = list[tuple[Any, ...]]


def _injection_tuples(
    message_rows: list[dict[str, Any]],
    delivery_rows: list[dict[str, Any]],
    event_rows: list[dict[str, Any]],
) -> tuple[_Rows, _Rows, _Rows]:
    """injection_rows' dicts as the driver's parameter tuples (JSON as text, as
    SQLAlchemy's JSON type stores it on SQLite)."""
    return (
        [tuple(row[c] for c in _MESSAGE_INSERT_COLUMNS) for row in message_rows],
        [tuple(row[c] for c in _DELIVERY_INSERT_COLUMNS) for row in delivery_rows],
        [
            (e["at"], e["kind"], e["message_id"], e["delivery_id"], json.dumps(e["data"]))
            for e in event_rows
        ],
    )


def _insert_injection_sqlite(
    db_: sqlite3.Connection, messages: _Rows, deliveries_: _Rows, events_: _Rows
) -> None:
    db_.executemany(_INSERT_MESSAGE_SQLITE, messages)
    db_.executemany(_INSERT_DELIVERY_SQLITE, deliveries_)
    db_.executemany(_INSERT_EVENT_SQLITE, events_)


def _current_rows(owner: str) -> Any:
    """record_results' select on PostgreSQL (_CURRENT_SQLITE is the same on SQLite)."""
    return (
        select(
            deliveries.c.id,
            deliveries.c.message_id,
            deliveries.c.recipient,
            deliveries.c.status,
            deliveries.c.attempts,
            deliveries.c.next_attempt_at,
            deliveries.c.expires_at,
            deliveries.c.notify,
            deliveries.c.orcpt,
            message_table.c.sender,
            message_table.c.envid,
            message_table.c.ret,
        )
        .join(message_table, message_table.c.id == deliveries.c.message_id)
        .where(deliveries.c.lease_owner == owner)
    )


def _apply_all(
    rows: Iterable[Any],
    by_id: dict[int, RecipientResult],
    now: float,
    schedule: RetryPolicy,
    bounces: list[Bounce],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """record_results' changes and events for the current rows; bounces appended."""
    updates: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    # Recipients sent over one connection share a TLS receipt: convert it once.
    tls_dicts: dict[TLSReceipt, dict[str, Any]] = {}
    for row in rows:
        change, event, bounce = _apply(row, by_id[row.id], now, schedule, tls_dicts)
        updates.append(change)
        event_rows.append(event)
        if bounce is not None:
            bounces.append(bounce)
    return updates, event_rows


def _apply_results_sqlite(
    db_: sqlite3.Connection, updates: list[dict[str, Any]], event_rows: list[dict[str, Any]]
) -> None:
    """record_results' writes straight to the driver: SQLAlchemy's per-row parameter
    processing was half the CPU time of a 500-result call. Values are those the Core
    statement would bind (JSON as text, as SQLAlchemy's JSON type stores it on SQLite)."""
    tls_json: dict[int, str] = {}  # one JSON text per shared receipt dict

    def dump_tls(value: dict[str, Any] | None) -> str | None:
        if value is None:
            return None
        text_ = tls_json.get(id(value))
        if text_ is None:
            text_ = tls_json[id(value)] = json.dumps(value)
        return text_

    db_.executemany(
        _APPLY_RESULT_SQLITE,
        [
            (
                u["b_status"],
                u["b_attempts"],
                u["b_next"],
                u["b_now"],
                u["b_code"],
                u["b_enhanced"],
                u["b_text"],
                u["b_mx_host"],
                u["b_mx_ip"],
                dump_tls(u["b_tls"]),
                u["b_id"],
            )
            for u in updates
        ],
    )
    db_.executemany(
        _INSERT_EVENT_SQLITE,
        [
            (e["at"], e["kind"], e["message_id"], e["delivery_id"], json.dumps(e["data"]))
            for e in event_rows
        ],
    )


def _group_claimed(claimed: Sequence[Any], loaded: dict[str, Any]) -> list[ClaimedBatch]:
    """Claimed delivery rows → one batch per domain, one message per message id."""
    by_domain: dict[str, dict[str, list[Recipient]]] = {}
    for row in sorted(claimed, key=lambda r: (r.domain, r.message_id, r.id)):
        recipient = Recipient(row.id, row.recipient, row.notify, row.orcpt)
        by_domain.setdefault(row.domain, {}).setdefault(row.message_id, []).append(recipient)
    batches = []
    for domain, per_message in by_domain.items():
        outbound = []
        for message_id, recipients in per_message.items():
            m = loaded.get(message_id)
            if m is None:  # deleted since it was leased: nothing left to deliver
                continue
            outbound.append(
                OutboundMessage(
                    message_id=message_id,
                    sender=m.sender,
                    recipients=tuple(recipients),
                    content=m.content,
                    eight_bit=bool(m.eight_bit),
                    smtputf8=bool(m.smtputf8),
                    requiretls=bool(m.requiretls),
                    envid=m.envid,
                    ret=m.ret,
                )
            )
        if outbound:
            batches.append(ClaimedBatch(domain=domain, messages=tuple(outbound)))
    return batches


def _apply(
    row: Any,
    result: RecipientResult,
    now: float,
    schedule: RetryPolicy,
    tls_dicts: dict[TLSReceipt, dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any], Bounce | None]:
    """One result against its delivery's current row → (update, event, bounce or None);
    the decision is ``kakitome.queue.transitions.after_attempt``'s."""
    reply = result.reply
    step = after_attempt(
        outcome=result.outcome,
        reply=reply,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        expires_at=row.expires_at,
        now=now,
        schedule=schedule,
    )
    status, attempts, next_at = step.status, step.attempts, step.next_attempt_at
    expired = step.expired
    code, enhanced, reply_text = step.reply_code, step.reply_enhanced, step.reply_text
    mx = None if result.mx is None else {"host": result.mx.host, "ip": result.mx.ip}
    tls = None
    if result.tls is not None:
        tls = tls_dicts.get(result.tls)
        if tls is None:
            tls = tls_dicts[result.tls] = result.tls.to_dict()
    change = {
        "b_id": row.id,
        "b_status": status,
        "b_attempts": attempts,
        "b_next": next_at,
        "b_now": now,
        "b_code": code,
        "b_enhanced": enhanced,
        "b_text": reply_text,
        "b_mx_host": None if mx is None else mx["host"],
        "b_mx_ip": None if mx is None else mx["ip"],
        "b_tls": tls,
    }
    data: dict[str, Any] = {
        "attempt": attempts,
        "status": status,
        "reply": {"code": code, "enhanced": enhanced, "text": reply_text},
        "mx": mx,
        "tls": tls,
    }
    if step.shows_next_attempt:
        data["next_attempt_at"] = next_at
    if expired:
        data["expired"] = True
        data["last_reply"] = reply.to_dict()
    event = {
        "at": now,
        "kind": step.event_kind,
        "message_id": row.message_id,
        "delivery_id": row.id,
        "data": data,
    }
    bounce = None
    if step.bounced:
        bounce = Bounce(
            delivery_id=row.id,
            message_id=row.message_id,
            recipient=row.recipient,
            sender=row.sender,
            reply_code=code,
            reply_enhanced=enhanced,
            reply_text=reply_text,
            mx_host=None if mx is None else mx["host"],
            notify=row.notify,
            orcpt=row.orcpt,
            envid=row.envid,
            ret=row.ret,
        )
    return change, event, bounce


InjectionRows = tuple[
    list[str], list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]
]


def injection_rows(
    messages: Sequence[NewMessage], *, now: float, lifetime: float
) -> InjectionRows:
    """The ids and the messages, deliveries and events rows that injecting ``messages``
    writes (shared by ``QueueStore.inject_many`` and stores that inject inside their own
    transaction). Raises InputError for a message without recipients."""
    message_rows: list[dict[str, Any]] = []
    delivery_rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    ids: list[str] = []
    now_ms = int(now * 1000)
    expires = now + lifetime
    for message in messages:
        if not message.recipients:
            raise InputError("a message needs at least one recipient")
        message_id = new_message_id(now_ms)
        ids.append(message_id)
        message_rows.append(
            {
                "id": message_id,
                "created_at": now,
                "source": message.source,
                "sender": message.sender,
                "header_from": message.header_from,
                "subject": message.subject,
                "size": len(message.content),
                "content": message.content,
                "eight_bit": message.eight_bit,
                "smtputf8": message.smtputf8,
                "requiretls": message.requiretls,
                "envid": message.envid,
                "ret": message.ret,
            }
        )
        for rcpt in message.recipients:
            delivery_rows.append(
                {
                    "message_id": message_id,
                    "recipient": rcpt.address,
                    "domain": rcpt.domain.lower(),
                    "status": QUEUED,
                    "attempts": 0,
                    "created_at": now,
                    "updated_at": now,
                    "next_attempt_at": now,
                    "expires_at": expires,
                    "notify": rcpt.notify,
                    "orcpt": rcpt.orcpt,
                }
            )
        event_rows.append(
            {
                "at": now,
                "kind": QUEUED,
                "message_id": message_id,
                "delivery_id": None,
                "data": {"source": message.source, "recipients": len(message.recipients)},
            }
        )
    return ids, message_rows, delivery_rows, event_rows


# -- queue rows written inside another part's transaction ---------------------------------

_NOTIFY = text(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')")


async def insert_messages(
    conn: AsyncConnection,
    messages: Sequence[NewMessage],
    *,
    now: float,
    lifetime: float,
    message_chunk: int = 500,
    row_chunk: int = 2_000,
) -> list[str]:
    """Queue ``messages`` inside the caller's transaction on ``conn``: the rows
    ``QueueStore.inject_many`` writes (``injection_rows``), inserted in chunks of
    ``message_chunk`` messages and ``row_chunk`` deliveries or events. Returns the message
    ids in order. On PostgreSQL the workers are NOTIFYed at the commit; on SQLite the
    caller wakes this process's worker after its commit (``Database.wake``).

    Why: a campaign batch and its checkpoint must be one fact (``campaigns/store.py``),
    so the batch cannot go through ``inject_many``'s own transaction. Raises InputError
    for a message without recipients."""
    ids, message_rows, delivery_rows, event_rows = injection_rows(
        messages, now=now, lifetime=lifetime
    )
    if message_rows:
        for chunk in _chunks(message_rows, message_chunk):
            await conn.execute(insert(message_table), chunk)
        for chunk in _chunks(delivery_rows, row_chunk):
            await conn.execute(insert(deliveries), chunk)
        for chunk in _chunks(event_rows, row_chunk):
            await conn.execute(insert(events), chunk)
        if conn.dialect.name == "postgresql":
            await conn.execute(_NOTIFY)
    return ids


async def insert_event(
    conn: AsyncConnection,
    kind: str,
    *,
    now: float,
    message_id: str | None = None,
    delivery_id: int | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Add one event inside the caller's transaction (``QueueStore.add_event`` in its
    own): a suppression, a DSN or complaint that came back, a TLS event (no message)."""
    await conn.execute(
        insert(events).values(
            at=now, kind=kind, message_id=message_id, delivery_id=delivery_id, data=data
        )
    )


async def mark_bounced(
    conn: AsyncConnection,
    delivery_id: int,
    *,
    now: float,
    code: int,
    enhanced: str | None,
    text: str,
    statuses: Sequence[str],
) -> None:
    """Make one delivery bounced with a remote diagnostic (a DSN that came back), inside
    the caller's transaction, when its status is one of ``statuses``. The lease and the
    attempt count are left alone."""
    await conn.execute(
        update(deliveries)
        .where(deliveries.c.id == delivery_id, deliveries.c.status.in_(list(statuses)))
        .values(
            status="bounced",
            updated_at=now,
            reply_code=code,
            reply_enhanced=enhanced,
            reply_text=text,
        )
    )
