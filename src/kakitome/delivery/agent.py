"""The delivery agent: one attempt at a batch (one destination, many messages).

This is the batch loop. Per batch: resolve the MX hosts (null MX, implicit MX), resolve
the TLS policy per MX host (``tls.resolution``: table, DANE, MTA-STS, history, default),
split off the messages with ``TLS-Required: No`` (and not REQUIRETLS, which wins: T30)
to go under a policy lowered to ``may`` everywhere, and cut every message into
transactions of at most ``recipients_per_transaction`` recipients. Per destination, up to
``per_destination_concurrency`` workers take transactions in turn, each on one connection:
a pooled one when one may still be used, else a new one to the first usable MX address in
MX order, under a site slot (``delivery.shaping``) taken before connecting.

Talks to: the DNS resolver (MX); the secure connection (``delivery.connect``), which does
all of the talking to mail exchangers and owns every TLS decision — the levels, STARTTLS,
DANE, MTA-STS, certificate judgement, and the one way to plaintext
(``delivery.downgrade``, T43); the connection pool and the site shaper; the caller's
progress callback, told of each transaction's results as soon as the server answered.

Trusts: the connection's TLS receipt and its ``secure`` flag. Under ``encrypt`` and above
a host that fails its policy is skipped for the rest of the attempt and the other MX hosts
are tried before the 4.7.x deferral (T7). REQUIRETLS (T29): a message flagged
``requiretls`` goes only over a connection to a host found securely (DANE or MTA-STS
enforce), with a verified certificate, that advertised REQUIRETLS; otherwise each
recipient bounces with 5.7.30 (``delivery.outcomes``).

Every result carries a TLS receipt (T8) naming the level, the policy source and the
RFC 8460 result of its session; at the end of the batch the TLS-RPT counts (T26) and what
each host showed (stripping detection) are written to the TLS state (``TLSBook``).

Limits: at most ``per_destination_concurrency`` connections in use per destination;
``recipients_per_transaction`` RCPTs per transaction; ``messages_per_connection`` per
connection (and the site's own limit); a pooled connection idle for ``PROBE_AFTER_IDLE``
seconds is probed with RSET; a reused connection that dies before anything was accepted
is replaced once; connections wait on the progress callback (the worker's back-pressure).

It never decides when to retry and never raises for delivery problems: every recipient
of every message gets exactly one ``RecipientResult`` (delivered, deferred or bounced).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog

from kakitome.config import Settings
from kakitome.delivery.connect import Connector
from kakitome.delivery.outcomes import (
    HostFailure,
    in_batch_order,
    internal_error,
    outcome_for,
    refusal_before_sending,
    results_for,
    summarise,
)
from kakitome.delivery.pool import Connection, ConnectionPool
from kakitome.delivery.shaping import Shaper, SiteSlot
from kakitome.delivery.tls_ledger import TLSLedger
from kakitome.delivery.types import (
    Batch,
    MXUsed,
    OutboundMessage,
    Outcome,
    Recipient,
    RecipientResult,
)
from kakitome.dns.resolver import Resolver
from kakitome.dns.types import MXResult
from kakitome.errors import DeliveryError, PermanentFailure, StorageError
from kakitome.smtp.client import MailSpec, RcptSpec
from kakitome.smtp.exceptions import SMTPError, SMTPTimeout
from kakitome.smtp.replies import Reply
from kakitome.tls.contexts import ClientContexts, UnverifiedCertificates
from kakitome.tls.resolution import DestinationPolicy, HostPolicy, PolicyResolver
from kakitome.tls.state import TLSState

log = logging.getLogger(__name__)

# Told of each transaction's results as they come; may return an awaitable that the
# connection awaits before its next transaction (the worker's back-pressure when results
# are delivered faster than they can be recorded).
Progress = Callable[[Sequence[RecipientResult]], Awaitable[None] | None]

# A pooled connection idle for longer than this is probed with RSET before it is used (as
# Postfix caches connections for 2 s). One back sooner is used at once: a peer that closed
# it shows as end-of-file in the pool, and one that dies at MAIL is replaced (_run_job).
PROBE_AFTER_IDLE = 2.0

_TLS_REQUIRED_NO = re.compile(rb"(?im)^TLS-Required[ \t]*:[ \t]*No[ \t]*\r?$")


def tls_required_no(content: bytes) -> bool:
    """True when the message's header section has ``TLS-Required: No`` (RFC 8689 §5)."""
    head = content.split(b"\r\n\r\n", 1)[0]
    return bool(_TLS_REQUIRED_NO.search(head))


@dataclass(frozen=True, slots=True)
class _Job:
    message: OutboundMessage
    recipients: tuple[Recipient, ...]


@dataclass
class _Attempt:
    """What one deliver() call has learned about the destination so far."""

    batch: Batch
    destination: DestinationPolicy
    mx: MXResult
    ledger: TLSLedger  # TLS-RPT sessions, host observations, TLS-broken addresses
    unreachable: set[str] = field(default_factory=set)  # IPs
    policy_failed: dict[str, HostFailure] = field(default_factory=dict)  # MX host -> why
    failures: list[HostFailure] = field(default_factory=list)
    results: list[RecipientResult] = field(default_factory=list)
    site: str = ""  # the destination's site (delivery.shaping)
    progress: Progress | None = None  # told of each transaction's results as they come

    def candidates(self) -> list[tuple[MXUsed, HostPolicy]]:
        """Every MX address of the destination with its host's policy, in MX order."""
        return [
            (MXUsed(host.name, ip), self.destination.host(host.name))
            for host in self.mx.hosts
            for ip in host.addresses
        ]


class DeliveryAgent:
    """Delivers batches; one instance per worker process, shared by all destinations."""

    def __init__(
        self,
        settings: Settings,
        resolver: Resolver,
        pool: ConnectionPool,
        *,
        contexts: ClientContexts | None = None,
        unverified: UnverifiedCertificates | None = None,
        tls_state: TLSState | None = None,
        shaping: Shaper | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.connector = Connector(
            settings,
            pool,
            contexts=contexts,
            unverified=unverified,
            tls_state=tls_state,
            clock=clock,
        )
        self.resolver = resolver
        self.pool = pool
        self.contexts = self.connector.contexts
        self.unverified = self.connector.unverified
        self.state: TLSState = self.connector.state
        self.clock = clock
        # Budgets per destination site; in-process unless the worker passes a shared one.
        self.shaping = shaping if shaping is not None else Shaper(settings)
        self.policies = PolicyResolver(settings, resolver, self.state, clock)

    @property
    def settings(self) -> Settings:
        return self.connector.settings

    @settings.setter
    def settings(self, new: Settings) -> None:
        """Reloaded settings (runtime.follow_settings) reach the connections too."""
        self.connector.settings = new

    # -- entry point ----------------------------------------------------------------------

    async def deliver(
        self, batch: Batch, progress: Progress | None = None
    ) -> list[RecipientResult]:
        """One attempt for every recipient of every message of the batch.

        ``progress``, when given, is called with each transaction's results as soon as the
        server has answered, so the caller can record them before the batch is over (a
        crash then resends only what was in flight). The return value still holds every
        result, including those already reported."""
        try:
            results = await self._deliver(batch, progress)
        except Exception:  # a bug must not lose track of recipients
            log.exception("delivery agent failed on a batch for %s", batch.domain)
            results = internal_error(batch)
        return in_batch_order(batch, results)

    async def _deliver(
        self, batch: Batch, progress: Progress | None = None
    ) -> list[RecipientResult]:
        all_recipients = [r for m in batch.messages for r in m.recipients]
        try:
            mx = await self.resolver.resolve_mx(batch.domain)
        except DeliveryError as exc:
            outcome = Outcome.BOUNCED if isinstance(exc, PermanentFailure) else Outcome.DEFERRED
            return [RecipientResult(r.delivery_id, outcome, exc.reply) for r in all_recipients]
        if mx.null_mx:
            reply = Reply(556, "5.1.10", f"{mx.domain} does not accept mail (null MX)")
            return [RecipientResult(r.delivery_id, Outcome.BOUNCED, reply) for r in all_recipients]
        destination = await self.policies.resolve(batch.domain, mx)
        relaxed = tuple(
            m for m in batch.messages if not m.requiretls and tls_required_no(m.content)
        )
        strict = tuple(m for m in batch.messages if m not in relaxed)
        results: list[RecipientResult] = []
        attempts: list[_Attempt] = []
        for messages, policy in ((strict, destination), (relaxed, destination.relaxed())):
            if not messages:
                continue
            # Every message carries REQUIRETLS: a plaintext connection could serve none of
            # them (mixed batches are guarded per message, T29).
            ledger = self.connector.ledger(
                policy.domain, requiretls=all(m.requiretls for m in messages)
            )
            attempt = _Attempt(Batch(batch.domain, messages), policy, mx, ledger)
            attempt.site = self.shaping.site_of(mx)
            attempt.progress = progress
            attempts.append(attempt)
            await self._run_attempt(attempt)
            results.extend(attempt.results)
        await self.connector.book.remember(destination, [a.ledger for a in attempts])
        return results

    async def _run_attempt(self, attempt: _Attempt) -> None:
        per_transaction = self.settings.delivery.recipients_per_transaction
        jobs: deque[_Job] = deque()
        for message in attempt.batch.messages:
            rcpts = message.recipients
            for start in range(0, len(rcpts), per_transaction):
                jobs.append(_Job(message, rcpts[start : start + per_transaction]))
        workers = min(self.settings.delivery.per_destination_concurrency, len(jobs))
        # A TaskGroup so that a bug in one worker stops the others before deliver() answers.
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(self._worker(attempt, jobs))

    # -- workers --------------------------------------------------------------------------

    async def _worker(self, attempt: _Attempt, jobs: deque[_Job]) -> None:
        # The site's connection slot is not taken here but by ``_connection`` before it
        # connects, and held by the connection until the pool closes it.
        async with self.pool.slots(attempt.batch.domain):
            conn: Connection | None = None
            try:
                while jobs:
                    job = jobs.popleft()
                    done = len(attempt.results)
                    conn = await self._run_job(attempt, job, conn)
                    if attempt.progress is not None and len(attempt.results) > done:
                        pause = attempt.progress(attempt.results[done:])
                        if pause is not None:
                            await pause
            except BaseException:
                # Cancelled or a bug, perhaps mid-transaction: never pool that connection.
                if conn is not None:
                    self.pool.discard(conn)
                raise
            if conn is not None:
                self._pool_idle(conn)

    def _pool_idle(self, conn: Connection) -> None:
        """Hand a connection that may carry more to the pool; it stays open with its site
        slot (unless a back-off lowered the window below that slot)."""
        hold = conn.hold
        keep = not isinstance(hold, SiteSlot) or self.shaping.keep(hold)
        self.pool.release(conn, reusable=keep)
        if keep:
            self.shaping.notify(conn.site)  # a task waiting for a slot may reuse it

    async def _run_job(
        self, attempt: _Attempt, job: _Job, conn: Connection | None
    ) -> Connection | None:
        """Send one transaction; returns the connection if it can carry more."""
        # Every log line of this task from here on names the message and its deliveries.
        structlog.contextvars.bind_contextvars(
            message_id=job.message.message_id, delivery_ids=[r.delivery_id for r in job.recipients]
        )
        for try_number in (1, 2):
            if conn is None:
                conn, failure = await self._connection(attempt)
                if conn is None:
                    assert failure is not None
                    if failure.kind == HostFailure.REJECTED:  # the server's reply: feedback
                        self.shaping.observe(attempt.site, (failure.reply,))
                    reply = failure.reply
                    if job.message.requiretls and failure.kind == HostFailure.POLICY:
                        # No hop satisfied even the TLS policy: REQUIRETLS cannot be met.
                        reply = Reply(
                            550, "5.7.30", f"REQUIRETLS support required: {failure.reply.text}"
                        )
                    attempt.results.extend(
                        results_for(job.recipients, reply, failure.mx, failure.receipt)
                    )
                    return None
            refusal = refusal_before_sending(attempt.destination.domain, job.message, conn)
            if refusal is not None:
                attempt.results.extend(results_for(job.recipients, refusal, conn.mx, conn.receipt))
                return conn
            reused = conn.messages > 0 or conn.from_pool
            session = conn.session
            try:
                await self.shaping.before_message(attempt.site)
                result = await session.send_mail(
                    self._mail_spec(job.message),
                    [RcptSpec(r.address, r.notify, r.orcpt) for r in job.recipients],
                    job.message.content,
                )
            except SMTPError as exc:
                self.pool.discard(conn)
                if try_number == 1 and reused and not session.content_sent:
                    # A connection that served before died before anything was accepted:
                    # the server closed it while it was idle. Once more on a fresh one.
                    log.debug("reused connection to %s failed (%s); reconnecting", conn.mx.ip, exc)
                    conn = None
                    continue
                what = "timed out" if isinstance(exc, SMTPTimeout) else "failed"
                reply = Reply(451, "4.4.2", f"conversation with {conn.mx.host} {what}: {exc}")
                attempt.results.extend(results_for(job.recipients, reply, conn.mx, conn.receipt))
                return None
            conn.messages += 1
            self.shaping.observe(attempt.site, (result.mail, *result.final))
            for rcpt, final in zip(job.recipients, result.final, strict=True):
                attempt.results.append(
                    RecipientResult(
                        rcpt.delivery_id, outcome_for(final), final, conn.mx, conn.receipt
                    )
                )
            closing = any(
                r.code == 421
                for r in (result.mail, *result.rcpt, *([result.data] if result.data else []))
            )
            if closing or not conn.alive:
                self.pool.discard(conn)
                return None
            if conn.messages >= self.shaping.messages_per_connection(attempt.site):
                self.pool.release(conn, reusable=False)  # QUIT; its slot comes back after
                return None
            return conn
        return None  # pragma: no cover - the loop always returns

    @staticmethod
    def _mail_spec(message: OutboundMessage) -> MailSpec:
        return MailSpec(
            sender=message.sender,
            size=len(message.content),
            body_8bitmime=message.eight_bit,
            smtputf8=message.smtputf8,
            requiretls=message.requiretls,
            envid=message.envid,
            ret=message.ret,
        )

    # -- connections ----------------------------------------------------------------------

    async def _connection(self, attempt: _Attempt) -> tuple[Connection | None, HostFailure | None]:
        """An idle pooled connection to any MX of the destination, else a new one in MX
        order, under a site slot taken before connecting (the connection holds it until
        the pool closes or discards it). When none can be had: (None, the failure)."""
        candidates = attempt.candidates()
        keys = [self.connector.key(mx, hp) for mx, hp in candidates]
        while True:
            conn = await self.connector.pooled(
                candidates, attempt.ledger, probe_after=PROBE_AFTER_IDLE
            )
            if conn is not None:
                return conn, None
            try:
                slot = await self.shaping.acquire(
                    attempt.site,
                    evict=lambda: self.pool.close_idle(attempt.site),
                    usable=lambda: any(self.pool.has_idle(k) for k in keys),
                )
            except StorageError as exc:
                reply = Reply(451, "4.3.0", f"connection budget of {attempt.site} unknown: {exc}")
                mx = MXUsed(attempt.mx.domain, "")
                return None, HostFailure(HostFailure.UNREACHABLE, reply, mx)
            if slot is not None:
                break  # else an idle connection came back to the pool meanwhile: reuse it
        try:
            conn = await self._open_any(attempt)
        except BaseException:
            slot.release()
            raise
        if conn is None:
            slot.release()
            return None, summarise(attempt.failures, attempt.policy_failed, attempt.mx.domain)
        conn.site = attempt.site
        conn.hold = slot
        return conn, None

    async def _open_any(self, attempt: _Attempt) -> Connection | None:
        """A new connection to the first usable MX address, in MX order, or None; a host
        that fails its TLS policy is skipped for the rest of the attempt (T7)."""
        for host in attempt.mx.hosts:
            if host.name in attempt.policy_failed:
                continue
            hp = attempt.destination.host(host.name)
            for ip in host.addresses:
                if ip in attempt.unreachable:
                    continue
                opened = await self.connector.open(MXUsed(host.name, ip), hp, attempt.ledger)
                if isinstance(opened, HostFailure):
                    attempt.failures.append(opened)
                    if opened.kind == HostFailure.POLICY:
                        attempt.policy_failed[host.name] = opened
                        break
                    attempt.unreachable.add(ip)
                    continue
                self.pool.stats.opened += 1
                return opened
        return None


__all__ = ["PROBE_AFTER_IDLE", "DeliveryAgent", "Progress", "tls_required_no"]
