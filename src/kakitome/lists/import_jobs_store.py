"""CSV import jobs in the database: status, progress, counts and the rejected-rows report,
visible to every web process and kept across restarts (table ``list_import_jobs``).

``ImportJobStore(store.engine)`` shares the engine of the ``Database``; each method is
one short transaction. The process running an import calls ``progress`` about once a
second (it doubles as a heartbeat) and ``finish`` at the end. A ``running`` job whose
heartbeat is older than ``stale_after`` seconds belonged to a process that died or was
restarted: ``get`` and ``interrupt_stale`` (called when the web app starts) mark it
``interrupted`` with the time of its last heartbeat, so nobody waits on it forever.
Only the first ``MAX_STORED_REJECTED`` refused rows are stored; the count is always whole.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kakitome.lists.model import ImportReport, RejectedRow
from kakitome.store.schema_imports import list_import_jobs as jobs
from kakitome.store.schema_lists import mailing_lists as lists
from kakitome.store.transactions import reading, writing

__all__ = [
    "INTERRUPTED",
    "MAX_STORED_REJECTED",
    "STALE_AFTER",
    "ImportJobRecord",
    "ImportJobStore",
]

RUNNING = "running"
DONE = "done"
FAILED = "failed"
INTERRUPTED = "interrupted"
# The report page shows the first 1,000; more than this would only bloat the row.
MAX_STORED_REJECTED = 10_000
# Heartbeats come about once a second; this many seconds without one means the process is
# gone (a busy event loop or a slow commit stays well under it).
STALE_AFTER = 60.0


@dataclass(frozen=True, slots=True)
class ImportJobRecord:
    id: str
    list_id: int
    status: str  # running | done | failed | interrupted
    size: int
    position: int
    started_by: str
    started_at: float
    heartbeat_at: float
    finished_at: float | None
    error: str | None
    report: ImportReport | None  # when done
    rejected_count: int
    list_title: str  # the list's title, else its name (for the progress page)

    @property
    def finished(self) -> float | None:
        """When it ended (done, failed or interrupted); None while running."""
        return self.finished_at

    @property
    def progress(self) -> float:
        """0..1 of the upload read: 1 once done or failed, where it stopped if interrupted."""
        if self.status in (DONE, FAILED):
            return 1.0
        share = self.position / self.size if self.size else 0.0
        return min(share, 0.99) if self.status == RUNNING else share


class ImportJobStore:
    """Import jobs on the engine of a ``Database`` (``store.engine``)."""

    def __init__(self, engine: AsyncEngine, *, stale_after: float = STALE_AFTER) -> None:
        self._engine = engine
        self._stale_after = stale_after
        self._lock = asyncio.Lock()

    def _write(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return writing(self._engine, self._lock)

    async def create(
        self, job_id: str, list_id: int, *, size: int, started_by: str, owner: str, now: float
    ) -> None:
        async with self._write() as conn:
            await conn.execute(
                insert(jobs).values(
                    id=job_id,
                    list_id=list_id,
                    status=RUNNING,
                    size=size,
                    position=0,
                    started_by=started_by[:200],
                    owner=owner,
                    started_at=now,
                    heartbeat_at=now,
                )
            )

    async def progress(self, job_id: str, *, position: int, now: float) -> None:
        """Bytes read so far; also the heartbeat of the running process."""
        async with self._write() as conn:
            await conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == RUNNING)
                .values(position=position, heartbeat_at=now)
            )

    async def finish(
        self, job_id: str, *, report: ImportReport | None, error: str | None, now: float
    ) -> None:
        """Record the end: the report when the import ran through, else the error. A job
        already marked interrupted (its heartbeat was late) gets its real ending."""
        values: dict[str, Any] = {
            "status": FAILED if error is not None else DONE,
            "error": error,
            "finished_at": now,
            "heartbeat_at": now,
        }
        if report is not None:
            values.update(
                position=jobs.c.size,
                encoding=report.encoding[:32],
                row_count=report.rows,
                inserted=report.inserted,
                updated=report.updated,
                duplicates=report.duplicates,
                rejected_count=len(report.rejected),
                rejected=[
                    {"line": r.line, "reason": r.reason, "value": r.value}
                    for r in report.rejected[:MAX_STORED_REJECTED]
                ],
                seconds=report.seconds,
            )
        async with self._write() as conn:
            await conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))

    async def interrupt_stale(self, *, now: float) -> int:
        """Mark running jobs without a heartbeat for ``stale_after`` seconds interrupted."""
        async with self._write() as conn:
            result = await conn.execute(
                update(jobs)
                .where(jobs.c.status == RUNNING, jobs.c.heartbeat_at < now - self._stale_after)
                .values(status=INTERRUPTED, finished_at=jobs.c.heartbeat_at)
            )
        return int(result.rowcount or 0)

    async def get(self, job_id: str, *, now: float) -> ImportJobRecord | None:
        """The job, or None; a stale running job is marked interrupted first (the only
        write, so polling a live job never waits for the import's write lock)."""
        row = await self._row(job_id)
        stale = row is not None and row.status == RUNNING
        if stale and row.heartbeat_at < now - self._stale_after:
            await self.interrupt_stale(now=now)
            row = await self._row(job_id)
        return None if row is None else _record(row)

    async def _row(self, job_id: str) -> Any:
        async with reading(self._engine) as conn:
            stmt = (
                select(
                    jobs,
                    func.coalesce(func.nullif(lists.c.title, ""), lists.c.name).label(
                        "list_title"
                    ),
                )
                .join(lists, lists.c.id == jobs.c.list_id)
                .where(jobs.c.id == job_id)
            )
            return (await conn.execute(stmt)).first()

    async def forget_finished(self, *, before: float) -> int:
        """Delete jobs that ended before ``before``."""
        async with self._write() as conn:
            result = await conn.execute(
                delete(jobs).where(jobs.c.finished_at.is_not(None), jobs.c.finished_at < before)
            )
        return int(result.rowcount or 0)


def _record(row: Any) -> ImportJobRecord:
    report = None
    if row.status == DONE:
        report = ImportReport(
            encoding=row.encoding or "",
            rows=row.row_count,
            inserted=row.inserted,
            updated=row.updated,
            duplicates=row.duplicates,
            rejected=[
                RejectedRow(int(r["line"]), str(r["reason"]), str(r.get("value", "")))
                for r in row.rejected or []
            ],
            seconds=row.seconds or 0.0,
        )
    return ImportJobRecord(
        id=row.id,
        list_id=int(row.list_id),
        status=row.status,
        size=int(row.size),
        position=int(row.position),
        started_by=row.started_by,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
        finished_at=row.finished_at,
        error=row.error,
        report=report,
        rejected_count=int(row.rejected_count),
        list_title=row.list_title or "",
    )
