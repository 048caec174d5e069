"""Shaping per destination site: how many connections, how many messages per connection
and per minute the delivery agents of ALL worker processes may use towards one receiver.

Talks to: nothing on the network. It keeps its shared state in a ``ShapingState``: in
this process (``MemoryShapingState``, enough for SQLite's single worker process) or in
the database (``kakitome.store.shaping_store.ShapingStore``, for many workers on one
PostgreSQL). Trusts: the SMTP replies the agent reports (only servers' replies, never
the agent's own policy deferrals).

**The site rule.** A destination's site is derived from its *primary MX host* (lowest
preference, then name), so the thousands of domains hosted at one provider share one
budget:

1. the longest suffix of the MX host name found in the providers table (``PROVIDERS``
   plus ``shaping.providers``) gives the site: ``aspmx.l.google.com`` → ``google.com``,
   ``example-com.mail.protection.outlook.com`` → ``outlook.com``,
   ``mta7.am0.yahoodns.net`` → ``yahoo.com``, ``mfsmax.docomo.ne.jp`` → ``docomo.ne.jp``;
2. otherwise the host's registrable part: its last two labels, or its last three when
   the top-level label is a two-letter country code and the second-level label is a
   generic one such as ``co``, ``ne``, ``or``, ``ac``, ``com`` (``mx1.example.co.jp`` →
   ``example.co.jp``, ``mx.example.com`` → ``example.com``). This is an approximation of
   the Public Suffix List, chosen for having no data file to update; a provider it gets
   wrong is one line in ``shaping.providers``.

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

A slot stays with its process while the pool keeps the connection idle (``delivery.
idle_timeout`` and a little more), so a pooled connection is counted as open, and the
next batch to the site reuses slot and connection without asking the database.

Limits: at most ``MAX_SITES`` sites are remembered in this process (least recently used
out first); a database that stays unreachable for ``DB_WAIT`` seconds while a slot is
needed raises ``StorageError`` (the agent then defers the batch: never a connection over
the limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Iterable, Mapping
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
    return registrable_part(name)


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


@dataclass
class Permit:
    """One connection slot of a site, held while a connection to it is in use."""

    site: str
    slot: int | None
    used: bool = False  # a message went out under it: a connection was opened
    # The pool key of the connection left idle under this slot (set by the agent), and
    # the key of an idle connection the agent must close first (its slot was taken over).
    key: Any = None
    evict: Any = None


@dataclass
class _Site:
    name: str
    limits: SiteLimits
    window: float
    cooldown_until: float = 0.0
    window_read_at: float = -math.inf
    active: int = 0
    # Slots kept with an idle pooled connection: (slot, since, pool key of the connection).
    parked: list[tuple[int, float, Any]] = field(default_factory=list)
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
    in_use: int
    parked: int
    cooling_down: bool
    backoffs: int


_current: contextvars.ContextVar[Permit | None] = contextvars.ContextVar(
    "kakitome_shaping_permit", default=None
)


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
        idle = settings.delivery.idle_timeout
        # A parked slot outlives the pool's idle connection: idle timeout, the pool's
        # reaper interval, and a second for the QUIT.
        self._park = idle + max(0.05, min(idle / 2, 5.0)) + 1.0 if idle > 0 else 1.0
        self._sites: OrderedDict[str, _Site] = OrderedDict()
        self._hosts: OrderedDict[str, str] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()

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
                    if not old.active and not old.parked:
                        del self._sites[old_name]
                        break
        else:
            self._sites.move_to_end(name)
        return site

    @staticmethod
    def _limit(site: _Site) -> int:
        return max(1, min(site.limits.max_connections, int(site.window)))

    # -- connections ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def connection(self, name: str, keys: Collection[Any] = ()) -> AsyncIterator[Permit]:
        """Hold a connection slot of site ``name`` (waiting for one) while in use, for a
        destination whose connections would have one of the pool ``keys``.

        A slot parked with an idle connection under one of ``keys`` is taken first (the
        agent will reuse that connection). At the site's limit, a slot parked with an idle
        connection elsewhere is taken over: ``permit.evict`` names the pool key whose idle
        connection the agent must close before opening its own."""
        if not self.enabled:
            yield Permit(name, None, used=True)
            return
        site = self._site(name)
        slot, inherited, evict = await self._acquire(site, keys)
        site.active += 1
        # A slot taken from the parked ones comes with its idle connection (``key``).
        permit = Permit(name, slot, key=inherited, evict=evict)
        token = _current.set(permit)
        try:
            yield permit
        finally:
            _current.reset(token)
            site.active -= 1
            if permit.used or permit.key is not None:
                # Still an open (idle) connection under this slot: keep it with it.
                site.parked.append((slot, self._clock(), permit.key))
            else:
                self._spawn(self._state.release_slot(name, slot, self.owner))
            site.changed.set()

    async def _acquire(self, site: _Site, keys: Collection[Any]) -> tuple[int, Any, Any]:
        db_failed_at: float | None = None
        while True:
            now = self._clock()
            self._expire_parked(site, now)
            await self._read_window(site, now)
            limit = self._limit(site)
            for entry in list(site.parked):
                if entry[0] >= limit:  # above a lowered window: give it back
                    site.parked.remove(entry)
                    self._spawn(self._state.release_slot(site.name, entry[0], self.owner))
            for entry in reversed(site.parked):
                key = entry[2]
                if key is None or key in keys:
                    site.parked.remove(entry)
                    return entry[0], key, None
            if site.parked and site.active + len(site.parked) >= limit:
                slot, _, key = site.parked.pop(0)  # the oldest idle connection goes
                return slot, None, key
            if site.active + len(site.parked) < limit:
                try:
                    slot_taken = await self._state.acquire_slot(
                        site.name, limit, self.owner, now=now, lease=self._lease
                    )
                except StorageError:
                    db_failed_at = db_failed_at if db_failed_at is not None else now
                    if now - db_failed_at > DB_WAIT:
                        raise
                    slot_taken = None
                else:
                    db_failed_at = None
                if slot_taken is not None:
                    return slot_taken, None, None
            site.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(site.changed.wait(), POLL)

    async def _read_window(self, site: _Site, now: float) -> None:
        if now - site.window_read_at < WINDOW_REFRESH:
            return
        site.window_read_at = now
        with contextlib.suppress(StorageError):
            initial = float(min(site.limits.initial_connections, site.limits.max_connections))
            site.window, site.cooldown_until = await self._state.window(
                site.name, initial=initial, now=now
            )

    def _expire_parked(self, site: _Site, now: float) -> None:
        keep = []
        for slot, since, key in site.parked:
            if now - since > self._park:
                self._spawn(self._state.release_slot(site.name, slot, self.owner))
            else:
                keep.append((slot, since, key))
        site.parked = keep

    # -- messages -------------------------------------------------------------------------

    async def before_message(self, name: str) -> None:
        """Wait for the site's per-minute budget; marks the current permit used."""
        permit = _current.get()
        if permit is not None:
            permit.used = True
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
                s.active,
                len(s.parked),
                s.cooldown_until > now,
                s.backoffs,
            )
            for s in self._sites.values()
        ]

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: renew this process's slot leases, give back slots parked for
        longer than a pooled connection lives; then release every slot."""
        renew_every = self._lease / 3
        renewed = self._clock()
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                now = self._clock()
                for site in list(self._sites.values()):
                    self._expire_parked(site, now)
                if now - renewed >= renew_every:
                    renewed = now
                    if any(s.active or s.parked for s in self._sites.values()):
                        with contextlib.suppress(StorageError):
                            await self._state.renew(self.owner, now=now, lease=self._lease)
        finally:
            await self.close()

    async def close(self) -> None:
        """Give back every slot of this process (graceful stop)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for site in self._sites.values():
            site.parked.clear()
        with contextlib.suppress(StorageError):
            await self._state.release_all(self.owner)


__all__ = [
    "PROVIDERS",
    "SITE_DEFAULTS",
    "MemoryShapingState",
    "Permit",
    "Shaper",
    "ShapingState",
    "SiteStatus",
    "primary_mx_host",
    "registrable_part",
    "site_for_host",
]
