"""Storage of campaigns, step mail and tracking (tables in ``kakitome.store.schema_campaigns``).

Each public method is one transaction on the ``Database``'s engine; writes on SQLite take the
write lock at BEGIN (``sqlite_begin="IMMEDIATE"``). Database failures become
``StorageError``.

Why a batch is injected here and not through ``QueueStore.inject_many``: "these N messages
are queued" and "the checkpoint moved past them" must be one fact. ``commit_campaign_batch``
writes the messages, their deliveries and events (through the queue's
``kakitome.queue.store.insert_messages``, on this transaction's connection: the same rows
as ``QueueStore.inject_many``), the ``campaign_sends`` rows and the new checkpoint in ONE
transaction. A crash before the commit leaves nothing; after it, everything, and the next
run starts after the checkpoint. Two guards make a second copy impossible even when two
runners (or a pause and a runner) race: the checkpoint moves only from the value the
runner read (``WHERE checkpoint = :old AND status = 'sending'``, else the whole batch rolls
back), and ``campaign_sends`` has the primary key (campaign, subscriber). Step mail uses the
same shape with ``INSERT … ON CONFLICT DO NOTHING RETURNING`` on ``sequence_sends``: only the
rows this transaction won get their message.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection

from kakitome.errors import InputError, NotFound, StorageError
from kakitome.queue.store import insert_messages
from kakitome.queue.types import NewMessage
from kakitome.store.database import Database
from kakitome.store.schema import deliveries
from kakitome.store.schema_campaigns import (
    campaign_sends,
    campaign_templates,
    campaigns,
    sequence_sends,
    sequence_steps,
    sequences,
    tracking_events,
)

__all__ = [
    "CampaignRow",
    "CampaignStore",
    "NewCampaign",
    "NewStep",
    "Outgoing",
    "SequenceRow",
    "StepRow",
    "TemplateRow",
]

_ERRORS: tuple[type[BaseException], ...] = (DBAPIError, PoolTimeoutError, OSError)
_CHUNK = 2_000


@dataclass(frozen=True, slots=True)
class TemplateRow:
    id: int
    name: str
    subject: str
    body: str
    body_format: str
    text: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class NewCampaign:
    name: str
    list_id: int
    subject: str
    body: str
    body_format: str = "html"
    text: str | None = None
    segment: str | None = None
    expression: str | None = None
    tracking: bool = True
    footer: bool = True


@dataclass(frozen=True, slots=True)
class CampaignRow:
    id: int
    name: str
    list_id: int
    segment: str | None
    expression: str | None
    subject: str
    body: str
    body_format: str
    text: str | None
    tracking: bool
    footer: bool
    status: str
    scheduled_at: float | None
    next_run_at: float | None
    checkpoint: int
    sent: int
    failed: int
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class SequenceRow:
    id: int
    name: str
    list_id: int
    status: str
    tracking: bool
    footer: bool
    starts_at: float
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class NewStep:
    delay_days: int
    subject: str
    body: str
    body_format: str = "html"
    text: str | None = None
    send_hour: int | None = None
    position: int | None = None  # None: after the last step


@dataclass(frozen=True, slots=True)
class StepRow:
    id: int
    sequence_id: int
    position: int
    delay_days: int
    send_hour: int | None
    subject: str
    body: str
    body_format: str
    text: str | None
    created_at: float
    updated_at: float
    removed_at: float | None
    watermark: float | None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One subscriber's share of a batch: a prepared message, or the error that kept it
    from being made (recorded, so the subscriber is not retried for ever)."""

    subscriber_id: int
    address: str
    message: NewMessage | None
    error: str | None = None


class _Lost(Exception):
    """The checkpoint moved or the campaign stopped: roll the batch back."""


def _campaign(row: Any) -> CampaignRow:
    return CampaignRow(**{k: row._mapping[k] for k in CampaignRow.__slots__})


def _sequence(row: Any) -> SequenceRow:
    return SequenceRow(**{k: row._mapping[k] for k in SequenceRow.__slots__})


def _step(row: Any) -> StepRow:
    return StepRow(**{k: row._mapping[k] for k in StepRow.__slots__})


def _template(row: Any) -> TemplateRow:
    return TemplateRow(**{k: row._mapping[k] for k in TemplateRow.__slots__})


class CampaignStore:
    """Campaigns, sequences, sends and tracking events on the store's database."""

    def __init__(self, store: Database) -> None:
        self._store = store
        self._engine = store.engine
        self._writer = store.engine.execution_options(sqlite_begin="IMMEDIATE")
        self._is_pg = store.dialect == "postgresql"

    def _wake_workers(self) -> None:
        """After a commit that queued mail: wake this process's ``wait_for_work``.

        PostgreSQL is woken by the ``pg_notify`` inside the transaction; on SQLite the
        worker otherwise noticed campaign mail only at its next ``queue.poll_interval``.
        ``Database.wake`` sets the in-process event (the one ``inject_many`` sets). Other
        processes still find it at their next poll."""
        self._store.wake()

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        # On SQLite, queue behind the store's in-process write lock like every other
        # writer of this process (the worker's record_results above all): without it two
        # writers of one process meet in SQLite's busy handler, which sleeps in steps of
        # up to 100 ms and gives up after busy_timeout ("database is locked").
        lock = None if self._is_pg else self._store.write_lock
        try:
            async with contextlib.AsyncExitStack() as stack:
                if lock is not None:
                    await stack.enter_async_context(lock)
                conn = await stack.enter_async_context(self._writer.begin())
                yield conn
        except IntegrityError:
            raise
        except _ERRORS as exc:
            raise StorageError(f"database did not commit: {type(exc).__name__}: {exc}") from exc

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.execution_options(sqlite_begin="DEFERRED").begin() as conn:
                yield conn
        except _ERRORS as exc:
            raise StorageError(f"database unavailable: {type(exc).__name__}") from exc

    # -- templates -----------------------------------------------------------------------

    async def save_template(
        self, name: str, subject: str, body: str, body_format: str, text_part: str | None, *,
        now: float,
    ) -> TemplateRow:  # fmt: skip
        """Create or replace a saved template by name."""
        values = {
            "subject": subject,
            "body": body,
            "body_format": body_format,
            "text": text_part,
            "updated_at": now,
        }
        async with self._write() as conn:
            changed = await conn.execute(
                update(campaign_templates).where(campaign_templates.c.name == name).values(values)
            )
            if not changed.rowcount:
                await conn.execute(
                    insert(campaign_templates).values(name=name, created_at=now, **values)
                )
            row = (
                await conn.execute(
                    select(campaign_templates).where(campaign_templates.c.name == name)
                )
            ).one()
        return _template(row)

    async def get_template(self, name: str) -> TemplateRow:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(campaign_templates).where(campaign_templates.c.name == name)
                )
            ).first()
        if row is None:
            raise NotFound(f"no template named {name!r}")
        return _template(row)

    async def templates(self) -> list[TemplateRow]:
        async with self._read() as conn:
            rows = await conn.execute(
                select(campaign_templates).order_by(campaign_templates.c.name)
            )
            return [_template(r) for r in rows]

    # -- campaigns -----------------------------------------------------------------------

    async def create_campaign(self, new: NewCampaign, *, now: float) -> CampaignRow:
        async with self._write() as conn:
            result = await conn.execute(
                insert(campaigns)
                .values(
                    name=new.name,
                    list_id=new.list_id,
                    segment=new.segment,
                    expression=new.expression,
                    subject=new.subject,
                    body=new.body,
                    body_format=new.body_format,
                    text=new.text,
                    tracking=new.tracking,
                    footer=new.footer,
                    status="draft",
                    checkpoint=0,
                    sent=0,
                    failed=0,
                    created_at=now,
                    updated_at=now,
                )
                .returning(campaigns.c.id)
            )
            campaign_id = int(result.scalar_one())
            row = (await conn.execute(select(campaigns).where(campaigns.c.id == campaign_id))).one()
        return _campaign(row)

    async def get_campaign(self, ref: int | str) -> CampaignRow:
        """By id (int or digits) or by name (the newest of that name)."""
        query = select(campaigns)
        if isinstance(ref, int) or str(ref).isdigit():
            query = query.where(campaigns.c.id == int(ref))
        else:
            query = query.where(campaigns.c.name == ref).order_by(campaigns.c.id.desc()).limit(1)
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound(f"no campaign {ref!r}")
        return _campaign(row)

    async def campaigns(self) -> list[CampaignRow]:
        async with self._read() as conn:
            return [
                _campaign(r) for r in await conn.execute(select(campaigns).order_by(campaigns.c.id))
            ]

    async def update_campaign(self, campaign_id: int, *, now: float, **values: Any) -> CampaignRow:
        """Change content or options of a draft or scheduled campaign."""
        allowed = {"name", "subject", "body", "body_format", "text", "segment", "expression",
                   "tracking", "footer"}  # fmt: skip
        unknown = set(values) - allowed
        if unknown:
            raise InputError(f"cannot change {', '.join(sorted(unknown))} of a campaign")
        async with self._write() as conn:
            changed = await conn.execute(
                update(campaigns)
                .where(
                    campaigns.c.id == campaign_id, campaigns.c.status.in_(("draft", "scheduled"))
                )
                .values(updated_at=now, **values)
            )
            if not changed.rowcount:
                raise InputError("only a draft or scheduled campaign can be edited")
            row = (await conn.execute(select(campaigns).where(campaigns.c.id == campaign_id))).one()
        return _campaign(row)

    async def transition(
        self, campaign_id: int, *, from_: Sequence[str], to: str, now: float, **values: Any
    ) -> bool:
        """Move a campaign from one of ``from_`` to ``to`` (with extra column values);
        False when it was in none of them."""
        async with self._write() as conn:
            changed = await conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id, campaigns.c.status.in_(tuple(from_)))
                .values(status=to, updated_at=now, **values)
            )
        return bool(changed.rowcount)

    async def due_campaigns(self, now: float) -> list[CampaignRow]:
        """Scheduled campaigns whose time has come, and sending ones not held back."""
        query = select(campaigns).where(
            or_(
                and_(campaigns.c.status == "scheduled", campaigns.c.scheduled_at <= now),
                and_(
                    campaigns.c.status == "sending",
                    or_(campaigns.c.next_run_at.is_(None), campaigns.c.next_run_at <= now),
                ),
            )
        )
        async with self._read() as conn:
            return [_campaign(r) for r in await conn.execute(query.order_by(campaigns.c.id))]

    async def commit_campaign_batch(
        self,
        campaign_id: int,
        *,
        old_checkpoint: int,
        new_checkpoint: int,
        outgoing: Sequence[Outgoing],
        now: float,
        lifetime: float,
    ) -> bool:
        """Queue a batch and advance the checkpoint in one transaction. False (and
        nothing written) when the campaign is no longer sending from ``old_checkpoint``
        (paused, cancelled, or another runner got there first)."""
        sent = sum(1 for o in outgoing if o.message is not None)
        failed = len(outgoing) - sent
        try:
            async with self._write() as conn:
                moved = await conn.execute(
                    update(campaigns)
                    .where(
                        campaigns.c.id == campaign_id,
                        campaigns.c.status == "sending",
                        campaigns.c.checkpoint == old_checkpoint,
                    )
                    .values(
                        checkpoint=new_checkpoint,
                        sent=campaigns.c.sent + sent,
                        failed=campaigns.c.failed + failed,
                        updated_at=now,
                    )
                )
                if not moved.rowcount:
                    raise _Lost
                ids = await self._insert_messages(conn, outgoing, now=now, lifetime=lifetime)
                rows = [
                    {
                        "campaign_id": campaign_id,
                        "subscriber_id": o.subscriber_id,
                        "message_id": ids.get(o.subscriber_id),
                        "address": o.address,
                        "sent_at": now,
                        "error": o.error,
                    }
                    for o in outgoing
                ]
                for chunk in _chunks(rows):
                    await conn.execute(insert(campaign_sends), chunk)
        except _Lost:
            return False
        except IntegrityError:
            # A send row exists already: someone else queued this batch. Nothing of ours
            # was written (the transaction rolled back as a whole).
            return False
        if sent:
            self._wake_workers()
        return True

    async def sent_subscribers(self, campaign_id: int, subscriber_ids: Sequence[int]) -> set[int]:
        """Which of these subscribers already have a send row for the campaign."""
        if not subscriber_ids:
            return set()
        async with self._read() as conn:
            rows = await conn.execute(
                select(campaign_sends.c.subscriber_id).where(
                    campaign_sends.c.campaign_id == campaign_id,
                    campaign_sends.c.subscriber_id.in_(list(subscriber_ids)),
                )
            )
            return {int(r[0]) for r in rows}

    async def _insert_messages(
        self, conn: AsyncConnection, outgoing: Sequence[Outgoing], *, now: float, lifetime: float
    ) -> dict[int, str]:
        """The rows ``QueueStore.inject_many`` writes, inside the caller's transaction
        (``kakitome.queue.store.insert_messages``)."""
        sending = [item for item in outgoing if item.message is not None]
        messages = [item.message for item in sending if item.message is not None]
        message_ids = await insert_messages(
            conn, messages, now=now, lifetime=lifetime, message_chunk=500, row_chunk=_CHUNK
        )
        return {item.subscriber_id: mid for item, mid in zip(sending, message_ids, strict=True)}

    async def delete_campaign(self, campaign_id: int) -> bool:
        async with self._write() as conn:
            result = await conn.execute(
                delete(campaigns).where(
                    campaigns.c.id == campaign_id, campaigns.c.status.in_(("draft", "cancelled"))
                )
            )
        return bool(result.rowcount)

    # -- sequences -----------------------------------------------------------------------

    async def create_sequence(
        self, name: str, list_id: int, *, tracking: bool, footer: bool, now: float
    ) -> SequenceRow:
        try:
            async with self._write() as conn:
                result = await conn.execute(
                    insert(sequences)
                    .values(
                        name=name,
                        list_id=list_id,
                        status="active",
                        tracking=tracking,
                        footer=footer,
                        starts_at=now,
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(sequences.c.id)
                )
                sequence_id = int(result.scalar_one())
                row = (
                    await conn.execute(select(sequences).where(sequences.c.id == sequence_id))
                ).one()
        except IntegrityError as exc:
            raise InputError(f"a sequence named {name!r} exists already") from exc
        return _sequence(row)

    async def get_sequence(self, ref: int | str) -> SequenceRow:
        query = select(sequences)
        if isinstance(ref, int) or str(ref).isdigit():
            query = query.where(sequences.c.id == int(ref))
        else:
            query = query.where(sequences.c.name == ref)
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound(f"no sequence {ref!r}")
        return _sequence(row)

    async def sequences(self, *, active_only: bool = False) -> list[SequenceRow]:
        query = select(sequences).order_by(sequences.c.id)
        if active_only:
            query = query.where(sequences.c.status == "active")
        async with self._read() as conn:
            return [_sequence(r) for r in await conn.execute(query)]

    async def set_sequence_status(self, sequence_id: int, status: str, *, now: float) -> None:
        async with self._write() as conn:
            await conn.execute(
                update(sequences)
                .where(sequences.c.id == sequence_id)
                .values(status=status, updated_at=now)
            )

    async def update_sequence(self, sequence_id: int, *, now: float, **values: Any) -> SequenceRow:
        """Change a sequence's name, status (``active``/``paused``), tracking or footer;
        NotFound when it is gone, InputError for a name already taken."""
        unknown = set(values) - {"name", "status", "tracking", "footer"}
        if unknown:
            raise InputError(f"cannot change {', '.join(sorted(unknown))} of a sequence")
        try:
            async with self._write() as conn:
                await conn.execute(
                    update(sequences)
                    .where(sequences.c.id == sequence_id)
                    .values(updated_at=now, **values)
                )
                row = (
                    await conn.execute(select(sequences).where(sequences.c.id == sequence_id))
                ).first()
        except IntegrityError as exc:
            raise InputError(f"a sequence named {values.get('name')!r} exists already") from exc
        if row is None:
            raise NotFound(f"no sequence {sequence_id}")
        return _sequence(row)

    async def delete_sequence(self, sequence_id: int) -> bool:
        """Delete a sequence with its steps and their send records (messages already
        queued stay queued); False when there was none."""
        steps = select(sequence_steps.c.id).where(sequence_steps.c.sequence_id == sequence_id)
        async with self._write() as conn:
            await conn.execute(delete(sequence_sends).where(sequence_sends.c.step_id.in_(steps)))
            await conn.execute(
                delete(sequence_steps).where(sequence_steps.c.sequence_id == sequence_id)
            )
            result = await conn.execute(delete(sequences).where(sequences.c.id == sequence_id))
        return bool(result.rowcount)

    async def add_step(self, sequence_id: int, step: NewStep, *, now: float) -> StepRow:
        async with self._write() as conn:
            position = step.position
            if position is None:
                last = await conn.scalar(
                    select(func.max(sequence_steps.c.position)).where(
                        sequence_steps.c.sequence_id == sequence_id,
                        sequence_steps.c.removed_at.is_(None),
                    )
                )
                position = int(last or 0) + 1
            result = await conn.execute(
                insert(sequence_steps)
                .values(
                    sequence_id=sequence_id,
                    position=position,
                    delay_days=step.delay_days,
                    send_hour=step.send_hour,
                    subject=step.subject,
                    body=step.body,
                    body_format=step.body_format,
                    text=step.text,
                    created_at=now,
                    updated_at=now,
                )
                .returning(sequence_steps.c.id)
            )
            step_id = int(result.scalar_one())
            row = (
                await conn.execute(select(sequence_steps).where(sequence_steps.c.id == step_id))
            ).one()
        return _step(row)

    async def update_step(self, step_id: int, *, now: float, **values: Any) -> StepRow:
        """Edit a step in place (its id, hence what was sent, stays)."""
        allowed = {"delay_days", "send_hour", "subject", "body", "body_format", "text", "position"}
        unknown = set(values) - allowed
        if unknown:
            raise InputError(f"cannot change {', '.join(sorted(unknown))} of a step")
        async with self._write() as conn:
            changed = await conn.execute(
                update(sequence_steps)
                .where(sequence_steps.c.id == step_id, sequence_steps.c.removed_at.is_(None))
                .values(updated_at=now, **values)
            )
            if not changed.rowcount:
                raise NotFound(f"no step {step_id}")
            row = (
                await conn.execute(select(sequence_steps).where(sequence_steps.c.id == step_id))
            ).one()
        return _step(row)

    async def remove_step(self, step_id: int, *, now: float) -> bool:
        async with self._write() as conn:
            changed = await conn.execute(
                update(sequence_steps)
                .where(sequence_steps.c.id == step_id, sequence_steps.c.removed_at.is_(None))
                .values(removed_at=now, updated_at=now)
            )
        return bool(changed.rowcount)

    async def get_step(self, step_id: int) -> StepRow:
        """A step that is not removed; NotFound otherwise."""
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(sequence_steps).where(
                        sequence_steps.c.id == step_id, sequence_steps.c.removed_at.is_(None)
                    )
                )
            ).first()
        if row is None:
            raise NotFound(f"no step {step_id}")
        return _step(row)

    async def steps(self, sequence_id: int) -> list[StepRow]:
        async with self._read() as conn:
            rows = await conn.execute(
                select(sequence_steps)
                .where(
                    sequence_steps.c.sequence_id == sequence_id,
                    sequence_steps.c.removed_at.is_(None),
                )
                .order_by(sequence_steps.c.position, sequence_steps.c.id)
            )
            return [_step(r) for r in rows]

    async def step_sent_to(self, step_id: int, subscriber_ids: Sequence[int]) -> set[int]:
        if not subscriber_ids:
            return set()
        async with self._read() as conn:
            rows = await conn.execute(
                select(sequence_sends.c.subscriber_id).where(
                    sequence_sends.c.step_id == step_id,
                    sequence_sends.c.subscriber_id.in_(list(subscriber_ids)),
                )
            )
            return {int(r[0]) for r in rows}

    async def commit_step_batch(
        self, step_id: int, outgoing: Sequence[Outgoing], *, now: float, lifetime: float
    ) -> int:
        """Queue step messages, each only if this transaction records the (step,
        subscriber) send first; returns how many were queued."""
        if not outgoing:
            return 0
        rows = [
            {
                "step_id": step_id,
                "subscriber_id": o.subscriber_id,
                "message_id": None,
                "address": o.address,
                "sent_at": now,
                "error": o.error,
            }
            for o in outgoing
        ]
        dialect_insert = postgresql.insert if self._is_pg else sqlite.insert
        async with self._write() as conn:
            won: set[int] = set()
            for chunk in _chunks(rows):
                result = await conn.execute(
                    dialect_insert(sequence_sends)
                    .values(list(chunk))
                    .on_conflict_do_nothing()
                    .returning(sequence_sends.c.subscriber_id)
                )
                won |= {int(r[0]) for r in result}
            mine = [o for o in outgoing if o.subscriber_id in won and o.message is not None]
            written = await self._insert_messages(conn, mine, now=now, lifetime=lifetime)
            # _insert_messages made its own ids; point the send rows at them.
            for subscriber_id, message_id in written.items():
                await conn.execute(
                    update(sequence_sends)
                    .where(
                        sequence_sends.c.step_id == step_id,
                        sequence_sends.c.subscriber_id == subscriber_id,
                    )
                    .values(message_id=message_id)
                )
        if written:
            self._wake_workers()
        return len(written)

    async def set_watermark(self, step_id: int, watermark: float) -> None:
        async with self._write() as conn:
            await conn.execute(
                update(sequence_steps)
                .where(sequence_steps.c.id == step_id)
                .values(watermark=watermark)
            )

    # -- tracking and statistics ---------------------------------------------------------

    async def record_event(
        self, kind: str, ref: str, subscriber_id: int, *, url: str | None, now: float
    ) -> None:
        async with self._write() as conn:
            await conn.execute(
                insert(tracking_events).values(
                    at=now, kind=kind, ref=ref, subscriber_id=subscriber_id, url=url
                )
            )

    async def campaign_stats(self, campaign_id: int) -> dict[str, Any]:
        """Counts for one campaign (see kakitome.campaigns.stats)."""
        ref = f"c{campaign_id}"
        async with self._read() as conn:
            status_rows = await conn.execute(
                select(deliveries.c.status, func.count())
                .select_from(
                    campaign_sends.join(
                        deliveries, deliveries.c.message_id == campaign_sends.c.message_id
                    )
                )
                .where(campaign_sends.c.campaign_id == campaign_id)
                .group_by(deliveries.c.status)
            )
            by_status = {str(s): int(n) for s, n in status_rows}
            tls_rows = await conn.execute(
                select(deliveries.c.tls)
                .select_from(
                    campaign_sends.join(
                        deliveries, deliveries.c.message_id == campaign_sends.c.message_id
                    )
                )
                .where(
                    campaign_sends.c.campaign_id == campaign_id,
                    deliveries.c.status == "delivered",
                )
            )
            verified = 0
            for (tls,) in tls_rows:
                if isinstance(tls, dict) and tls.get("verification") == "verified":
                    verified += 1
            events_rows = await conn.execute(
                select(
                    tracking_events.c.kind,
                    func.count(),
                    func.count(func.distinct(tracking_events.c.subscriber_id)),
                )
                .where(tracking_events.c.ref == ref)
                .group_by(tracking_events.c.kind)
            )
            activity = {str(k): (int(total), int(unique)) for k, total, unique in events_rows}
            unsubscribed = await _unsubscribed_after(conn, campaign_id)
        return {
            "by_status": by_status,
            "verified_tls": verified,
            "activity": activity,
            "unsubscribed": unsubscribed,
        }


async def _unsubscribed_after(conn: AsyncConnection, campaign_id: int) -> int | None:
    """Recipients of the campaign who unsubscribed from its list after it started.

    Reads the lists tables (owned by kakitome.lists) when they exist; None otherwise.
    TODO(lists): a ``ListService`` method for "unsubscribed since T among these ids" would
    let this stop knowing their table names.
    """
    try:
        from kakitome.store import schema_lists
    except ImportError:  # pragma: no cover
        return None
    memberships = getattr(schema_lists, "list_members", None)
    if memberships is None or not {"list_id", "subscriber_id", "status", "updated_at"} <= set(
        memberships.c.keys()
    ):
        return None
    query = (
        select(func.count())
        .select_from(
            campaign_sends.join(campaigns, campaigns.c.id == campaign_sends.c.campaign_id).join(
                memberships,
                and_(
                    memberships.c.subscriber_id == campaign_sends.c.subscriber_id,
                    memberships.c.list_id == campaigns.c.list_id,
                ),
            )
        )
        .where(
            campaign_sends.c.campaign_id == campaign_id,
            memberships.c.status == "unsubscribed",
            memberships.c.updated_at >= campaign_sends.c.sent_at,
        )
    )
    return int(await conn.scalar(query) or 0)


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
