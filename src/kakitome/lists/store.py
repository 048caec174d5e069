"""Storage of lists, subscribers, memberships, history and segments (tables in
``kakitome.store.schema_lists``). Only ``kakitome.lists`` calls it.

Each public method is one transaction on the engine, SQLite and PostgreSQL alike; writes
on SQLite take the write lock at BEGIN (``sqlite_begin="IMMEDIATE"``, see
``kakitome.store.db``) and queue on an in-process lock first. Database failures become
``StorageError``.

Imports go in batches (``import_batch``, at most ``IMPORT_BATCH_MAX`` rows, one
transaction each), set-based so that no SQL is built per row: the batch goes into a
temporary table (SQLite: the driver's ``executemany`` with tuples; PostgreSQL: ``COPY``
through asyncpg), then one UPDATE of the existing subscribers whose name or attributes
change, one ``INSERT .. SELECT .. ON CONFLICT DO NOTHING`` of the new subscribers and one
of the memberships, so an existing membership (an unsubscribed person above all) keeps
its status and opt-in record. ``MAX_BATCH`` bounds the other batched reads (audience).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _quote_ascii
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kakitome.errors import InputError, StorageError
from kakitome.lists.model import (
    BOUNCED,
    COMPLAINED,
    SUBSCRIBED,
    UNCONFIRMED,
    AudienceMember,
    MailingList,
    Membership,
    Segment,
    Subscriber,
)
from kakitome.store.schema_lists import (
    list_members,
    mailing_lists,
    segments,
    subscriber_events,
    subscribers,
)
from kakitome.store.transactions import reading, writing

__all__ = ["IMPORT_BATCH_MAX", "MAX_BATCH", "ImportCounts", "ImportRow", "ListsStore"]

MAX_BATCH = 5_000
# Rows per import transaction at most (no bound-parameter limit: a temporary table).
IMPORT_BATCH_MAX = 100_000


@dataclass(slots=True)  # not frozen: one per imported row, frozen __init__ costs twice
class ImportRow:
    """One valid, de-duplicated row of an import."""

    address: str
    key: str
    name: str
    attributes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ImportCounts:
    inserted: int  # new subscribers
    updated: int  # existing subscribers whose name/attributes were updated
    joined: int  # new memberships


class ListsStore:
    """Lists and subscribers on the engine of a ``Database`` (``store.engine``)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        self._lock = asyncio.Lock()

    @property
    def dialect(self) -> str:
        return self._dialect

    def _write(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        # IntegrityError passes: the callers turn it into "already exists" answers.
        return writing(self._engine, self._lock, keep=(IntegrityError,))

    def _read(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return reading(self._engine)

    # -- lists ---------------------------------------------------------------------------

    async def create_list(self, values: Mapping[str, Any]) -> MailingList:
        try:
            async with self._write() as conn:
                result = await conn.execute(
                    insert(mailing_lists).values(**values).returning(mailing_lists.c.id)
                )
                list_id = int(result.scalar_one())
        except IntegrityError:
            raise InputError(f"a list named {values['name']!r} exists already") from None
        found = await self.get_list(list_id)
        assert found is not None
        return found

    async def update_list(self, list_id: int, values: Mapping[str, Any]) -> MailingList | None:
        """Set the given columns of a list; the list as now stored, None when it is gone."""
        async with self._write() as conn:
            await conn.execute(
                update(mailing_lists).where(mailing_lists.c.id == list_id).values(**values)
            )
            row = (
                await conn.execute(select(mailing_lists).where(mailing_lists.c.id == list_id))
            ).first()
        return _list(row) if row is not None else None

    async def get_list(self, ref: int | str) -> MailingList | None:
        column = mailing_lists.c.id if isinstance(ref, int) else mailing_lists.c.name
        async with self._read() as conn:
            row = (await conn.execute(select(mailing_lists).where(column == ref))).first()
        return _list(row) if row is not None else None

    async def find_list(self, name: str, mail_domain: str) -> MailingList | None:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(mailing_lists).where(
                        mailing_lists.c.name == name, mailing_lists.c.mail_domain == mail_domain
                    )
                )
            ).first()
        return _list(row) if row is not None else None

    async def all_lists(self) -> list[MailingList]:
        async with self._read() as conn:
            rows = (await conn.execute(select(mailing_lists).order_by(mailing_lists.c.name))).all()
        return [_list(r) for r in rows]

    async def list_ids(self, names: Iterable[str]) -> dict[str, int]:
        wanted = list(names)
        if not wanted:
            return {}
        async with self._read() as conn:
            rows = await conn.execute(
                select(mailing_lists.c.name, mailing_lists.c.id).where(
                    mailing_lists.c.name.in_(wanted)
                )
            )
            return {r.name: int(r.id) for r in rows}

    async def delete_list(self, list_id: int) -> bool:
        async with self._write() as conn:
            await conn.execute(delete(list_members).where(list_members.c.list_id == list_id))
            await conn.execute(delete(segments).where(segments.c.list_id == list_id))
            result = await conn.execute(delete(mailing_lists).where(mailing_lists.c.id == list_id))
            return bool(result.rowcount)

    async def count_members(self, list_id: int) -> dict[str, int]:
        async with self._read() as conn:
            rows = await conn.execute(
                select(list_members.c.status, func.count())
                .where(list_members.c.list_id == list_id)
                .group_by(list_members.c.status)
            )
            return {str(status): int(count) for status, count in rows}

    # -- subscribers and members ---------------------------------------------------------

    async def get_subscriber(self, ref: int | str) -> Subscriber | None:
        column = subscribers.c.id if isinstance(ref, int) else subscribers.c.address_key
        value = ref if isinstance(ref, int) else ref.lower()
        async with self._read() as conn:
            row = (await conn.execute(select(subscribers).where(column == value))).first()
        return _subscriber(row) if row is not None else None

    async def add_member(
        self,
        list_id: int,
        *,
        address: str,
        name: str | None,
        attributes: Mapping[str, Any] | None,
        status: str,
        optin: Mapping[str, Any],
        now: float,
        reopen: Sequence[str],
    ) -> tuple[Membership, str | None]:
        """Upsert the subscriber and the membership; the membership and its previous
        status (None when new). A membership in a ``reopen`` status is restarted with the
        new status and opt-in record; in another status it is left alone."""
        key = address.lower()
        async with self._write() as conn:
            row = (
                await conn.execute(select(subscribers).where(subscribers.c.address_key == key))
            ).first()
            if row is None:
                result = await conn.execute(
                    insert(subscribers)
                    .values(
                        address=address,
                        address_key=key,
                        name=name or "",
                        attributes=dict(attributes or {}),
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(subscribers.c.id)
                )
                subscriber_id = int(result.scalar_one())
            else:
                subscriber_id = int(row.id)
                changes: dict[str, Any] = {}
                if name:
                    changes["name"] = name
                if attributes:
                    changes["attributes"] = {**(row.attributes or {}), **attributes}
                if changes:
                    await conn.execute(
                        update(subscribers)
                        .where(subscribers.c.id == subscriber_id)
                        .values(updated_at=now, **changes)
                    )
            member = (
                await conn.execute(
                    select(list_members.c.status).where(
                        list_members.c.list_id == list_id,
                        list_members.c.subscriber_id == subscriber_id,
                    )
                )
            ).first()
            previous = None if member is None else str(member.status)
            confirmed_at = now if status == SUBSCRIBED else None
            record = {
                "status": status,
                "updated_at": now,
                "confirmed_at": confirmed_at,
                "optin_method": optin["method"],
                "optin_at": now,
                "optin_source": optin.get("source", ""),
                "optin_ip": optin.get("ip"),
                "optin_detail": optin.get("detail", ""),
            }
            if previous is None:
                await conn.execute(
                    insert(list_members).values(
                        list_id=list_id, subscriber_id=subscriber_id, created_at=now, **record
                    )
                )
            elif previous in reopen:
                await conn.execute(
                    update(list_members)
                    .where(
                        list_members.c.list_id == list_id,
                        list_members.c.subscriber_id == subscriber_id,
                    )
                    .values(**record)
                )
            if previous is None or previous in reopen:
                await _event(conn, subscriber_id, list_id, status, now, optin["method"])
            loaded = await _load_member(conn, list_id, subscriber_id)
        assert loaded is not None
        return loaded, previous

    async def get_member(self, list_id: int, subscriber_id: int) -> Membership | None:
        async with self._read() as conn:
            return await _load_member(conn, list_id, subscriber_id)

    async def members(
        self, list_id: int, *, status: str | None, after: int, limit: int, search: str = ""
    ) -> list[Membership]:
        """Members in subscriber-id order; ``search``: only those whose address or name
        contains it (case-insensitive, ``%`` and ``_`` taken literally)."""
        query = (
            select(list_members, subscribers)
            .join(subscribers, subscribers.c.id == list_members.c.subscriber_id)
            .where(list_members.c.list_id == list_id, list_members.c.subscriber_id > after)
            .order_by(list_members.c.subscriber_id)
            .limit(limit)
        )
        if status is not None:
            query = query.where(list_members.c.status == status)
        if search:
            like = (
                "%"
                + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                + "%"
            )
            query = query.where(
                or_(
                    subscribers.c.address_key.like(like, escape="\\"),
                    func.lower(subscribers.c.name).like(like, escape="\\"),
                )
            )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [_member(r) for r in rows]

    async def update_subscriber(
        self, subscriber_id: int, *, name: str, attributes: Mapping[str, Any], now: float
    ) -> bool:
        """Replace a subscriber's name and attributes; False when there is no such one."""
        async with self._write() as conn:
            result = await conn.execute(
                update(subscribers)
                .where(subscribers.c.id == subscriber_id)
                .values(name=name, attributes=dict(attributes), updated_at=now)
            )
            return bool(result.rowcount)

    async def delete_member(self, list_id: int, subscriber_id: int) -> bool:
        async with self._write() as conn:
            result = await conn.execute(
                delete(list_members).where(
                    list_members.c.list_id == list_id,
                    list_members.c.subscriber_id == subscriber_id,
                )
            )
            return bool(result.rowcount)

    async def delete_subscriber(self, subscriber_id: int) -> bool:
        async with self._write() as conn:
            for table in (list_members, subscriber_events):
                await conn.execute(delete(table).where(table.c.subscriber_id == subscriber_id))
            result = await conn.execute(
                delete(subscribers).where(subscribers.c.id == subscriber_id)
            )
            return bool(result.rowcount)

    async def set_status(
        self,
        list_id: int,
        subscriber_id: int,
        status: str,
        *,
        now: float,
        kind: str,
        detail: str = "",
        only_from: Sequence[str] | None = None,
    ) -> bool | None:
        """Change one membership's status; True when changed, False when it already had
        it (or was not in ``only_from``), None when there is no such membership."""
        async with self._write() as conn:
            current = (
                await conn.execute(
                    select(list_members.c.status).where(
                        list_members.c.list_id == list_id,
                        list_members.c.subscriber_id == subscriber_id,
                    )
                )
            ).first()
            if current is None:
                return None
            if current.status == status or (
                only_from is not None and current.status not in only_from
            ):
                return False
            values: dict[str, Any] = {"status": status, "updated_at": now}
            if status == SUBSCRIBED:
                values["confirmed_at"] = now
            await conn.execute(
                update(list_members)
                .where(
                    list_members.c.list_id == list_id,
                    list_members.c.subscriber_id == subscriber_id,
                )
                .values(**values)
            )
            await _event(conn, subscriber_id, list_id, kind, now, detail)
            return True

    # -- audience ------------------------------------------------------------------------

    def _audience_query(self, list_id: int, condition: ColumnElement[bool] | None) -> Select[Any]:
        query = (
            select(
                subscribers.c.id,
                subscribers.c.address,
                subscribers.c.name,
                subscribers.c.attributes,
                list_members.c.confirmed_at,
            )
            .select_from(
                list_members.join(subscribers, subscribers.c.id == list_members.c.subscriber_id)
            )
            .where(
                list_members.c.list_id == list_id,
                list_members.c.status == SUBSCRIBED,
                subscribers.c.bounced_at.is_(None),
            )
        )
        if condition is not None:
            query = query.where(condition)
        return query

    async def audience_batch(
        self,
        list_id: int,
        condition: ColumnElement[bool] | None,
        *,
        after: int,
        limit: int,
    ) -> list[AudienceMember]:
        query = (
            self._audience_query(list_id, condition)
            .where(list_members.c.subscriber_id > after)
            .order_by(list_members.c.subscriber_id)
            .limit(limit)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            AudienceMember(
                subscriber_id=int(r.id),
                list_id=list_id,
                address=r.address,
                name=r.name,
                attributes=dict(r.attributes or {}),
                confirmed_at=r.confirmed_at,
            )
            for r in rows
        ]

    async def count_audience(self, list_id: int, condition: ColumnElement[bool] | None) -> int:
        query = select(func.count()).select_from(
            self._audience_query(list_id, condition).subquery()
        )
        async with self._read() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def export_page(
        self,
        list_id: int,
        *,
        status: str | None,
        condition: ColumnElement[bool] | None,
        after: int,
        limit: int,
    ) -> list[Membership]:
        query = (
            select(list_members, subscribers)
            .join(subscribers, subscribers.c.id == list_members.c.subscriber_id)
            .where(list_members.c.list_id == list_id, list_members.c.subscriber_id > after)
            .order_by(list_members.c.subscriber_id)
            .limit(limit)
        )
        if status is not None:
            query = query.where(list_members.c.status == status)
        if condition is not None:
            query = query.where(condition)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [_member(r) for r in rows]

    # -- import --------------------------------------------------------------------------

    async def import_batch(
        self,
        list_id: int,
        rows: Sequence[ImportRow],
        *,
        status: str,
        optin: Mapping[str, Any],
        now: float,
        update_existing: bool,
        insert_after: asyncio.Event | None = None,
        inserted: asyncio.Event | None = None,
    ) -> ImportCounts:
        """Upsert one batch (keys unique within it) in one transaction.

        New subscribers get ids in the order of ``rows``. Batches written at once on
        several connections keep that order between them too: a batch inserts its new
        subscribers (the statement that draws ids from the sequence) only once
        ``insert_after`` is set, and sets ``inserted`` when its ids are drawn (or when it
        fails before), so the caller chains batches in file order.

        Set-based on both engines (see the module docstring): the rows go into a
        temporary table (SQLite: the driver's ``executemany`` with plain tuples;
        PostgreSQL: ``COPY`` with asyncpg's ``copy_records_to_table``), then one UPDATE
        of the existing subscribers whose name or attributes change (attributes merged,
        the file's values winning: ``json_patch`` / ``jsonb ||``), one
        ``INSERT .. ON CONFLICT DO NOTHING`` of the new subscribers and one of the
        memberships. No SQLAlchemy statement is built per row."""
        if len(rows) > IMPORT_BATCH_MAX:
            raise ValueError(f"import batches hold at most {IMPORT_BATCH_MAX} rows")
        if not rows:
            return ImportCounts(0, 0, 0)
        records = [
            (n, r.key, r.address, r.name, _attributes_json(r.attributes))
            for n, r in enumerate(rows)
        ]
        member = (
            list_id,
            status,
            now,
            now,
            now if status == SUBSCRIBED else None,
            optin["method"],
            now,
            optin.get("source", "") or "",
            optin.get("ip"),
            optin.get("detail", "") or "",
        )
        try:
            async with self._write() as conn:
                if self._dialect == "postgresql":
                    return await _import_postgresql(
                        conn, records, member, now, update_existing, insert_after, inserted
                    )
                if insert_after is not None:
                    await insert_after.wait()
                return await _import_sqlite(conn, records, member, now, update_existing)
        finally:
            if inserted is not None:
                inserted.set()

    # -- bounces and complaints ----------------------------------------------------------

    async def record_bounce(
        self,
        key: str,
        *,
        permanent: bool,
        now: float,
        window_start: float,
        permanent_threshold: int,
        temporary_threshold: int,
        detail: str,
        list_id: int | None,
    ) -> tuple[int, int, bool, int] | None:
        """(permanent, temporary, cleaned, lists changed), or None for unknown addresses.
        Permanent failures count over the whole kept history, temporary ones since
        ``window_start``."""
        async with self._write() as conn:
            row = (
                await conn.execute(
                    select(subscribers.c.id, subscribers.c.bounced_at).where(
                        subscribers.c.address_key == key
                    )
                )
            ).first()
            if row is None:
                return None
            sid = int(row.id)
            kind = "bounce_permanent" if permanent else "bounce_temporary"
            await _event(conn, sid, list_id, kind, now, detail)
            counts = await conn.execute(
                select(subscriber_events.c.kind, func.count())
                .where(
                    subscriber_events.c.subscriber_id == sid,
                    subscriber_events.c.kind.in_(("bounce_permanent", "bounce_temporary")),
                    (subscriber_events.c.kind == "bounce_permanent")
                    | (subscriber_events.c.at >= window_start),
                )
                .group_by(subscriber_events.c.kind)
            )
            by_kind = {str(k): int(n) for k, n in counts}
            perm, temp = by_kind.get("bounce_permanent", 0), by_kind.get("bounce_temporary", 0)
            if row.bounced_at is not None:
                return perm, temp, True, 0
            if perm < permanent_threshold and temp < temporary_threshold:
                return perm, temp, False, 0
            changed = await _mark_all(conn, sid, BOUNCED, now, f"bounced: {detail}".strip())
            await conn.execute(
                update(subscribers).where(subscribers.c.id == sid).values(bounced_at=now)
            )
            return perm, temp, True, changed

    async def clear_bounced(self, subscriber_id: int) -> None:
        """Forget the bounced mark (the person proved the address works by confirming)."""
        async with self._write() as conn:
            await conn.execute(
                update(subscribers).where(subscribers.c.id == subscriber_id).values(bounced_at=None)
            )

    async def record_complaint(self, key: str, *, now: float, detail: str) -> int | None:
        async with self._write() as conn:
            row = (
                await conn.execute(select(subscribers.c.id).where(subscribers.c.address_key == key))
            ).first()
            if row is None:
                return None
            return await _mark_all(conn, int(row.id), COMPLAINED, now, detail)

    async def purge_events(self, before: float) -> int:
        async with self._write() as conn:
            result = await conn.execute(
                delete(subscriber_events).where(subscriber_events.c.at < before)
            )
            return int(result.rowcount or 0)

    async def events(self, subscriber_id: int, limit: int) -> list[dict[str, Any]]:
        async with self._read() as conn:
            rows = await conn.execute(
                select(subscriber_events)
                .where(subscriber_events.c.subscriber_id == subscriber_id)
                .order_by(subscriber_events.c.at.desc(), subscriber_events.c.id.desc())
                .limit(limit)
            )
            return [
                {"kind": r.kind, "list_id": r.list_id, "at": r.at, "detail": r.detail} for r in rows
            ]

    # -- segments ------------------------------------------------------------------------

    async def save_segment(
        self, name: str, expression: str, list_id: int | None, now: float
    ) -> Segment:
        try:
            async with self._write() as conn:
                result = await conn.execute(
                    insert(segments)
                    .values(name=name, expression=expression, list_id=list_id, created_at=now)
                    .returning(segments.c.id)
                )
                segment_id = int(result.scalar_one())
        except IntegrityError:
            raise InputError(f"a segment named {name!r} exists already") from None
        return Segment(segment_id, name, expression, list_id, now)

    async def update_segment(
        self, segment_id: int, name: str, expression: str, list_id: int | None
    ) -> Segment | None:
        """Change a segment in place (same id); None when there is no such segment."""
        try:
            async with self._write() as conn:
                await conn.execute(
                    update(segments)
                    .where(segments.c.id == segment_id)
                    .values(name=name, expression=expression, list_id=list_id)
                )
                row = (
                    await conn.execute(select(segments).where(segments.c.id == segment_id))
                ).first()
        except IntegrityError:
            raise InputError(f"a segment named {name!r} exists already") from None
        return _segment(row) if row is not None else None

    async def get_segment(self, ref: int | str) -> Segment | None:
        column = segments.c.id if isinstance(ref, int) else segments.c.name
        async with self._read() as conn:
            row = (await conn.execute(select(segments).where(column == ref))).first()
        return _segment(row) if row is not None else None

    async def all_segments(self) -> list[Segment]:
        async with self._read() as conn:
            rows = (await conn.execute(select(segments).order_by(segments.c.name))).all()
        return [_segment(r) for r in rows]

    async def delete_segment(self, segment_id: int) -> bool:
        async with self._write() as conn:
            result = await conn.execute(delete(segments).where(segments.c.id == segment_id))
            return bool(result.rowcount)


# -- import, set-based ----------------------------------------------------------------------

_SQLITE_IMPORT_CACHE_KIB = -65_536  # 64 MiB (negative: KiB, as PRAGMA cache_size takes it)
_SQLITE_IMPORT_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS kakitome_import ("
    "ord INTEGER PRIMARY KEY, key TEXT NOT NULL, address TEXT NOT NULL, "
    "name TEXT NOT NULL, attributes TEXT NOT NULL)"
)
# The merged name and attributes of an existing subscriber (the file's values win; an
# empty name keeps the old one). json_patch == {**old, **new} for the string values a
# CSV gives; json() puts the old text in the same minified form for the comparison.
_SQLITE_UPDATE = """
UPDATE subscribers SET
  name = CASE WHEN i.name <> '' THEN i.name ELSE subscribers.name END,
  attributes = json_patch(COALESCE(subscribers.attributes, '{}'), i.attributes),
  updated_at = ?
FROM temp.kakitome_import AS i
WHERE subscribers.address_key = i.key
  AND (i.name <> '' OR i.attributes <> '{}')
  AND (
    (i.name <> '' AND i.name IS NOT subscribers.name)
    OR json(COALESCE(subscribers.attributes, '{}'))
       IS NOT json_patch(COALESCE(subscribers.attributes, '{}'), i.attributes)
  )
"""
_SQLITE_INSERT_SUBSCRIBERS = """
INSERT INTO subscribers (address, address_key, name, attributes, created_at, updated_at)
SELECT address, key, name, attributes, ?, ? FROM temp.kakitome_import WHERE true ORDER BY ord
ON CONFLICT (address_key) DO NOTHING
"""
_SQLITE_INSERT_MEMBERS = """
INSERT INTO list_members (list_id, subscriber_id, status, created_at, updated_at,
  confirmed_at, optin_method, optin_at, optin_source, optin_ip, optin_detail)
SELECT ?, s.id, ?, ?, ?, ?, ?, ?, ?, ?, ?
FROM temp.kakitome_import AS i JOIN subscribers AS s ON s.address_key = i.key
WHERE true ORDER BY i.ord
ON CONFLICT (list_id, subscriber_id) DO NOTHING
"""


def _attributes_json(attributes: Mapping[str, Any]) -> str:
    """JSON text of an import row's attributes, with ASCII escapes as SQLAlchemy's JSON
    type writes them; string values (all a CSV gives) without ``json.dumps``' overhead."""
    if not attributes:
        return "{}"
    quote = _quote_ascii
    try:
        return "{" + ",".join(f"{quote(k)}:{quote(v)}" for k, v in attributes.items()) + "}"
    except TypeError:  # a value that is not a string
        return json.dumps(dict(attributes))


async def _import_sqlite(
    conn: AsyncConnection,
    records: list[tuple[int, str, str, str, str]],
    member: tuple[Any, ...],
    now: float,
    update_existing: bool,
) -> ImportCounts:
    # A page cache big enough for the indexes a large import walks (SQLite's default is
    # 2 MiB); the connection's own size is restored afterwards.
    cache = (await conn.exec_driver_sql("PRAGMA cache_size")).scalar()
    await conn.exec_driver_sql(f"PRAGMA cache_size = {_SQLITE_IMPORT_CACHE_KIB}")
    try:
        return await _import_sqlite_batch(conn, records, member, now, update_existing)
    finally:
        await conn.exec_driver_sql(f"PRAGMA cache_size = {int(cache or -2000)}")


async def _import_sqlite_batch(
    conn: AsyncConnection,
    records: list[tuple[int, str, str, str, str]],
    member: tuple[Any, ...],
    now: float,
    update_existing: bool,
) -> ImportCounts:
    await conn.exec_driver_sql(_SQLITE_IMPORT_TABLE)
    await conn.exec_driver_sql("DELETE FROM temp.kakitome_import")
    await conn.exec_driver_sql("INSERT INTO temp.kakitome_import VALUES (?, ?, ?, ?, ?)", records)
    updated = 0
    if update_existing:
        result = await conn.exec_driver_sql(_SQLITE_UPDATE, (now,))
        updated = max(0, int(result.rowcount or 0))
    result = await conn.exec_driver_sql(_SQLITE_INSERT_SUBSCRIBERS, (now, now))
    inserted = max(0, int(result.rowcount or 0))
    result = await conn.exec_driver_sql(_SQLITE_INSERT_MEMBERS, member)
    joined = max(0, int(result.rowcount or 0))
    await conn.exec_driver_sql("DELETE FROM temp.kakitome_import")
    return ImportCounts(inserted, updated, joined)


# ON COMMIT DELETE ROWS: the table stays per session (so asyncpg's prepared statements
# stay valid) and is empty after every commit or rollback.
_PG_IMPORT_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS kakitome_import ("
    "ord integer PRIMARY KEY, key text NOT NULL, address text NOT NULL, "
    "name text NOT NULL, attributes text NOT NULL) ON COMMIT DELETE ROWS"
)
_PG_UPDATE = """
UPDATE subscribers AS s SET
  name = CASE WHEN i.name <> '' THEN i.name ELSE s.name END,
  attributes = (COALESCE(s.attributes::jsonb, '{}'::jsonb) || i.attributes::jsonb)::json,
  updated_at = $1::float8
FROM kakitome_import AS i
WHERE s.address_key = i.key
  AND (i.name <> '' OR i.attributes <> '{}')
  AND (
    (i.name <> '' AND i.name IS DISTINCT FROM s.name)
    OR COALESCE(s.attributes::jsonb, '{}'::jsonb)
       IS DISTINCT FROM (COALESCE(s.attributes::jsonb, '{}'::jsonb) || i.attributes::jsonb)
  )
"""
_PG_INSERT_SUBSCRIBERS = """
INSERT INTO subscribers (address, address_key, name, attributes, created_at, updated_at)
SELECT address, key, name, attributes::json, $1::float8, $1::float8
FROM kakitome_import ORDER BY ord
ON CONFLICT (address_key) DO NOTHING
"""
_PG_INSERT_MEMBERS = """
INSERT INTO list_members (list_id, subscriber_id, status, created_at, updated_at,
  confirmed_at, optin_method, optin_at, optin_source, optin_ip, optin_detail)
SELECT $1::bigint, s.id, $2::text, $3::float8, $4::float8, $5::float8, $6::text,
  $7::float8, $8::text, $9::text, $10::text
FROM kakitome_import AS i JOIN subscribers AS s ON s.address_key = i.key
ON CONFLICT (list_id, subscriber_id) DO NOTHING
"""


async def _import_postgresql(
    conn: AsyncConnection,
    records: list[tuple[int, str, str, str, str]],
    member: tuple[Any, ...],
    now: float,
    update_existing: bool,
    insert_after: asyncio.Event | None,
    inserted: asyncio.Event | None,
) -> ImportCounts:
    # The first statement through SQLAlchemy opens the transaction; the asyncpg
    # connection under it then works inside that same transaction.
    await conn.exec_driver_sql(_PG_IMPORT_TABLE)
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    try:
        # The joins with subscribers
        # must probe its address_key index once per row of the batch: with a hash join
        # (the planner's choice on a fresh, unanalysed temporary table) every batch
        # would read the whole subscribers table, and a million-row import would read
        # it twenty times. No JIT for these one-off statements either.
        await driver.execute(
            "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; "
            "SET LOCAL jit = off"
        )
        await driver.execute("DELETE FROM kakitome_import")
        await driver.copy_records_to_table(
            "kakitome_import",
            records=records,
            columns=("ord", "key", "address", "name", "attributes"),
        )
        updated = 0
        if update_existing:
            updated = _pg_count(await driver.execute(_PG_UPDATE, now))
        # Ids come from the sequence as the INSERT runs: the batch before this one in
        # the file draws its ids first (it runs at the same time on another connection).
        if insert_after is not None:
            await insert_after.wait()
        new = _pg_count(await driver.execute(_PG_INSERT_SUBSCRIBERS, now))
        if inserted is not None:
            inserted.set()
        joined = _pg_count(await driver.execute(_PG_INSERT_MEMBERS, *member))
    except asyncpg.PostgresError as exc:
        raise StorageError(f"database did not commit: {type(exc).__name__}: {exc}") from exc
    return ImportCounts(new, updated, joined)


def _pg_count(status: str) -> int:
    """The row count of a command tag (``INSERT 0 12``, ``UPDATE 3``)."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


async def _event(
    conn: AsyncConnection,
    subscriber_id: int,
    list_id: int | None,
    kind: str,
    now: float,
    detail: str,
) -> None:
    await conn.execute(
        insert(subscriber_events).values(
            subscriber_id=subscriber_id, list_id=list_id, kind=kind, at=now, detail=detail[:2000]
        )
    )


async def _mark_all(
    conn: AsyncConnection, subscriber_id: int, status: str, now: float, detail: str
) -> int:
    """Set ``status`` on every membership still receiving (or about to) mail."""
    rows = await conn.execute(
        select(list_members.c.list_id).where(
            list_members.c.subscriber_id == subscriber_id,
            list_members.c.status.in_((SUBSCRIBED, UNCONFIRMED)),
        )
    )
    list_ids = [int(r.list_id) for r in rows]
    if list_ids:
        await conn.execute(
            update(list_members)
            .where(
                and_(
                    list_members.c.subscriber_id == subscriber_id,
                    list_members.c.list_id.in_(list_ids),
                )
            )
            .values(status=status, updated_at=now)
        )
    for list_id in list_ids:
        await _event(conn, subscriber_id, list_id, status, now, detail)
    return len(list_ids)


async def _load_member(
    conn: AsyncConnection, list_id: int, subscriber_id: int
) -> Membership | None:
    row = (
        await conn.execute(
            select(list_members, subscribers)
            .join(subscribers, subscribers.c.id == list_members.c.subscriber_id)
            .where(
                list_members.c.list_id == list_id,
                list_members.c.subscriber_id == subscriber_id,
            )
        )
    ).first()
    return _member(row) if row is not None else None


def _list(row: Any) -> MailingList:
    return MailingList(
        id=int(row.id),
        name=row.name,
        title=row.title,
        description=row.description,
        opt_in=row.opt_in,
        from_name=row.from_name,
        from_address=row.from_address,
        reply_to=row.reply_to,
        sender_organization=row.sender_organization,
        sender_postal_address=row.sender_postal_address,
        time_zone=row.time_zone,
        quiet_start=row.quiet_start,
        quiet_end=row.quiet_end,
        encoding=row.encoding,
        mail_domain=row.mail_domain,
        created_at=row.created_at,
    )


def _subscriber(row: Any) -> Subscriber:
    return Subscriber(
        id=int(row.id),
        address=row.address,
        name=row.name,
        attributes=dict(row.attributes or {}),
        created_at=row.created_at,
        updated_at=row.updated_at,
        bounced_at=row.bounced_at,
    )


def _member(row: Any) -> Membership:
    mapping = row._mapping
    subscriber = Subscriber(
        id=int(mapping[subscribers.c.id]),
        address=mapping[subscribers.c.address],
        name=mapping[subscribers.c.name],
        attributes=dict(mapping[subscribers.c.attributes] or {}),
        created_at=mapping[subscribers.c.created_at],
        updated_at=mapping[subscribers.c.updated_at],
        bounced_at=mapping[subscribers.c.bounced_at],
    )
    return Membership(
        list_id=int(mapping[list_members.c.list_id]),
        subscriber=subscriber,
        status=mapping[list_members.c.status],
        created_at=mapping[list_members.c.created_at],
        updated_at=mapping[list_members.c.updated_at],
        confirmed_at=mapping[list_members.c.confirmed_at],
        optin_method=mapping[list_members.c.optin_method],
        optin_at=mapping[list_members.c.optin_at],
        optin_source=mapping[list_members.c.optin_source],
        optin_ip=mapping[list_members.c.optin_ip],
        optin_detail=mapping[list_members.c.optin_detail],
    )


def _segment(row: Any) -> Segment:
    return Segment(int(row.id), row.name, row.expression, row.list_id, row.created_at)
