"""A pool of open SMTP connections, shared by delivery agents in one process.

Talks to: nothing itself; it keeps connections the agent opened (``Connection``) and
closes them (QUIT) when they have carried ``messages_per_connection`` messages or sat idle
for ``idle_timeout`` seconds.

Trusts: a connection is only handed out for exactly the key it was opened under — MX IP,
port, MX host name and TLS mode (the policy level and the names a certificate must match) —
so a connection whose TLS satisfied one policy is never reused under a stricter one.
A connection that sat in the pool is checked with RSET by the agent before it is used.

Hooks: a connection may carry a ``hold`` (anything with ``release()``: the delivery
agent puts its site's connection slot there, ``delivery.shaping``). The pool calls it
exactly once, when the connection is gone: after its QUIT (full, idle timeout, stale,
not reusable, pool closing) or at once when it is discarded (aborted). So a slot is held
for the whole life of the TCP connection, idle time in the pool included.
``close_idle(site)`` closes the oldest idle connection of a site (its slot is wanted
elsewhere) and returns once its hold was released.

Limits: at most ``per_destination_concurrency`` connections in use per destination
domain (``slots``), at most that many idle per key, ``messages_per_connection`` per
connection, ``idle_timeout`` seconds idle; saved TLS sessions for resumption are bounded
(``MAX_SESSIONS``, least recently used out first).

Cost: a TLS session is read from a connection once (``SSLObject.session`` builds a new
object each time and was a fifth of the delivery CPU when read on every release): at the
first release or discard, which comes after at least one reply that followed the
handshake, so a TLS 1.3 ticket has arrived. A resumed connection's session is not read
when the saved one is less than half its lifetime old.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from kakitome.config import DeliverySettings, Settings
from kakitome.delivery.types import MXUsed
from kakitome.smtp.client import SMTPClientSession
from kakitome.tls.contexts import ContextKind
from kakitome.tls.receipt import TLSReceipt

MAX_SESSIONS = 10_000


@dataclass(frozen=True, slots=True)
class PoolKey:
    ip: str
    port: int
    mx_host: str
    # The host's policy: level, source, names to match, TLSA digest, "secure", e.g.
    # "verify|mta-sts|mx1.example.com||||" (tls.resolution.HostPolicy.pool_mode).
    tls_mode: str


class Hold(Protocol):
    """Something held for as long as a connection lives (a site's connection slot)."""

    def release(self) -> None: ...


@dataclass(eq=False)
class Connection:
    """One open SMTP session and what we know about how it travels."""

    key: PoolKey
    session: SMTPClientSession
    mx: MXUsed
    receipt: TLSReceipt
    context_kind: ContextKind | None  # None: plaintext
    # Opened under a policy found securely (DANE or MTA-STS enforce) and the certificate
    # was authenticated: a REQUIRETLS message may use it (RFC 8689 §4.2.1).
    secure: bool = False
    messages: int = 0
    idle_since: float = 0.0
    idled: float = 0.0  # how long it sat in the pool before it was last taken
    from_pool: bool = False
    opened_at: float = field(default_factory=time.monotonic)
    # Its TLS session was looked at (saved or judged not worth saving): done once.
    session_checked: bool = False
    # The destination site (delivery.shaping) and what the connection holds while it
    # lives: released by the pool when the connection is closed or discarded.
    site: str = ""
    hold: Hold | None = None

    def release_hold(self) -> None:
        """Give back what the connection held (once; later calls do nothing)."""
        hold, self.hold = self.hold, None
        if hold is not None:
            hold.release()

    @property
    def alive(self) -> bool:
        return not self.session.stream.at_eof


@dataclass
class PoolStats:
    opened: int = 0  # connections handed to the pool by the agent (counted by the agent)
    reused: int = 0  # times an idle connection was handed out again
    closed: int = 0
    sessions_resumed: int = 0


class ConnectionPool:
    """Idle connections by key, destination slots, and saved TLS sessions."""

    def __init__(
        self,
        settings: Settings | DeliverySettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        delivery = settings.delivery if isinstance(settings, Settings) else settings
        self.settings = delivery
        self._clock = clock
        self._idle: dict[PoolKey, deque[Connection]] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._sessions: OrderedDict[tuple[str, int, str, ContextKind], ssl.SSLSession] = (
            OrderedDict()
        )
        self._closing: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        self.stats = PoolStats()

    # -- destination slots ----------------------------------------------------------------

    def slots(self, destination: str) -> asyncio.Semaphore:
        """The semaphore bounding connections in use for one destination domain."""
        sem = self._slots.get(destination)
        if sem is None:
            sem = self._slots[destination] = asyncio.Semaphore(
                self.settings.per_destination_concurrency
            )
        return sem

    # -- idle connections -----------------------------------------------------------------

    def take(self, key: PoolKey) -> Connection | None:
        """The most recently used idle connection for a key, if one is still fresh."""
        queue = self._idle.get(key)
        now = self._clock()
        while queue:
            conn = queue.pop()
            if now - conn.idle_since > self.settings.idle_timeout or not conn.alive:
                self._close_later(conn)
                continue
            conn.from_pool = True
            conn.idled = now - conn.idle_since
            self.stats.reused += 1
            return conn
        return None

    def has_idle(self, key: PoolKey) -> bool:
        return bool(self._idle.get(key))

    def release(self, conn: Connection, *, reusable: bool = True) -> None:
        """Give a connection back: kept idle when it may carry more, else closed (QUIT)."""
        self.save_session(conn)
        if (
            self._closed
            or not reusable
            or not conn.alive
            or conn.messages >= self.settings.messages_per_connection
            or self.settings.idle_timeout <= 0
        ):
            self._close_later(conn)
            return
        queue = self._idle.setdefault(conn.key, deque())
        conn.idle_since = self._clock()
        queue.append(conn)
        while len(queue) > self.settings.per_destination_concurrency:
            self._close_later(queue.popleft())
        self._ensure_reaper()

    def discard(self, conn: Connection) -> None:
        """Drop a broken connection without a word to the peer."""
        self.save_session(conn)
        conn.session.stream.abort()
        conn.release_hold()
        self.stats.closed += 1

    def _close_later(self, conn: Connection) -> asyncio.Task[None]:
        self.stats.closed += 1
        task = asyncio.get_running_loop().create_task(self._quit(conn))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return task

    @staticmethod
    async def _quit(conn: Connection) -> None:
        """QUIT, close, then give back the connection's hold (even when cancelled)."""
        try:
            await conn.session.quit()
        finally:
            conn.release_hold()

    async def close_idle(self, site: str) -> bool:
        """Close the oldest idle connection of ``site``; False when there is none. Returns
        after its QUIT, its hold (the site slot) released."""
        oldest: tuple[PoolKey, Connection] | None = None
        for key, queue in self._idle.items():
            for conn in queue:
                if conn.site == site and (oldest is None or conn.idle_since < oldest[1].idle_since):
                    oldest = (key, conn)
        if oldest is None:
            return False
        key, conn = oldest
        queue = self._idle[key]
        queue.remove(conn)
        if not queue:
            del self._idle[key]
        await self._close_later(conn)
        return True

    def idle_for(self, site: str) -> int:
        """Idle connections of one site."""
        return sum(1 for q in self._idle.values() for c in q if c.site == site)

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        interval = max(0.05, min(self.settings.idle_timeout / 2, 5.0))
        while any(self._idle.values()):
            await asyncio.sleep(interval)
            now = self._clock()
            for key, queue in list(self._idle.items()):
                keep = deque(
                    c for c in queue if now - c.idle_since <= self.settings.idle_timeout and c.alive
                )
                for conn in queue:
                    if conn not in keep:
                        self._close_later(conn)
                if keep:
                    self._idle[key] = keep
                else:
                    del self._idle[key]

    def idle_count(self) -> int:
        return sum(len(q) for q in self._idle.values())

    # -- TLS sessions -----------------------------------------------------------------------

    def session_for(self, key: PoolKey, kind: ContextKind) -> ssl.SSLSession | None:
        """A saved TLS session for this peer and context, to offer for resumption."""
        session_key = (key.ip, key.port, key.mx_host, kind)
        session = self._sessions.get(session_key)
        if session is not None:
            self._sessions.move_to_end(session_key)
        return session

    def save_session(self, conn: Connection) -> None:
        """Keep the connection's TLS session for the next connection to this peer: once
        per connection, and not when it resumed a saved session that is still fresh."""
        if conn.session_checked or conn.context_kind is None:
            return
        stream = conn.session.stream
        info = stream.tls
        if info is None:
            return
        key = (conn.key.ip, conn.key.port, conn.key.mx_host, conn.context_kind)
        if info.session_reused:
            saved = self._sessions.get(key)
            if saved is not None and time.time() - saved.time < saved.timeout / 2:
                conn.session_checked = True
                return
        session = stream.tls_session
        if session is None:
            return
        if not session.has_ticket and info.version == "TLSv1.3":
            return  # the ticket has not arrived yet: look again at the next release
        conn.session_checked = True
        self._sessions[key] = session
        self._sessions.move_to_end(key)
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)

    # -- shutdown ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        """QUIT every idle connection and wait for the closes to finish."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for queue in self._idle.values():
            for conn in queue:
                self._close_later(conn)
        self._idle.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
