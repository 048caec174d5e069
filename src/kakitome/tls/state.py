"""Where TLS memory lives: the MTA-STS cache, MX host history, TLS events, TLS-RPT counts.

``TLSState`` is the interface the delivery agent, the policy resolver and the TLS-RPT
reporter use. ``MemoryTLSState`` keeps everything in this process (tests, and agents
without a database); ``kakitome.tls.store.TLSStore`` keeps it in the database so
that the MTA-STS cache survives restarts (T22) and counts from many workers add up.

Talks to: nothing (this module); trusts what the agent observed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from kakitome.tls.history import HostHistory
from kakitome.tls.mta_sts import CachedStsPolicy
from kakitome.tls.tlsrpt import SessionRecord


class TLSState(Protocol):
    async def get_sts_policy(self, domain: str) -> CachedStsPolicy | None: ...

    async def put_sts_policy(self, cached: CachedStsPolicy) -> None: ...

    async def get_host_history(self, mx_host: str) -> HostHistory | None: ...

    async def put_host_history(self, history: HostHistory) -> None: ...

    async def add_tls_event(self, kind: str, data: dict[str, Any], now: float) -> None: ...

    async def record_sessions(self, sessions: Sequence[SessionRecord]) -> None: ...

    async def tlsrpt_pending(self, before_day: str) -> list[tuple[str, str]]: ...

    async def tlsrpt_sessions(self, domain: str, day: str) -> list[SessionRecord]: ...

    async def tlsrpt_mark_reported(
        self, domain: str, day: str, report_id: str, destinations: Sequence[str], now: float
    ) -> None: ...


def session_key(s: SessionRecord) -> tuple[Any, ...]:
    return (s.day, s.policy, s.mx_host, s.receiving_ip, s.sending_ip, s.result_type, s.reason_code)


@dataclass
class MemoryTLSState:
    """Everything in memory; lost at exit. Bounded only by what a test puts in."""

    sts: dict[str, CachedStsPolicy] = field(default_factory=dict)
    hosts: dict[str, HostHistory] = field(default_factory=dict)
    events: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)
    sessions: dict[tuple[Any, ...], SessionRecord] = field(default_factory=dict)
    reported: dict[tuple[str, str], tuple[str, tuple[str, ...], float]] = field(
        default_factory=dict
    )

    async def get_sts_policy(self, domain: str) -> CachedStsPolicy | None:
        return self.sts.get(domain)

    async def put_sts_policy(self, cached: CachedStsPolicy) -> None:
        self.sts[cached.domain] = cached

    async def get_host_history(self, mx_host: str) -> HostHistory | None:
        return self.hosts.get(mx_host)

    async def put_host_history(self, history: HostHistory) -> None:
        self.hosts[history.mx_host] = history

    async def add_tls_event(self, kind: str, data: dict[str, Any], now: float) -> None:
        self.events.append((kind, data, now))
        del self.events[:-10_000]

    async def record_sessions(self, sessions: Sequence[SessionRecord]) -> None:
        for s in sessions:
            key = session_key(s)
            old = self.sessions.get(key)
            self.sessions[key] = s if old is None else replace(old, count=old.count + s.count)

    async def tlsrpt_pending(self, before_day: str) -> list[tuple[str, str]]:
        pairs = {(s.policy.domain, s.day) for s in self.sessions.values() if s.day < before_day}
        return sorted(pairs - set(self.reported))

    async def tlsrpt_sessions(self, domain: str, day: str) -> list[SessionRecord]:
        return [s for s in self.sessions.values() if s.policy.domain == domain and s.day == day]

    async def tlsrpt_mark_reported(
        self, domain: str, day: str, report_id: str, destinations: Sequence[str], now: float
    ) -> None:
        self.reported[(domain, day)] = (report_id, tuple(destinations), now)


__all__ = ["MemoryTLSState", "TLSState"]
