"""Which From domains an authenticated submission user may send: the configured sending
domains (``kakitome domain add``), and no others.

Submission (587/465) must not let a holder of SMTP credentials put any domain in From:
such mail would leave signed by nothing of ours, or be refused by the injector only when
``domains.allow_unconfigured_from`` is off. So the listener checks, whatever that setting
says:

- at MAIL FROM: the envelope sender's domain (the null sender ``<>`` is allowed);
- at DATA: every address in the ``From`` field(s).

Anything else gets ``550 5.7.1`` naming the domain and what to do. The list is read from
the database and kept for ``ttl`` seconds; a domain not in the list is looked up again at
most every ``miss_interval`` seconds (so a domain just added works within seconds, and a
client trying many domains costs one query per interval).

Per-user lists (a user allowed only some of the sending domains) need a column on
``smtp_users``; the ``allows`` method takes the user name so that it can be added here.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Awaitable, Callable, Iterable
from email.parser import BytesHeaderParser
from email.policy import compat32

from kakitome.addresses import domain_to_ascii
from kakitome.errors import AddressError

__all__ = ["SendingDomains", "from_domains", "refusal"]


def _ascii(domain: str) -> str | None:
    try:
        return domain_to_ascii(domain.strip().rstrip("."))
    except (AddressError, UnicodeError, ValueError):
        return None


def from_domains(content: bytes) -> list[str] | None:
    """The domains of the addresses in the message's From field(s); None when there is no
    From address to read (the injector then refuses the message with its own reason)."""
    end = content.find(b"\r\n\r\n")
    head = content if end < 0 else content[: end + 4]
    parsed = BytesHeaderParser(policy=compat32).parsebytes(head)
    fields = [str(v) for v in parsed.get_all("From", [])]
    addresses = [a for _, a in email.utils.getaddresses(fields) if "@" in a]
    if not addresses:
        return None
    return [a.rpartition("@")[2] for a in addresses]


def refusal(domain: str, where: str) -> str:
    return (
        f"550 5.7.1 Sender domain {domain} not allowed for this user ({where}): "
        "only configured sending domains may be used; add it with "
        f"`kakitome domain add {domain}`"
    )


class SendingDomains:
    """The configured sending domains, cached."""

    def __init__(
        self,
        load: Callable[[], Awaitable[Iterable[str]]],
        *,
        ttl: float = 60.0,
        miss_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._ttl = ttl
        self._miss_interval = miss_interval
        self._clock = clock
        self._names: frozenset[str] = frozenset()
        self._loaded_at: float | None = None

    async def _refresh(self) -> None:
        self._names = frozenset(n for n in (_ascii(x) for x in await self._load()) if n)
        self._loaded_at = self._clock()

    async def allows(self, username: str, domain: str) -> bool:
        """May ``username`` send From ``domain``? (StorageError when the list cannot be
        read and is not cached.)"""
        name = _ascii(domain)
        if name is None:
            return False
        age = None if self._loaded_at is None else self._clock() - self._loaded_at
        if (
            age is None
            or age > self._ttl
            or (name not in self._names and age > self._miss_interval)
        ):
            await self._refresh()
        return name in self._names
