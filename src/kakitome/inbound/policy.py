"""Decisions of the listeners, as verdict objects: which recipients the MX takes, and why.

The SMTP state machine (``kakitome.inbound.protocol``) knows nothing of domains, routes or
the database; it asks this policy at RCPT time and turns the ``Verdict`` into a reply.

The MX takes mail only for (never an open relay):

- the VERP return paths of messages we sent (an address some message of ours went out
  with as its envelope sender; ``InboundStore.is_return_path``) — bounces;
- the domains in ``inbound.return_path_domains`` (any local part) — bounces, complaints
  and TLS reports sent to our own reporting addresses;
- the addresses of newsletter lists (``ListService.is_list_address``), when the service
  is given one — blank-mail sign-up (空メール) and mailto unsubscribe;
- the domains in ``inbound.domains``, by the first matching route in ``inbound.routes``:
  ``reject`` refuses at RCPT, ``hold`` and ``forward`` accept. With no route, mail for an
  inbound domain is held.

Domains and routes are read per recipient from ``current()`` when the service passes it
(``LiveSettings``: settings changed in the UI or the API apply to the next RCPT, without a
restart); otherwise from the settings given at start.

Bare ``postmaster`` (no domain, RFC 5321 §4.5.1) is this server's postmaster: taken as
``postmaster@<host name>`` when the host name is an inbound domain, else as ``postmaster@``
the first inbound domain, and routed as that address is (held with no inbound domain).

Anything else gets 550 5.7.1 (relaying denied). Submission (587/465) takes any recipient
from an authenticated client, and nothing from anyone else (aiosmtpd's ``auth_required``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from kakitome.config import InboundRoute, InboundSettings

__all__ = ["Action", "InboundPolicy", "RecipientClass", "Verdict", "match_route"]


class Action(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"  # 5xx
    DEFER = "defer"  # 4xx
    DISCONNECT = "disconnect"  # 421 and close


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    code: int
    enhanced: str
    text: str

    @property
    def reply(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"

    @classmethod
    def accept(cls, text: str = "OK") -> Verdict:
        return cls(Action.ACCEPT, 250, "2.1.5", text)

    @classmethod
    def reject(cls, code: int, enhanced: str, text: str) -> Verdict:
        return cls(Action.REJECT, code, enhanced, text)

    @classmethod
    def defer(cls, code: int, enhanced: str, text: str) -> Verdict:
        return cls(Action.DEFER, code, enhanced, text)


class RecipientClass(StrEnum):
    RETURN_PATH = "return_path"  # a VERP address or a return-path domain: bounces, reports
    ROUTE = "route"  # an inbound domain, by route
    LIST = "list"  # a newsletter list address (issue 7): blank-mail sign-up, mailto unsubscribe


@dataclass(frozen=True, slots=True)
class RecipientDecision:
    verdict: Verdict
    kind: RecipientClass | None = None
    route: InboundRoute | None = None
    # The recipient as the envelope should record it, when the policy qualified it (bare
    # ``postmaster``); None: as the client sent it.
    address: str | None = None


RELAY_DENIED = Verdict.reject(550, "5.7.1", "relaying denied: not a domain of this server")
NO_SUCH_USER = Verdict.reject(550, "5.1.1", "no such recipient here")
HOLD_ROUTE = InboundRoute(match="*", action="hold")
POSTMASTER = "postmaster"
LIST_CACHE_SECONDS = 5.0
LIST_CACHE_SIZE = 10_000


def match_route(routes: Sequence[InboundRoute], address: str) -> InboundRoute | None:
    """The first route matching ``address`` (lower-case), or None."""
    local, _, domain = address.lower().rpartition("@")
    for route in routes:
        pattern = route.match.strip().lower()
        if pattern == "*":
            return route
        if "@" in pattern and not pattern.startswith("@"):
            if pattern == f"{local}@{domain}":
                return route
        elif pattern.lstrip("@") == domain:
            return route
    return None


class InboundPolicy:
    """RCPT decisions for the MX."""

    def __init__(
        self,
        settings: InboundSettings,
        is_return_path: Callable[[str], Awaitable[bool]],
        is_list_address: Callable[[str, str], Awaitable[bool]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        current: Callable[[], InboundSettings] | None = None,
        hostname: str | None = None,
    ) -> None:
        self._settings = settings
        # Our host name (greeting, Received): the domain of bare ``postmaster`` when it is
        # one of the inbound domains.
        self._hostname = (hostname or settings.hostname or "").lower().rstrip(".")
        self._current = current
        self._is_return_path = is_return_path
        # (local part, domain) -> is it a list's address? (ListService.is_list_address)
        self._is_list_address = is_list_address
        # Its answers, for LIST_CACHE_SECONDS: a query per RCPT otherwise (the MX's largest
        # cost per message under load). A list made a moment ago may be refused for as long.
        self._list_cache: OrderedDict[tuple[str, str], tuple[float, bool]] = OrderedDict()
        self._clock = clock
        self._domains = set(settings.domains)
        self._return_path_domains = set(settings.return_path_domains)

    def _refresh(self) -> InboundSettings:
        """The settings in force now (the domain sets are rebuilt when they changed)."""
        if self._current is not None:
            settings = self._current()
            if settings is not self._settings:
                self._settings = settings
                self._domains = set(settings.domains)
                self._return_path_domains = set(settings.return_path_domains)
        return self._settings

    async def check_recipient(self, address: str) -> RecipientDecision:
        settings = self._refresh()
        if address.lower() == POSTMASTER:
            return await self._postmaster(settings)
        domain = address.rpartition("@")[2].lower().rstrip(".")
        if not domain:
            return RecipientDecision(NO_SUCH_USER)
        if domain in self._return_path_domains:
            return RecipientDecision(Verdict.accept(), RecipientClass.RETURN_PATH)
        # Newsletter lists (issue 7): <list>@<mail_domain>, <list>+subscribe/+unsubscribe
        # and the List-Unsubscribe mailto <list>+u-<token>@... are taken whatever the
        # routes say; any other address of a list's domain falls through as before.
        if self._is_list_address is not None:
            local = address.rpartition("@")[0]
            if local and await self._list_address(local, domain):
                return RecipientDecision(Verdict.accept(), RecipientClass.LIST)
        if domain in self._domains:
            route = match_route(settings.routes, address) or HOLD_ROUTE
            if route.action == "reject":
                return RecipientDecision(NO_SUCH_USER, RecipientClass.ROUTE, route)
            return RecipientDecision(Verdict.accept(), RecipientClass.ROUTE, route)
        if await self._is_return_path(address):
            return RecipientDecision(Verdict.accept(), RecipientClass.RETURN_PATH)
        return RecipientDecision(RELAY_DENIED)

    async def _postmaster(self, settings: InboundSettings) -> RecipientDecision:
        """Bare ``postmaster`` (RFC 5321 §4.5.1: MUST be accepted, case-insensitive, without
        a domain): this server's postmaster, i.e. ``postmaster@`` the host name when it is
        an inbound domain, else the first inbound domain, and then wherever mail for that
        address goes (its route, held by default). With no inbound domain it is held."""
        if self._hostname and self._hostname in self._domains:
            domain = self._hostname
        elif settings.domains:
            domain = settings.domains[0]
        else:
            qualified = f"{POSTMASTER}@{self._hostname}" if self._hostname else POSTMASTER
            return RecipientDecision(
                Verdict.accept(), RecipientClass.ROUTE, HOLD_ROUTE, address=qualified
            )
        qualified = f"{POSTMASTER}@{domain}"
        decision = await self.check_recipient(qualified)
        return replace(decision, address=qualified)

    async def _list_address(self, local: str, domain: str) -> bool:
        assert self._is_list_address is not None
        key = (local.lower(), domain)
        now = self._clock()
        found = self._list_cache.get(key)
        if found is not None and found[0] > now:
            return found[1]
        answer = await self._is_list_address(local, domain)
        self._list_cache[key] = (now + LIST_CACHE_SECONDS, answer)
        self._list_cache.move_to_end(key)
        while len(self._list_cache) > LIST_CACHE_SIZE:
            self._list_cache.popitem(last=False)
        return answer
