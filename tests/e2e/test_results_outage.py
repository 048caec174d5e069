"""Results that cannot be committed are kept until they can be, never given up.

A worker (the real one, with the real delivery agent) delivers into the world while the
database stops taking writes for longer than any retry budget would last: on SQLite
another connection holds the write lock past the busy timeout, on PostgreSQL the
database refuses connections and ours are cut. The peer accepts every message during the
outage; once the database is back every result must be committed and no message may
arrive twice. (Before, the worker gave the results up after five tries, its leases ran
out, and every delivery of the outage was sent again.)
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from kakitome.delivery.agent import DeliveryAgent
from kakitome.delivery.pool import ConnectionPool
from kakitome.dns.resolver import Resolver
from kakitome.injection import Injector
from kakitome.queue.scheduler import Worker
from kakitome.store.database import Database
from kakitome.testing import LocalInternet, PeerBehaviour
from tests.fixtures_db import queue_store

from ..fixtures_db import PG_SERVER
from ..fixtures_world import MakeDomain

pytestmark = pytest.mark.heavy

MESSAGES = 24
# Longer than the old retry budget (five tries, 7.5 s of pauses) and than the lease.
OUTAGE = 12.0
LEASE = 2.0
_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


@contextlib.contextmanager
def _outage(database_url: str) -> Iterator[None]:
    """The database takes no writes (SQLite) or no connections (PostgreSQL) inside."""
    if database_url.startswith("sqlite"):
        path = database_url.removeprefix("sqlite:///")
        holder = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            holder.execute("BEGIN IMMEDIATE")
            yield
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        return
    name = database_url.rpartition("/")[2]
    with psycopg.connect(PG_SERVER, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name))
        )
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            yield
        finally:
            admin.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(
                    sql.Identifier(name)
                )
            )


@pytest.mark.timeout(120)
async def test_results_survive_a_database_outage_without_resending(
    world: LocalInternet, database_url: str, make_domain: MakeDomain
) -> None:
    """Delivered during a 12 s outage: all recorded afterwards, each message sent once."""
    # Slow replies: deliveries go on for a few seconds, most of them during the outage.
    domain, peer = make_domain(PeerBehaviour(delay=0.15, transcript=False))
    settings = world.settings(
        {
            "KAKITOME_DATABASE__URL": database_url,
            "KAKITOME_DELIVERY__HELO_HOSTNAME": "out.kakitome.test",
            "KAKITOME_QUEUE__LEASE_SECONDS": str(LEASE),
            "KAKITOME_QUEUE__POLL_INTERVAL": "0.2",
        }
    )
    # A short busy timeout: on SQLite the held lock is an error after 0.3 s, not a wait.
    store = await Database.open(database_url, pool_size=5, busy_timeout_ms=300)
    pool = ConnectionPool(settings)
    stop = asyncio.Event()
    running: asyncio.Task[None] | None = None
    try:
        injector = Injector(queue_store(store), settings)
        ids = [
            await injector.submit_fields(
                from_="news@sender.test",
                to=[f"user{i}@{domain.name}"],
                subject=f"outage {i}",
                text="body\n",
            )
            for i in range(MESSAGES)
        ]
        agent = DeliveryAgent(settings, Resolver(settings), pool)
        worker = Worker(settings, queue_store(store), agent.deliver, injector=injector)
        running = asyncio.create_task(worker.run(stop))
        deadline = time.monotonic() + 30
        while not peer.messages() and time.monotonic() < deadline:  # noqa: ASYNC110 - peer thread
            await asyncio.sleep(0.01)
        assert peer.messages(), "nothing was delivered"
        with _outage(database_url):
            await asyncio.sleep(OUTAGE)
            during = len(peer.messages())
        # Back: every result is committed, nothing is sent again.
        deadline = time.monotonic() + 60
        statuses: list[str] = []
        while time.monotonic() < deadline:
            statuses = [(await queue_store(store).receipt(i)).recipients[0].status for i in ids]
            if all(s == "delivered" for s in statuses):
                break
            await asyncio.sleep(0.2)
        assert statuses == ["delivered"] * MESSAGES, Counter(statuses)
        await asyncio.sleep(LEASE * 2)  # a lapsed lease would have been claimed again by now
        copies = Counter(
            match.group(1)
            for message in peer.messages()
            if (match := _MESSAGE_ID.search(message.data)) is not None
        )
        assert len(copies) == MESSAGES
        twice = {mid: n for mid, n in copies.items() if n > 1}
        print(f"\n[outage] delivered during the outage: {during}; sent twice: {len(twice)}")
        assert during > 1, "the outage came too late to test anything"
        assert not twice, f"{len(twice)} messages sent again after the outage"
    finally:
        stop.set()
        if running is not None:
            await asyncio.wait_for(running, 60)
        await pool.aclose()
        await store.close()
