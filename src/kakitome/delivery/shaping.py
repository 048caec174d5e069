"""Shaping per destination site: how many connections, how many messages per connection
and per minute the delivery agents of ALL worker processes may use towards one receiver.

Talks to: nothing on the network. It keeps its shared state in a ``ShapingState``: in
this process (``MemoryShapingState``, enough for SQLite's single worker process) or in
the database (``kakitome.delivery.shaping_store.ShapingStore``, for many workers on one
PostgreSQL). Trusts: the SMTP replies the agent reports (only servers' replies, never
the agent's own policy deferrals).

**The site rule.** A destination's site is derived from its *primary MX host* (lowest
preference, then name), so the thousands of domains hosted at one provider share one
budget:

1. the longest suffix of the MX host name found in the providers table (``PROVIDERS``
   plus ``shaping.providers``) gives the site: ``aspmx.l.google.com`` → ``google.com``,
   ``example-com.mail.protection.outlook.com`` → ``outlook.com``,
   ``mta7.am0.yahoodns.net`` → ``yahoo.com``, ``mfsmax.docomo.ne.jp`` → ``docomo.ne.jp``;
2. otherwise the MX host name itself: domains that share an MX host (the usual way a
   hosting provider serves its customers) share a site, and a provider whose customers
   have MX names of their own becomes one site with one line in ``shaping.providers``.
   (Grouping unknown hosts by their registrable part was tried first: many domains with
   their own MX names under one part then shared a small budget, their connections have
   different pool keys, and each took the others' idle connections away — in the
   delivery benchmark 2,000 messages to 20 such domains needed 817 TLS sessions instead
   of 160. ``registrable_part`` stays as a helper for reports.)

**Budgets** (``SiteLimits``, per site: ``SITE_DEFAULTS`` for the large providers,
``shaping.sites`` over them, ``shaping.default`` for every other site):

- ``max_connections`` open at once across all workers, enforced with numbered slots
  (a connection needs a slot below the site's current window);
- slow start: the window starts at ``initial_connections`` and grows by one per
  successful transaction up to ``max_connections``;
- back-off: a ``421`` reply or an enhanced status ``4.7.x`` (the providers' "slow down":
  Gmail's 4.7.28, Yahoo's 4.7.0 [TS0x], Microsoft's 4.7.500) halves the window (not below
  one) and starts a cool-down of ``shaping.cooldown`` seconds in which it does not grow;
  many workers seeing the same reply halve it once;
- ``messages_per_connection`` (also bounded by ``delivery.messages_per_connection``);
- ``messages_per_minute`` across all workers, in fixed 60-second windows; a process takes
  a few messages of budget at a time and forfeits what it has not used when the window
  ends.

**A slot is held for the whole life of one TCP connection**: the agent takes it
(``acquire``) before it connects and hangs it on the connection
(``delivery.pool.Connection.hold``); the pool gives it back when it closes the
connection (QUIT after ``messages_per_connection``, idle timeout, shutdown) or discards
it. An idle pooled connection keeps its slot, so the next batch to the site reuses both
without asking the database; a task that needs a slot while the site is full may close
one of this process's idle connections to the site first (``evict``), never a slot
handed on while its connection is still open. So the receiver never sees more
connections than the window, across all workers.

Limits: at most ``MAX_SITES`` sites are remembered in this process (least recently used
out first); a database that stays unreachable for ``DB_WAIT`` seconds while a slot is
needed raises ``StorageError`` (the agent then defers the batch: never a connection over
the limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kakitome.config import Settings, SiteLimits
from kakitome.dns.types import MXResult
from kakitome.errors import StorageError
from kakitome.smtp.replies import Reply

log = logging.getLogger(__name__)

# MX host suffix -> site. Providers whose MX names are not under their mail domain.
PROVIDERS: Mapping[str, str] = {
    "google.com": "google.com",
    "googlemail.com": "google.com",
    "outlook.com": "outlook.com",
    "hotmail.com": "outlook.com",
    "protection.outlook.com": "outlook.com",
    "yahoodns.net": "yahoo.com",
    "yahoo.com": "yahoo.com",
    "yahoo.co.jp": "yahoo.co.jp",
    "icloud.com": "icloud.com",
    "me.com": "icloud.com",
    "docomo.ne.jp": "docomo.ne.jp",
    "ezweb.ne.jp": "au.com",
    "au.com": "au.com",
    "kddi.com": "au.com",
    "softbank.ne.jp": "softbank.jp",
    "softbank.jp": "softbank.jp",
}

_CARRIER = {
    "max_connections": 2,
    "initial_connections": 1,
    "messages_per_connection": 10,
    "messages_per_minute": 300,
}
# Starting points, conservative where a provider is known to throttle hard (Japanese
# mobile carriers reject bursts outright and remember the sender); raise them per site
# with shaping.sites once a sending IP has a reputation there.
SITE_DEFAULTS: Mapping[str, Mapping[str, int]] = {
    "google.com": {"max_connections": 20, "messages_per_connection": 100},
    "outlook.com": {"max_connections": 10, "messages_per_connection": 50},
    "yahoo.com": {"max_connections": 10, "messages_per_connection": 20},
    "yahoo.co.jp": {"max_connections": 5, "messages_per_connection": 20},
    "icloud.com": {"max_connections": 5, "messages_per_connection": 20},
    "docomo.ne.jp": _CARRIER,
    "au.com": _CARRIER,
    "softbank.jp": _CARRIER,
}

# Second-level labels under two-letter country codes that are public (co.jp, ne.jp ...).
_GENERIC_SECOND_LEVEL = frozenset(
    [
        "ac",
        "ad",
        "co",
        "com",
        "ed",
        "edu",
        "go",
        "gov",
        "gr",
        "lg",
        "ltd",
        "mil",
        "ne",
        "net",
        "nom",
        "or",
        "org",
        "plc",
    ]
)

MAX_SITES = 10_000
DB_WAIT = 15.0  # seconds to keep asking an unreachable database for a slot
POLL = 0.2  # seconds between looks for a slot another process may have freed
WINDOW_REFRESH = 1.0  # seconds a site's shared window is trusted before it is read again
FLUSH_DELAY = 0.2  # successes and back-offs are written at most this often per site


def registrable_part(host: str) -> str:
    """``mx1.example.co.jp`` → ``example.co.jp``; ``a.b.example.com`` → ``example.com``."""
    labels = host.lower().rstrip(".").split(".")
    if len(labels) <= 2:
        return ".".join(labels)
    if len(labels[-1]) == 2 and labels[-2] in _GENERIC_SECOND_LEVEL:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def site_for_host(host: str, providers: Mapping[str, str] = PROVIDERS) -> str:
    """The site of one MX host name (see the module docstring for the rule)."""
    name = host.lower().rstrip(".")
    labels = name.split(".")
    for start in range(len(labels)):
        site = providers.get(".".join(labels[start:]))
        if site is not None:
            return site
    return name


def primary_mx_host(mx: MXResult) -> str:
    """The most preferred MX host name (ties: the smallest name), else the domain."""
    if not mx.hosts:
        return mx.domain
    return min(mx.hosts, key=lambda h: (h.preference, h.name)).name


class ShapingState(Protocol):
    """Where the shared budgets live; every method may raise ``StorageError``."""

    async def acquire_slot(
        self, site: str, limit: int, owner: str, *, now: float, lease: float
    ) -> int | None: ...

    async def release_slot(self, site: str, slot: int, owner: str) -> None: ...

    async def renew(self, owner: str, *, now: float, lease: float) -> int: ...

    async def release_all(self, owner: str) -> int: ...

    async def window(self, site: str, *, initial: float, now: float) -> tuple[float, float]: ...

    async def grow(self, site: str, by: float, *, limit: float, now: float) -> None: ...

    async def back_off(self, site: str, *, now: float, cooldown: float) -> bool: ...

    async def take_tokens(
        self, site: str, wanted: int, *, per_minute: int, now: float
    ) -> tuple[int, float]: ...


@dataclass
class _MemorySite:
    window: float
    cooldown_until: float = 0.0
    slots: dict[int, tuple[str, float]] = field(default_factory=dict)  # slot -> owner, until
    rate_window: float = 0.0
    rate_used: int = 0


class MemoryShapingState:
    """``ShapingState`` in this process: one worker process (SQLite) or tests."""

    def __init__(self) -> None:
        self._sites: dict[str, _MemorySite] = {}

    def _site(self, site: str, initial: float = 1.0) -> _MemorySite:
        state = self._sites.get(site)
        if state is None:
            state = self._sites[site] = _MemorySite(window=initial)
        return state

    async def acquire_slot(
        self, site: str, limit: int, owner: str, *, now: float, lease: float
    ) -> int | None:
        slots = self._site(site).slots
        for slot in range(limit):
            held = slots.get(slot)
            if held is None or held[1] <= now:
                slots[slot] = (owner, now + lease)
                return slot
        return None

    async def release_slot(self, site: str, slot: int, owner: str) -> None:
        slots = self._site(site).slots
        if slots.get(slot, ("", 0.0))[0] == owner:
            del slots[slot]

    async def renew(self, owner: str, *, now: float, lease: float) -> int:
        count = 0
        for state in self._sites.values():
            for slot, (holder, _) in list(state.slots.items()):
                if holder == owner:
                    state.slots[slot] = (owner, now + lease)
                    count += 1
        return count

    async def release_all(self, owner: str) -> int:
        count = 0
        for state in self._sites.values():
            for slot, (holder, _) in list(state.slots.items()):
                if holder == owner:
                    del state.slots[slot]
                    count += 1
        return count

    async def window(self, site: str, *, initial: float, now: float) -> tuple[float, float]:
        state = self._site(site, initial)
        return state.window, state.cooldown_until

    async def grow(self, site: str, by: float, *, limit: float, now: float) -> None:
        state = self._site(site)
        if state.cooldown_until <= now:
            state.window = min(limit, state.window + by)

    async def back_off(self, site: str, *, now: float, cooldown: float) -> bool:
        state = self._site(site)
        if state.cooldown_until > now:
            return False
        state.window = max(1.0, state.window / 2)
        state.cooldown_until = now + cooldown
        return True

    async def take_tokens(
        self, site: str, wanted: int, *, per_minute: int, now: float
    ) -> tuple[int, float]:
        state = self._site(site)
        if state.rate_window + 60.0 <= now:
            state.rate_window, state.rate_used = now, 0
        granted = max(0, min(wanted, per_minute - state.rate_used))
        state.rate_used += granted
        return granted, state.rate_window + 60.0


@dataclass(eq=False)
class SiteSlot:
    """One connection slot of a site, held for the whole life of one TCP connection:
    taken before the connect, given back when the connection is closed or discarded
    (the pool calls ``release``; see ``delivery.pool.Connection.hold``)."""

    site: str
    slot: int | None  # None: shaping is off
    _give_back: Callable[[SiteSlot], None] | None = None
    released: bool = False

    def release(self) -> None:
        """Give the slot back (once; later calls do nothing)."""
        if self.released:
            return
        self.released = True
        if self._give_back is not None:
            self._give_back(self)


@dataclass
class _Site:
    name: str
    limits: SiteLimits
    window: float
    cooldown_until: float = 0.0
    window_read_at: float = -math.inf
    held: int = 0  # slots held by this process (one per open or opening connection)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    tokens: int = 0
    tokens_until: float = 0.0
    token_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    successes: int = 0
    backoff: bool = False
    flushing: bool = False
    backoffs: int = 0  # counted for metrics


@dataclass(frozen=True, slots=True)
class SiteStatus:
    """What this process sees of one site (for metrics and tests)."""

    site: str
    window: float
    max_connections: int
    held: int  # slots held: connections open (in use or idle in the pool) or opening
    cooling_down: bool
    backoffs: int


class Shaper:
    """The budgets of every site, for the delivery agents of one process."""

    def __init__(
        self,
        settings: Settings,
        state: ShapingState | None = None,
        *,
        owner: str = "local",
        clock: Callable[[], float] = time.time,
    ) -> None:
        shaping = settings.shaping
        self.enabled = shaping.enabled
        self.owner = owner
        self._state: ShapingState = state if state is not None else MemoryShapingState()
        self._clock = clock
        self._providers = {**PROVIDERS, **{k.lower(): v for k, v in shaping.providers.items()}}
        self._limits: dict[str, SiteLimits] = {
            site: SiteLimits.model_validate(values) for site, values in SITE_DEFAULTS.items()
        }
        self._limits.update({k.lower(): v for k, v in shaping.sites.items()})
        self._default = shaping.default
        self._cooldown = shaping.cooldown
        self._lease = shaping.slot_lease
        self._per_connection_cap = settings.delivery.messages_per_connection
        self._sites: OrderedDict[str, _Site] = OrderedDict()
        self._hosts: OrderedDict[str, str] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = asyncio.Event()

    # -- the rule -------------------------------------------------------------------------

    def site_of(self, mx: MXResult) -> str:
        """The site of a destination, from its primary MX host."""
        host = primary_mx_host(mx)
        site = self._hosts.get(host)
        if site is None:
            site = self._hosts[host] = site_for_host(host, self._providers)
            if len(self._hosts) > MAX_SITES:
                self._hosts.popitem(last=False)
        return site

    def site_of_host(self, host: str) -> str:
        return site_for_host(host, self._providers)

    def limits(self, site: str) -> SiteLimits:
        return self._limits.get(site, self._default)

    def messages_per_connection(self, site: str) -> int:
        if not self.enabled:
            return self._per_connection_cap
        own = self.limits(site).messages_per_connection
        return min(self._per_connection_cap, own) if own else self._per_connection_cap

    def _site(self, name: str) -> _Site:
        site = self._sites.get(name)
        if site is None:
            limits = self.limits(name)
            initial = min(limits.initial_connections, limits.max_connections)
            site = self._sites[name] = _Site(name, limits, float(initial))
            if len(self._sites) > MAX_SITES:
                for old_name, old in list(self._sites.items()):
                    if not old.held:
                        del self._sites[old_name]
                        break
        else:
            self._sites.move_to_end(name)
        return site

    @staticmethod
    def _limit(site: _Site) -> int:
        return max(1, min(site.limits.max_connections, int(site.window)))

    # -- connections ----------------------------------------------------------------------

    async def acquire(
        self,
        name: str,
        *,
        evict: Callable[[], Awaitable[bool]] | None = None,
        usable: Callable[[], bool] | None = None,
    ) -> SiteSlot | None:
        """A connection slot of site ``name``, taken BEFORE connecting; the caller ties it
        to the connection, whose closing releases it. Waits while the site is at its
        limit; meanwhile ``evict()`` may close one of this process's idle connections to
        the site (its slot then comes free), and when ``usable()`` becomes true (an idle
        connection the caller could reuse appeared) None is returned instead of a slot.

        Raises ``StorageError`` when the shared state stayed unreachable for ``DB_WAIT``."""
        if not self.enabled:
            return SiteSlot(name, None)
        site = self._site(name)
        db_failed_at: float | None = None
        waited = False
        while True:
            if usable is not None and usable():
                return None
            now = self._clock()
            await self._read_window(site, now)
            limit = self._limit(site)
            if site.held < limit:
                try:
                    taken = await self._state.acquire_slot(
                        site.name, limit, self.owner, now=now, lease=self._lease
                    )
                except StorageError:
                    db_failed_at = db_failed_at if db_failed_at is not None else now
                    if now - db_failed_at > DB_WAIT:
                        raise
                    taken = None
                else:
                    db_failed_at = None
                if taken is not None:
                    site.held += 1
                    return SiteSlot(name, taken, self._give_back)
            site.changed.clear()
            # Every slot is taken: one held by an idle connection of ours is better used
            # here (its release sets ``changed``).
            # (Not at the first look: an idle connection is often about to be reused.)
            evicted = evict is not None and waited and await evict()
            waited = True
            with contextlib.suppress(TimeoutError):
                # After an eviction: until its slot is back in the shared state.
                await asyncio.wait_for(site.changed.wait(), DB_WAIT if evicted else POLL)

    def _give_back(self, slot: SiteSlot) -> None:
        site = self._site(slot.site)
        site.held -= 1
        if slot.slot is None:
            return

        async def release() -> None:
            try:
                await self._state.release_slot(slot.site, slot.slot or 0, self.owner)
            finally:
                site.changed.set()

        self._spawn(release())

    def keep(self, slot: SiteSlot) -> bool:
        """Whether a connection under ``slot`` may stay open idle: not when the site's
        window was lowered below the slot (back-off), so that the window is reached."""
        if slot.slot is None or not self.enabled:
            return True
        return slot.slot < self._limit(self._site(slot.site))

    def notify(self, name: str) -> None:
        """Wake the tasks waiting for a slot of ``name`` (an idle connection appeared)."""
        site = self._sites.get(name)
        if site is not None:
            site.changed.set()

    @contextlib.asynccontextmanager
    async def connection(self, name: str) -> AsyncIterator[SiteSlot]:
        """Hold a slot of site ``name`` for the block (tests, simple callers)."""
        slot = await self.acquire(name)
        assert slot is not None
        try:
            yield slot
        finally:
            slot.release()

    async def _read_window(self, site: _Site, now: float) -> None:
        if now - site.window_read_at < WINDOW_REFRESH:
            return
        site.window_read_at = now
        with contextlib.suppress(StorageError):
            initial = float(min(site.limits.initial_connections, site.limits.max_connections))
            site.window, site.cooldown_until = await self._state.window(
                site.name, initial=initial, now=now
            )

    # -- messages -------------------------------------------------------------------------

    async def before_message(self, name: str) -> None:
        """Wait for the site's per-minute budget."""
        if not self.enabled:
            return
        site = self._site(name)
        per_minute = site.limits.messages_per_minute
        if per_minute <= 0:
            return
        while True:
            now = self._clock()
            if site.tokens > 0 and now < site.tokens_until:
                site.tokens -= 1
                return
            async with site.token_lock:
                now = self._clock()
                if site.tokens > 0 and now < site.tokens_until:
                    continue
                wanted = max(1, min(16, per_minute // 60))
                try:
                    granted, until = await self._state.take_tokens(
                        name, wanted, per_minute=per_minute, now=now
                    )
                except StorageError:
                    granted, until = 0, now + 1.0
                if granted:
                    site.tokens, site.tokens_until = granted, until
                    continue
                await asyncio.sleep(max(0.05, until - now))

    def observe(self, name: str, replies: Iterable[Reply]) -> None:
        """Feed back the server's replies of one transaction (or its refused greeting):
        a success grows the window, a 421 or 4.7.x halves it."""
        if not self.enabled:
            return
        site = self._site(name)
        success = backoff = False
        for reply in replies:
            if reply.code == 421 or (reply.enhanced or "").startswith("4.7."):
                backoff = site.backoff = True
            elif reply.positive:
                success = True
        now = self._clock()
        if backoff:
            if site.cooldown_until <= now:
                site.window = max(1.0, site.window / 2)
                site.cooldown_until = now + self._cooldown
                site.backoffs += 1
                log.info("site %s: back-off, window now %.1f", name, site.window)
        elif success:
            site.successes += 1
            if site.cooldown_until <= now:
                site.window = min(float(site.limits.max_connections), site.window + 1)
        if not site.flushing and (site.successes or site.backoff):
            site.flushing = True
            self._spawn(self._flush(site))

    async def _flush(self, site: _Site) -> None:
        await asyncio.sleep(FLUSH_DELAY)
        site.flushing = False
        successes, site.successes = site.successes, 0
        backoff, site.backoff = site.backoff, False
        now = self._clock()
        if backoff:
            await self._state.back_off(site.name, now=now, cooldown=self._cooldown)
        elif successes:
            limit = float(site.limits.max_connections)
            await self._state.grow(site.name, successes, limit=limit, now=now)
        site.window_read_at = -math.inf

    # -- life cycle -----------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        async def quietly() -> None:
            try:
                await work
            except StorageError as exc:
                log.warning("shaping state not updated: %s", exc)

        task = asyncio.get_running_loop().create_task(quietly())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def status(self) -> list[SiteStatus]:
        now = self._clock()
        return [
            SiteStatus(
                s.name,
                s.window,
                s.limits.max_connections,
                s.held,
                s.cooldown_until > now,
                s.backoffs,
            )
            for s in self._sites.values()
        ]

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Renew this process's slot leases until ``stop``, and after it until ``close()``
        (a stopping worker still has connections open: their slots stay its own until the
        pool has closed them); ``close()`` gives back whatever is left."""
        renew_every = self._lease / 3
        renewed = self._clock()
        while not self._closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), 1.0)
            now = self._clock()
            if now - renewed >= renew_every and not self._closed.is_set():
                renewed = now
                if any(s.held for s in self._sites.values()):
                    with contextlib.suppress(StorageError):
                        await self._state.renew(self.owner, now=now, lease=self._lease)

    async def close(self) -> None:
        """Give back every slot of this process (graceful stop, after the pool closed
        its connections) and end ``run``."""
        self._closed.set()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        with contextlib.suppress(StorageError):
            await self._state.release_all(self.owner)


__all__ = [
    "PROVIDERS",
    "SITE_DEFAULTS",
    "MemoryShapingState",
    "Shaper",
    "ShapingState",
    "SiteSlot",
    "SiteStatus",
    "primary_mx_host",
    "registrable_part",
    "site_for_host",
]
