"""List checks: what share of a list's recipients would get encrypted, verified mail.

Talks to: a file (CSV with an ``email`` column, or one address per line) and, through
``checker.service.Checker``, DNS and the MX hosts of the list's domains.

Trusts: nothing in the file: each line is validated with ``kakitome.addresses``; a bad one
is reported with its line number and skipped, the rest is checked.

Limits: memory grows with the number of distinct domains, not addresses (addresses are
counted per domain as they are read); at most ``MAX_REPORTED_ERRORS`` bad lines are
listed (all are counted). Domains are checked by ``checker.concurrency`` workers; probes
are shared per MX host and bounded per IP (see ``checker.service``).
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections import Counter
from collections.abc import AsyncIterable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kakitome.addresses import parse_address
from kakitome.checker.checks import run_checks
from kakitome.checker.report import DomainReport, Transport, downgrade_protection
from kakitome.checker.service import Checker
from kakitome.errors import AddressError

MAX_REPORTED_ERRORS = 1000
EMAIL_COLUMNS = ("email", "e-mail", "mail", "address", "email_address", "メールアドレス")


@dataclass(frozen=True, slots=True)
class BadLine:
    line: int
    text: str
    reason: str


@dataclass(slots=True)
class AddressList:
    """Recipients counted per domain, and the lines that were not addresses."""

    domains: Counter[str] = field(default_factory=Counter)
    bad: list[BadLine] = field(default_factory=list)
    bad_count: int = 0
    total: int = 0

    def add_bad(self, line: int, text: str, reason: str) -> None:
        self.bad_count += 1
        if len(self.bad) < MAX_REPORTED_ERRORS:
            self.bad.append(BadLine(line, text[:200], reason))


def _rows(text: str) -> Iterator[tuple[int, str]]:
    """(line number, address text) from CSV with an email column, or one per line."""
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    header = [h.strip().lower() for h in next(csv.reader([first]))] if first else []
    column = next((i for i, h in enumerate(header) if h in EMAIL_COLUMNS), None)
    if column is None:
        for number, line in enumerate(lines, start=1):
            value = line.strip()
            if value and not value.startswith("#"):
                yield number, value
        return
    reader = csv.reader(io.StringIO(text))
    for row in reader:
        number = reader.line_num
        if number == 1 or not any(cell.strip() for cell in row):
            continue
        yield number, row[column].strip() if column < len(row) else ""


def read_addresses(text: str) -> AddressList:
    """Parse a list; bad lines are kept with their line numbers."""
    result = AddressList()
    for number, value in _rows(text):
        try:
            mailbox = parse_address(value)
        except AddressError as exc:
            result.add_bad(number, value, str(exc))
            continue
        result.domains[mailbox.domain] += 1
        result.total += 1
    return result


async def collect_addresses(addresses: AsyncIterable[str]) -> AddressList:
    """Count addresses from a source that validated them already (a stored list) per
    domain; one that does not parse now is reported with its position (1-based)."""
    result = AddressList()
    number = 0
    async for value in addresses:
        number += 1
        try:
            mailbox = parse_address(value)
        except AddressError as exc:
            result.add_bad(number, value, str(exc))
            continue
        result.domains[mailbox.domain] += 1
        result.total += 1
    return result


def read_address_file(path: Path) -> AddressList:
    return read_addresses(path.read_text(encoding="utf-8-sig", errors="replace"))


@dataclass(frozen=True, slots=True)
class DomainSummary:
    domain: str
    recipients: int
    transport: Transport
    reason: str
    grade: str | None
    mta_sts: bool
    dane: bool
    mx: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "recipients": self.recipients,
            "transport": self.transport.value,
            "reason": self.reason,
            "grade": self.grade,
            "mta_sts": self.mta_sts,
            "dane": self.dane,
            "mx": list(self.mx),
        }


@dataclass(slots=True)
class ListReport:
    addresses: AddressList
    domains: list[DomainSummary]
    stats: dict[str, Any] = field(default_factory=dict)

    def shares(self) -> dict[str, dict[str, float | int]]:
        total = self.addresses.total
        counts = Counter[str]()
        for summary in self.domains:
            counts[summary.transport.value] += summary.recipients
        return {
            kind.value: {
                "recipients": counts[kind.value],
                "share": round(counts[kind.value] / total, 4) if total else 0.0,
            }
            for kind in Transport
        }

    def coverage(self) -> dict[str, dict[str, float | int]]:
        total = self.addresses.total
        out: dict[str, dict[str, float | int]] = {}
        for name in ("mta_sts", "dane"):
            recipients = sum(s.recipients for s in self.domains if getattr(s, name))
            domains = sum(1 for s in self.domains if getattr(s, name))
            out[name] = {
                "recipients": recipients,
                "share": round(recipients / total, 4) if total else 0.0,
                "domains": domains,
            }
        return out

    def without_starttls(self) -> list[DomainSummary]:
        """Domains whose mail would travel in plaintext, most recipients first."""
        plain = [s for s in self.domains if s.transport is Transport.PLAINTEXT]
        return sorted(plain, key=lambda s: (-s.recipients, s.domain))

    def undeliverable(self) -> list[DomainSummary]:
        bad = [s for s in self.domains if s.transport is Transport.UNDELIVERABLE]
        return sorted(bad, key=lambda s: (-s.recipients, s.domain))

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipients": self.addresses.total,
            "domains": len(self.addresses.domains),
            "transport": self.shares(),
            "coverage": self.coverage(),
            "without_starttls": [s.to_dict() for s in self.without_starttls()],
            "undeliverable": [s.to_dict() for s in self.undeliverable()],
            "invalid_lines": {
                "count": self.addresses.bad_count,
                "lines": [
                    {"line": b.line, "text": b.text, "reason": b.reason} for b in self.addresses.bad
                ],
            },
            "per_domain": [s.to_dict() for s in sorted(self.domains, key=lambda s: s.domain)],
            "stats": self.stats,
        }


def summarise(report: DomainReport, recipients: int) -> DomainSummary:
    kind, reason = report.transport
    protection = downgrade_protection(report.facts)
    letter, _ = report.grade
    return DomainSummary(
        domain=report.domain,
        recipients=recipients,
        transport=kind,
        reason=reason,
        grade=letter,
        mta_sts=protection["mta_sts"],
        dane=protection["dane"],
        mx=tuple(h.name for h in report.facts.hosts),
    )


async def check_list(
    addresses: AddressList,
    checker: Checker,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> ListReport:
    """Check every domain of the list (light depth); ``progress(done, total)`` after each."""
    queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
    for item in sorted(addresses.domains.items()):
        queue.put_nowait(item)
    total = queue.qsize()
    summaries: list[DomainSummary] = []
    done = 0

    async def worker() -> None:
        nonlocal done
        while True:
            try:
                domain, count = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            facts = await checker.domain_facts(domain, full=False)
            report = DomainReport(facts, tuple(run_checks(facts, checker.options())))
            summaries.append(summarise(report, count))
            done += 1
            if progress is not None:
                progress(done, total)

    workers = min(checker.settings.checker.concurrency, max(total, 1))
    await asyncio.gather(*(worker() for _ in range(workers)))
    stats = checker.stats
    return ListReport(
        addresses,
        summaries,
        {
            "probes": stats.probes,
            "domains_resolved": stats.domains_resolved,
            "policy_fetches": stats.policy_fetches,
            "cache_hits": stats.cache_hits,
            "mx_sites": len(_sites(summaries)),
        },
    )


def _sites(summaries: Iterable[DomainSummary]) -> set[tuple[str, ...]]:
    return {s.mx for s in summaries if s.mx}
