"""Persistence of TLS memory: the MTA-STS cache, MX host history, TLS events, TLS-RPT.

``TLSStore`` implements ``kakitome.tls.state.TLSState`` on the engine of the main
``Database`` (``TLSStore(store.engine)``), on SQLite and PostgreSQL alike. Each method is one
transaction; writes use ``INSERT ... ON CONFLICT DO UPDATE`` so that workers on many
machines add their TLS-RPT counts without losing any, and raise ``StorageError`` when the
database cannot commit. The MTA-STS cache outlives restarts (T22).

Limits: nothing here grows without bound except the TLS-RPT rows, one per distinct
(day, policy, MX host, IP, result); ``prune`` removes reported days older than a cutoff.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kakitome.errors import StorageError
from kakitome.queue.store import insert_event
from kakitome.store.schema import events
from kakitome.store.schema_tls import (
    mta_sts_policies,
    tls_host_history,
    tlsrpt_reports,
    tlsrpt_sessions,
)
from kakitome.store.sqlite_thread import write_transaction
from kakitome.tls.history import HostHistory
from kakitome.tls.mta_sts import CachedStsPolicy, MtaStsPolicy, StsMode
from kakitome.tls.tlsrpt import ReportPolicy, SessionRecord

_UPSERT_SESSION_SQLITE = (
    "INSERT INTO tlsrpt_sessions (day, policy_domain, row_key, policy_type, policy_strings,"
    " mx_patterns, mx_host, receiving_ip, sending_ip, result_type, reason_code, count)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (row_key) DO UPDATE SET count = count + excluded.count"
)


def _session_row(key: str, s: SessionRecord, count: int) -> tuple[object, ...]:
    """_UPSERT_SESSION_SQLITE's parameters."""
    return (
        s.day, s.policy.domain, key, s.policy.type, json.dumps(list(s.policy.strings)),
        json.dumps(list(s.policy.mx_patterns)), s.mx_host, s.receiving_ip, s.sending_ip,
        s.result_type or "", s.reason_code, count,
    )  # fmt: skip


def _row_key(s: SessionRecord) -> str:
    parts = [
        s.day,
        s.policy.domain,
        s.policy.type,
        json.dumps(list(s.policy.strings)),
        json.dumps(list(s.policy.mx_patterns)),
        s.mx_host,
        s.receiving_ip,
        s.sending_ip,
        s.result_type or "",
        s.reason_code,
    ]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


class TLSStore:
    """``TLSState`` in the database; safe to share between tasks of one event loop."""

    def __init__(self, engine: AsyncEngine, *, history_ttl: float = 0.0) -> None:
        """``history_ttl`` > 0: MX host histories read are kept that many seconds (writes
        through this object update the copy at once; another process's writes are seen
        when it expires). The worker reads one per MX host for every batch it plans."""
        self._engine = engine
        self._writer = engine.execution_options(sqlite_begin="IMMEDIATE")
        self._reader = engine.execution_options(sqlite_begin="DEFERRED")
        self._pg = engine.dialect.name == "postgresql"
        self._history_ttl = history_ttl
        self._histories: dict[str, tuple[float, HostHistory | None]] = {}

    @contextlib.asynccontextmanager
    async def _tx(self, write: bool) -> AsyncIterator[AsyncConnection]:
        try:
            async with (self._writer if write else self._reader).begin() as conn:
                yield conn
        except (DBAPIError, OSError) as exc:
            raise StorageError(f"TLS store: {exc}") from exc

    def _insert(self, table: Any) -> Any:
        return (postgresql.insert if self._pg else sqlite.insert)(table)

    # -- MTA-STS cache ----------------------------------------------------------------------

    async def get_sts_policy(self, domain: str) -> CachedStsPolicy | None:
        async with self._tx(False) as conn:
            row = (
                await conn.execute(
                    select(mta_sts_policies).where(mta_sts_policies.c.domain == domain)
                )
            ).first()
        if row is None:
            return None
        policy = MtaStsPolicy(
            StsMode(row.mode),
            row.max_age,
            tuple(json.loads(row.mx)),
            row.policy_text,
            row.policy_id,
        )
        return CachedStsPolicy(row.domain, policy, row.fetched_at)

    async def put_sts_policy(self, cached: CachedStsPolicy) -> None:
        values = {
            "domain": cached.domain,
            "policy_id": cached.policy.policy_id,
            "mode": cached.policy.mode.value,
            "max_age": cached.policy.max_age,
            "mx": json.dumps(list(cached.policy.mx)),
            "policy_text": cached.policy.text,
            "fetched_at": cached.fetched_at,
            "expires_at": cached.expires_at,
        }
        statement = self._insert(mta_sts_policies).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=["domain"], set_={k: v for k, v in values.items() if k != "domain"}
        )
        async with self._tx(True) as conn:
            await conn.execute(statement)

    # -- host history --------------------------------------------------------------------------

    async def get_host_history(self, mx_host: str) -> HostHistory | None:
        if self._history_ttl > 0:
            kept = self._histories.get(mx_host)
            if kept is not None and time.monotonic() - kept[0] < self._history_ttl:
                return kept[1]
        history = await self._read_host_history(mx_host)
        if self._history_ttl > 0:
            if len(self._histories) > 10_000:
                self._histories.clear()
            self._histories[mx_host] = (time.monotonic(), history)
        return history

    async def _read_host_history(self, mx_host: str) -> HostHistory | None:
        async with self._tx(False) as conn:
            row = (
                await conn.execute(
                    select(tls_host_history).where(tls_host_history.c.mx_host == mx_host)
                )
            ).first()
        if row is None:
            return None
        return HostHistory(
            row.mx_host,
            row.starttls_seen_at,
            row.verified_sha256,
            row.verified_seen_at,
            row.last_sha256,
            row.updated_at,
        )

    async def put_host_history(self, history: HostHistory) -> None:
        values = {
            "mx_host": history.mx_host,
            "starttls_seen_at": history.starttls_seen_at,
            "verified_sha256": history.verified_sha256,
            "verified_seen_at": history.verified_seen_at,
            "last_sha256": history.last_sha256,
            "updated_at": history.updated_at,
        }
        statement = self._insert(tls_host_history).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=["mx_host"], set_={k: v for k, v in values.items() if k != "mx_host"}
        )
        self._histories.pop(history.mx_host, None)
        async with self._tx(True) as conn:
            await conn.execute(statement)
        if self._history_ttl > 0:
            self._histories[history.mx_host] = (time.monotonic(), history)

    # -- events --------------------------------------------------------------------------------

    async def add_tls_event(self, kind: str, data: dict[str, Any], now: float) -> None:
        async with self._tx(True) as conn:
            await insert_event(conn, kind, now=now, data=data)

    async def tls_events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """TLS events (message_id is NULL), oldest first."""
        query = select(events).where(events.c.message_id.is_(None)).order_by(events.c.id)
        if kind is not None:
            query = query.where(events.c.kind == kind)
        async with self._tx(False) as conn:
            return [dict(r._mapping) for r in await conn.execute(query)]

    # -- TLS-RPT ---------------------------------------------------------------------------

    async def record_sessions(self, sessions: Sequence[SessionRecord]) -> None:
        merged: dict[str, tuple[SessionRecord, int]] = {}
        for s in sessions:
            key = _row_key(s)
            old = merged.get(key)
            merged[key] = (s, s.count + (old[1] if old else 0))
        if not merged:
            return
        if not self._pg:
            # One hop for the whole upsert (kakitome.store.sqlite_thread): the worker
            # calls this after every destination's batch.
            rows = [_session_row(key, s, count) for key, (s, count) in sorted(merged.items())]
            try:
                await write_transaction(
                    self._engine,
                    lambda db: db.executemany(_UPSERT_SESSION_SQLITE, rows),
                    priority=True,  # the delivery path: a batch ends after it
                )
            except (sqlite3.Error, DBAPIError, OSError) as exc:
                raise StorageError(f"TLS store: {exc}") from exc
            return
        async with self._tx(True) as conn:
            for key, (s, count) in sorted(merged.items()):
                statement = self._insert(tlsrpt_sessions).values(
                    day=s.day,
                    policy_domain=s.policy.domain,
                    row_key=key,
                    policy_type=s.policy.type,
                    policy_strings=json.dumps(list(s.policy.strings)),
                    mx_patterns=json.dumps(list(s.policy.mx_patterns)),
                    mx_host=s.mx_host,
                    receiving_ip=s.receiving_ip,
                    sending_ip=s.sending_ip,
                    result_type=s.result_type or "",
                    reason_code=s.reason_code,
                    count=count,
                )
                statement = statement.on_conflict_do_update(
                    index_elements=["row_key"],
                    set_={"count": tlsrpt_sessions.c.count + statement.excluded.count},
                )
                await conn.execute(statement)

    async def tlsrpt_pending(self, before_day: str) -> list[tuple[str, str]]:
        reported = select(tlsrpt_reports.c.policy_domain).where(
            tlsrpt_reports.c.policy_domain == tlsrpt_sessions.c.policy_domain,
            tlsrpt_reports.c.day == tlsrpt_sessions.c.day,
        )
        query = (
            select(tlsrpt_sessions.c.policy_domain, tlsrpt_sessions.c.day)
            .where(tlsrpt_sessions.c.day < before_day, ~reported.exists())
            .distinct()
            .order_by(tlsrpt_sessions.c.day, tlsrpt_sessions.c.policy_domain)
        )
        async with self._tx(False) as conn:
            return [(r.policy_domain, r.day) for r in await conn.execute(query)]

    async def tlsrpt_sessions(self, domain: str, day: str) -> list[SessionRecord]:
        query = select(tlsrpt_sessions).where(
            tlsrpt_sessions.c.policy_domain == domain, tlsrpt_sessions.c.day == day
        )
        async with self._tx(False) as conn:
            rows = list(await conn.execute(query))
        return [
            SessionRecord(
                day=r.day,
                policy=ReportPolicy(
                    r.policy_domain,
                    r.policy_type,
                    tuple(json.loads(r.policy_strings)),
                    tuple(json.loads(r.mx_patterns)),
                ),
                mx_host=r.mx_host,
                receiving_ip=r.receiving_ip,
                result_type=r.result_type or None,
                sending_ip=r.sending_ip,
                count=int(r._mapping["count"]),
                reason_code=r.reason_code,
            )
            for r in rows
        ]

    async def tlsrpt_mark_reported(
        self, domain: str, day: str, report_id: str, destinations: Sequence[str], now: float
    ) -> None:
        statement = self._insert(tlsrpt_reports).values(
            policy_domain=domain,
            day=day,
            report_id=report_id,
            destinations=json.dumps(list(destinations)),
            sent_at=now,
            delivered=bool(destinations),
        )
        statement = statement.on_conflict_do_nothing(index_elements=["policy_domain", "day"])
        async with self._tx(True) as conn:
            await conn.execute(statement)

    async def prune(self, before_day: str) -> int:
        """Delete session counts of reported days before ``before_day``."""
        async with self._tx(True) as conn:
            result = await conn.execute(
                delete(tlsrpt_sessions).where(tlsrpt_sessions.c.day < before_day)
            )
            await conn.execute(delete(tlsrpt_reports).where(tlsrpt_reports.c.day < before_day))
        return int(result.rowcount or 0)


__all__ = ["TLSStore"]
