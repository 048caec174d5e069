"""The pool gives back a connection's hold (its site slot) exactly once, when the
connection is gone: after QUIT (full, not reusable, idle timeout, evicted, pool closed)
or at once on discard — never while the connection is still open."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from kakitome.config import load_settings
from kakitome.delivery.pool import Connection, ConnectionPool, PoolKey
from kakitome.delivery.shaping import Shaper
from kakitome.delivery.types import MXUsed
from kakitome.smtp.client import SMTPClientSession
from kakitome.tls.receipt import TLSReceipt


class _Stream:
    def __init__(self) -> None:
        self.at_eof = False
        self.tls = None

    def abort(self) -> None:
        self.at_eof = True


class _Session:
    def __init__(self) -> None:
        self.stream = _Stream()
        self.quit_started = False

    async def quit(self) -> None:
        self.quit_started = True
        await asyncio.sleep(0.01)
        self.stream.at_eof = True


class _Hold:
    def __init__(self, session: _Session) -> None:
        self.session = session
        self.released = 0
        self.open_at_release: bool | None = None

    def release(self) -> None:
        self.released += 1
        self.open_at_release = not self.session.stream.at_eof


def _connection(site: str = "example.com") -> tuple[Connection, _Hold]:
    session = _Session()
    hold = _Hold(session)
    key = PoolKey("192.0.2.1", 25, "mx.example.com", "may")
    conn = Connection(
        key,
        cast(SMTPClientSession, session),
        MXUsed("mx.example.com", "192.0.2.1"),
        cast(TLSReceipt, cast(Any, None)),
        None,
        site=site,
        hold=hold,
    )
    return conn, hold


def _pool(**env: str) -> ConnectionPool:
    return ConnectionPool(load_settings(environ={f"KAKITOME_{k}": v for k, v in env.items()}))


async def test_hold_released_after_quit_not_before() -> None:
    pool = _pool()
    conn, hold = _connection()
    pool.release(conn, reusable=False)
    assert hold.released == 0  # QUIT under way: the connection is still open
    await pool.aclose()
    assert hold.released == 1 and hold.open_at_release is False


async def test_idle_connection_keeps_its_hold_until_the_idle_timeout() -> None:
    idle_timeout = 0.3
    pool = _pool(DELIVERY__IDLE_TIMEOUT=str(idle_timeout))
    conn, hold = _connection()
    loop = asyncio.get_running_loop()
    released_at = loop.time()
    pool.release(conn)
    assert hold.released == 0 and pool.idle_count() == 1
    async with asyncio.timeout(10):  # a condition, not a pause: a busy machine is slow
        while hold.released == 0:  # noqa: ASYNC110 - the pool has no event to wait on
            await asyncio.sleep(0.02)
    assert loop.time() - released_at >= idle_timeout  # held for the whole idle time
    assert hold.released == 1 and pool.idle_count() == 0
    await pool.aclose()
    assert hold.released == 1


async def test_discard_releases_at_once_and_once() -> None:
    pool = _pool()
    conn, hold = _connection()
    pool.discard(conn)
    pool.discard(conn)
    assert hold.released == 1


async def test_close_idle_evicts_the_oldest_of_the_site() -> None:
    pool = _pool()
    first, first_hold = _connection()
    other, other_hold = _connection("elsewhere.example")
    pool.release(first)
    pool.release(other)
    assert await pool.close_idle("example.com") is True
    assert first_hold.released == 1 and first_hold.open_at_release is False
    assert other_hold.released == 0
    assert await pool.close_idle("example.com") is False
    await pool.aclose()
    assert other_hold.released == 1


async def test_slots_follow_connections() -> None:
    """With a limit of 1, a second slot comes only after the first connection closed
    (here: its idle connection is evicted by the waiter)."""
    budget = '{"max_connections": 1, "initial_connections": 1}'
    shaper = Shaper(load_settings(environ={"KAKITOME_SHAPING__DEFAULT": budget}))
    pool = _pool()
    slot = await shaper.acquire("example.com")
    assert slot is not None
    conn, _ = _connection()
    conn.hold = slot
    pool.release(conn)  # idle, holding the only slot

    async def evict() -> bool:
        return await pool.close_idle("example.com")

    second = await asyncio.wait_for(shaper.acquire("example.com", evict=evict), 5)
    assert second is not None and slot.released and pool.idle_count() == 0
    assert shaper.status()[0].held == 1
    second.release()
    assert shaper.status()[0].held == 0
    await pool.aclose()
    await shaper.close()
