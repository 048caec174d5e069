"""The delivery agent: one attempt at a batch (one destination, many messages).

Talks to: the DNS resolver (MX and addresses of the destination; TLSA and MTA-STS
through ``tls.resolution``), the MTA-STS policy hosts over HTTPS (``tls.mta_sts``), and
the destination's mail exchangers over SMTP on ``settings.delivery.smtp_port``, from
``settings.delivery.source_address`` when set, through the connection pool.

Trusts: the TLS policy resolved per MX host (``tls.resolution``: table, DANE, MTA-STS,
history, default); certificates are judged by ``tls.contexts`` against the system store
plus ``settings.tls.ca_file``, or by ``tls.dane`` against TLSA records.

Plaintext: every path that would send without TLS — level ``none``, STARTTLS not
offered, refused (454, 502, 421), a handshake that failed after the 220 (a close,
garbage), the plaintext retry after it, a pooled plaintext connection — goes through
``_plaintext``, which asks ``tls.plaintext.plaintext_verdict`` (T43). Refused (usable
DANE, ``dane-only``, ``encrypt`` and above, MTA-STS enforce, REQUIRETLS, a history of TLS
for the host while ``settings.stripping`` is on, T44): nothing is sent, the host is
skipped with a 4.7.x deferral naming the cause (for a failed handshake the real error,
``handshake_cause``). Allowed (``none``; ``may`` with no history and no protection;
``TLS-Required: No``): plaintext, the receipt's ``plaintext_reason`` naming the rule; a
failed handshake means plaintext on a *new* connection, recorded as a downgrade (T6).
A verified certificate that changed to one that does not verify is suspected
interception (an event; with ``settings.stripping.defer`` the host is skipped). Under
``encrypt`` and above the other MX hosts are tried before the 4.7.x deferral (T7); ``verify``
requires the certificate to chain and match the MX host name (MTA-STS ``enforce`` uses
it, T23), ``secure`` the next-hop domain or the policy's ``match_names``, ``dane`` a
certificate matching the host's TLSA records with SNI the TLSA base domain (T13, T17) —
an MX whose certificate does not match is skipped, never used in plaintext.

REQUIRETLS (T29): a message flagged ``requiretls`` goes only over a connection to a host
found securely (DANE or MTA-STS enforce), with a verified certificate, that advertised
REQUIRETLS; otherwise each recipient bounces with 5.7.30. A message with
``TLS-Required: No`` (and not REQUIRETLS, which wins) is delivered under a policy lowered
to ``may`` everywhere (T30).

Every result carries a TLS receipt (T8) naming the level, the policy source and the
RFC 8460 result of its session; every new TLS session attempt is counted for TLS-RPT
(T26), and what each host showed is remembered for stripping detection.

Limits: at most ``per_destination_concurrency`` connections in use per destination;
``recipients_per_transaction`` RCPTs per transaction; ``messages_per_connection`` per
connection; connect, command and data time limits from the settings.

It never decides when to retry and never raises for delivery problems: every recipient
of every message gets exactly one ``RecipientResult`` (delivered, deferred or bounced).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog

from kakitome.config import Settings
from kakitome.delivery.pool import Connection, ConnectionPool, PoolKey
from kakitome.delivery.shaping import Shaper, SiteSlot
from kakitome.delivery.types import (
    Batch,
    MXUsed,
    OutboundMessage,
    Outcome,
    Recipient,
    RecipientResult,
)
from kakitome.dns.resolver import Resolver
from kakitome.dns.types import MXHost, MXResult
from kakitome.errors import DeliveryError, PermanentFailure, StorageError
from kakitome.smtp.client import MailSpec, RcptSpec, SMTPClientSession, Timeouts
from kakitome.smtp.exceptions import SMTPError, SMTPTimeout, TLSHandshakeError
from kakitome.smtp.replies import Reply
from kakitome.smtp.stream import SMTPStream, TLSInfo
from kakitome.tls.contexts import (
    ClientContexts,
    ContextKind,
    UnverifiedCertificates,
    certificate_sha256,
    judge_peer,
)
from kakitome.tls.dane import match_tlsa
from kakitome.tls.history import HostHistory, Observation, observe, stripping_suspected
from kakitome.tls.plaintext import PlaintextVerdict, plaintext_verdict
from kakitome.tls.policy import PolicySource, TLSLevel
from kakitome.tls.receipt import PeerVerification, TLSReceipt
from kakitome.tls.resolution import DestinationPolicy, HostPolicy, PolicyResolver
from kakitome.tls.state import MemoryTLSState, TLSState
from kakitome.tls.tlsrpt import (
    STARTTLS_NOT_SUPPORTED,
    SUCCESS,
    VALIDATION_FAILURE,
    SessionRecord,
    classify_certificate,
    utc_day,
)

log = logging.getLogger(__name__)

# Told of each transaction's results as they come; may return an awaitable that the
# connection awaits before its next transaction (the worker's back-pressure when results
# are delivered faster than they can be recorded).
Progress = Callable[[Sequence[RecipientResult]], Awaitable[None] | None]

# Sources whose hosts are never remembered as TLS-broken or as having a bad certificate
# (T40): they refuse plaintext by policy, so such a memory could only weaken them.
PROTECTED_SOURCES = (PolicySource.DANE, PolicySource.MTA_STS)
# A pooled connection idle for longer than this is probed with RSET before it is used (as
# Postfix caches connections for 2 s). One back sooner is used at once: a peer that closed
# it shows as end-of-file in the pool, and one that dies at MAIL is replaced (_run_job).
PROBE_AFTER_IDLE = 2.0

_TLS_REQUIRED_NO = re.compile(rb"(?im)^TLS-Required[ \t]*:[ \t]*No[ \t]*\r?$")


def outcome_for(reply: Reply) -> Outcome:
    """2xx delivered, 4xx deferred, 5xx bounced."""
    if reply.positive:
        return Outcome.DELIVERED
    if reply.permanent:
        return Outcome.BOUNCED
    return Outcome.DEFERRED


def tls_required_no(content: bytes) -> bool:
    """True when the message's header section has ``TLS-Required: No`` (RFC 8689 §5)."""
    head = content.split(b"\r\n\r\n", 1)[0]
    return bool(_TLS_REQUIRED_NO.search(head))


@dataclass(frozen=True, slots=True)
class _Job:
    message: OutboundMessage
    recipients: tuple[Recipient, ...]


class _HostFailure(Exception):
    """Why one MX address could not be used for this batch."""

    UNREACHABLE = "unreachable"  # connect refused, timed out, dropped before EHLO
    REJECTED = "rejected"  # greeting or EHLO not 2xx
    POLICY = "policy"  # TLS policy not met: skip the whole MX host

    def __init__(
        self, kind: str, reply: Reply, mx: MXUsed, receipt: TLSReceipt | None = None
    ) -> None:
        super().__init__(str(reply))
        self.kind = kind
        self.reply = reply
        self.mx = mx
        self.receipt = receipt


@dataclass
class _Attempt:
    """What one deliver() call has learned about the destination so far."""

    batch: Batch
    destination: DestinationPolicy
    mx: MXResult
    unreachable: set[str] = field(default_factory=set)  # IPs
    policy_failed: dict[str, _HostFailure] = field(default_factory=dict)  # MX host -> why
    # IPs whose handshake failed where plaintext was allowed (T6): plaintext next time.
    tls_broken: set[str] = field(default_factory=set)
    failures: list[_HostFailure] = field(default_factory=list)
    results: list[RecipientResult] = field(default_factory=list)
    sessions: list[SessionRecord] = field(default_factory=list)
    observations: dict[str, Observation] = field(default_factory=dict)
    site: str = ""  # the destination's site (delivery.shaping)
    progress: Progress | None = None  # told of each transaction's results as they come

    @property
    def requiretls(self) -> bool:
        """Every message of this attempt carries REQUIRETLS: a plaintext connection could
        serve none of them (mixed batches are guarded per message, T29)."""
        return all(m.requiretls for m in self.batch.messages)


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
        self.settings = settings
        self.resolver = resolver
        self.pool = pool
        self.contexts = contexts or ClientContexts(settings.tls)
        self.unverified = unverified or UnverifiedCertificates()
        self.state: TLSState = tls_state if tls_state is not None else MemoryTLSState()
        self.clock = clock
        # Budgets per destination site; in-process unless the worker passes a shared one.
        self.shaping = shaping if shaping is not None else Shaper(settings)
        self.policies = PolicyResolver(settings, resolver, self.state, clock)
        self.timeouts = Timeouts(
            command=settings.delivery.command_timeout, data=settings.delivery.data_timeout
        )

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
            reply = Reply(451, "4.3.0", "internal error in the delivery agent")
            results = [
                RecipientResult(r.delivery_id, Outcome.DEFERRED, reply)
                for m in batch.messages
                for r in m.recipients
            ]
        return self._in_batch_order(batch, results)

    @staticmethod
    def _in_batch_order(batch: Batch, results: Sequence[RecipientResult]) -> list[RecipientResult]:
        by_id = {r.delivery_id: r for r in results}
        ordered: list[RecipientResult] = []
        for message in batch.messages:
            for rcpt in message.recipients:
                result = by_id.get(rcpt.delivery_id)
                if result is None:
                    result = RecipientResult(
                        rcpt.delivery_id,
                        Outcome.DEFERRED,
                        Reply(451, "4.3.0", "no result recorded for this recipient"),
                    )
                ordered.append(result)
        return ordered

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
            attempt = _Attempt(Batch(batch.domain, messages), policy, mx)
            attempt.site = self.shaping.site_of(mx)
            attempt.progress = progress
            attempts.append(attempt)
            await self._run_attempt(attempt)
            results.extend(attempt.results)
        await self._remember(destination, attempts)
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

    async def _remember(self, destination: DestinationPolicy, attempts: Sequence[_Attempt]) -> None:
        """Write TLS-RPT counts and host observations; a storage problem only logs."""
        sessions = [s for a in attempts for s in a.sessions]
        now = self.clock()
        try:
            if sessions:
                await self.state.record_sessions(sessions)
            if not self.settings.stripping.enabled:
                return
            for attempt in attempts:
                for host, seen in attempt.observations.items():
                    hp = destination.host(host)
                    previous = hp.history or await self.state.get_host_history(host)
                    updated = observe(previous, host, seen, now)
                    if updated is not None:
                        await self.state.put_host_history(updated)
        except Exception as exc:
            log.warning("could not record TLS observations for %s: %s", destination.domain, exc)

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
                    if failure.kind == _HostFailure.REJECTED:  # the server's reply: feedback
                        self.shaping.observe(attempt.site, (failure.reply,))
                    reply = failure.reply
                    if job.message.requiretls and failure.kind == _HostFailure.POLICY:
                        # No hop satisfied even the TLS policy: REQUIRETLS cannot be met.
                        reply = Reply(
                            550, "5.7.30", f"REQUIRETLS support required: {failure.reply.text}"
                        )
                    self._record(attempt, job.recipients, reply, failure.mx, failure.receipt)
                    return None
            refusal = self._refuse_before_sending(attempt, job.message, conn)
            if refusal is not None:
                self._record(attempt, job.recipients, refusal, conn.mx, conn.receipt)
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
                self._record(attempt, job.recipients, reply, conn.mx, conn.receipt)
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

    def _refuse_before_sending(
        self, attempt: _Attempt, message: OutboundMessage, conn: Connection
    ) -> Reply | None:
        """A reply of our own when this message cannot go over this connection."""
        session = conn.session
        limit = session.max_size
        if limit is not None and len(message.content) > limit:
            return Reply(
                552,
                "5.3.4",
                f"message size {len(message.content)} exceeds {conn.mx.host}'s limit of {limit}",
            )
        if message.smtputf8 and not session.supports("SMTPUTF8"):
            return Reply(553, "5.6.7", f"{conn.mx.host} does not support SMTPUTF8")
        if message.requiretls:
            return self._requiretls_refusal(attempt, conn)
        return None

    @staticmethod
    def _requiretls_refusal(attempt: _Attempt, conn: Connection) -> Reply | None:
        """T29: a secure path (DANE or MTA-STS enforce), a verified certificate, and a
        server that advertised REQUIRETLS (inside TLS: it is never believed before)."""
        host = conn.mx.host
        if not conn.secure:
            why = (
                f"{attempt.destination.domain} has no DNSSEC-validated (DANE) or MTA-STS "
                f"enforce policy for {host}"
            )
        elif not conn.receipt.verified:
            why = f"the certificate of {host} is not verified"
        elif not (conn.receipt.used and conn.session.supports("REQUIRETLS")):
            why = f"{host} does not advertise REQUIRETLS"
        else:
            return None
        return Reply(550, "5.7.30", f"REQUIRETLS support required: {why}")

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

    @staticmethod
    def _record(
        attempt: _Attempt,
        recipients: Sequence[Recipient],
        reply: Reply,
        mx: MXUsed | None,
        receipt: TLSReceipt | None,
    ) -> None:
        outcome = outcome_for(reply)
        attempt.results.extend(
            RecipientResult(r.delivery_id, outcome, reply, mx, receipt) for r in recipients
        )

    # -- connections ----------------------------------------------------------------------

    def _key(self, attempt: _Attempt, host: MXHost, ip: str) -> PoolKey:
        hp = attempt.destination.host(host.name)
        return PoolKey(ip, self.settings.delivery.smtp_port, host.name, hp.pool_mode)

    async def _connection(self, attempt: _Attempt) -> tuple[Connection | None, _HostFailure | None]:
        """An idle pooled connection to any MX of the destination, else a new one in MX
        order, under a site slot taken before connecting (the connection holds it until
        the pool closes or discards it). When none can be had: (None, the failure)."""
        keys = [self._key(attempt, h, ip) for h in attempt.mx.hosts for ip in h.addresses]
        while True:
            conn = await self._pooled(attempt)
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
                return None, _HostFailure(_HostFailure.UNREACHABLE, reply, mx)
            if slot is not None:
                break  # else an idle connection came back to the pool meanwhile: reuse it
        try:
            conn = await self._open_any(attempt)
        except BaseException:
            slot.release()
            raise
        if conn is None:
            slot.release()
            return None, self._summarise(attempt)
        conn.site = attempt.site
        conn.hold = slot
        return conn, None

    async def _pooled(self, attempt: _Attempt) -> Connection | None:
        """An idle pooled connection to any MX of the destination that still answers."""
        for host in attempt.mx.hosts:
            for ip in host.addresses:
                key = self._key(attempt, host, ip)
                hp = attempt.destination.host(host.name)
                while (conn := self.pool.take(key)) is not None:
                    if not conn.receipt.used:
                        verdict = self._verdict(attempt, hp, "was pooled in plaintext")
                        if not verdict.allowed or verdict.stripping is not None:
                            # Pooled in plaintext, but the host is now expected to offer
                            # TLS: open a new connection, which asks again.
                            self.pool.release(conn, reusable=False)
                            continue
                    if conn.idled < PROBE_AFTER_IDLE or await self._still_good(conn):
                        return conn
        return None

    async def _open_any(self, attempt: _Attempt) -> Connection | None:
        """A new connection to the first usable MX address, in MX order, or None."""
        for host in attempt.mx.hosts:
            if host.name in attempt.policy_failed:
                continue
            for ip in host.addresses:
                if ip in attempt.unreachable:
                    continue
                try:
                    conn = await self._open(attempt, host, ip)
                except _HostFailure as failure:
                    attempt.failures.append(failure)
                    if failure.kind == _HostFailure.POLICY:
                        attempt.policy_failed[host.name] = failure
                        break
                    attempt.unreachable.add(ip)
                    continue
                self.pool.stats.opened += 1
                return conn
        return None

    async def _still_good(self, conn: Connection) -> bool:
        """RSET a connection that sat in the pool a while; close it when it does not
        answer."""
        try:
            reply = await conn.session.rset()
        except SMTPError:
            self.pool.discard(conn)
            return False
        if not reply.positive:
            self.pool.release(conn, reusable=False)
            return False
        return True

    def _summarise(self, attempt: _Attempt) -> _HostFailure:
        policy = [f for f in attempt.failures if f.kind == _HostFailure.POLICY]
        if policy:
            return policy[-1]
        if attempt.policy_failed:
            return list(attempt.policy_failed.values())[-1]
        rejected = [f for f in attempt.failures if f.kind == _HostFailure.REJECTED]
        if rejected:
            last = rejected[-1]
            reply = last.reply
            if not reply.transient:
                # A refusal at greeting or EHLO says nothing about the recipients: defer,
                # and let the queue's lifetime decide when to give up.
                reply = Reply(451, "4.4.0", f"{last.mx.host} refused the session: {reply}")
            return _HostFailure(last.kind, reply, last.mx, last.receipt)
        details = "; ".join(f"{f.mx.host} [{f.mx.ip}]: {f.reply.text}" for f in attempt.failures)
        mx = attempt.failures[-1].mx if attempt.failures else None
        reply = Reply(
            451,
            "4.4.1",
            f"no mail exchanger of {attempt.mx.domain} reachable"
            + (f" ({details})" if details else ""),
        )
        return _HostFailure(_HostFailure.UNREACHABLE, reply, mx or MXUsed(attempt.mx.domain, ""))

    async def _session(self, attempt: _Attempt, host: MXHost, ip: str) -> SMTPClientSession:
        """TCP connect, greeting, EHLO; raises _HostFailure."""
        mx = MXUsed(host.name, ip)
        delivery = self.settings.delivery
        try:
            stream = await SMTPStream.connect(
                ip,
                delivery.smtp_port,
                time_limit=delivery.connect_timeout,
                source_address=delivery.source_address,
            )
        except SMTPError as exc:
            raise _HostFailure(_HostFailure.UNREACHABLE, Reply(451, "4.4.1", str(exc)), mx) from exc
        session = SMTPClientSession(
            stream, helo_name=delivery.helo_hostname, timeouts=self.timeouts
        )
        try:
            banner = await session.greet()
            if banner.code != 220:
                await session.quit()
                raise _HostFailure(_HostFailure.REJECTED, banner, mx)
            ehlo = await session.ehlo()
            if not ehlo.positive:
                await session.quit()
                raise _HostFailure(_HostFailure.REJECTED, ehlo, mx)
        except SMTPError as exc:
            stream.abort()
            raise _HostFailure(
                _HostFailure.UNREACHABLE, Reply(451, "4.4.2", f"session set-up: {exc}"), mx
            ) from exc
        return session

    @staticmethod
    def _receipt(
        hp: HostPolicy,
        *,
        info: TLSInfo | None = None,
        verification: PeerVerification = PeerVerification.NONE,
        sha256: str | None = None,
        downgraded: bool = False,
        verify_error: str | None = None,
        tlsrpt: str | None = None,
        stripping: str | None = None,
        history: bool = False,
    ) -> TLSReceipt:
        return TLSReceipt(
            used=info is not None,
            version=info.version if info else None,
            cipher=info.cipher if info else None,
            verification=verification,
            level=hp.level,
            # History is named as the source only when it changed what happened.
            policy_source=PolicySource.HISTORY if history else hp.source,
            peer_certificate_sha256=sha256,
            downgraded=downgraded,
            verify_error=verify_error,
            tlsrpt_result=tlsrpt,
            stripping_suspected=stripping,
        )

    # -- TLS-RPT and history bookkeeping ------------------------------------------------------

    def _session_result(
        self,
        attempt: _Attempt,
        hp: HostPolicy,
        ip: str,
        result: str | None,
        reason_code: str = "",
    ) -> str:
        """Count one session attempt for TLS-RPT (T26); returns the receipt's word for it."""
        if result is None and hp.sts_failure is not None:
            result = hp.sts_failure  # the policy could not be fetched: a failed session
        attempt.sessions.append(
            SessionRecord(
                day=utc_day(self.clock()),
                policy=hp.report,
                mx_host=hp.mx_host,
                receiving_ip=ip,
                result_type=result,
                sending_ip=self.settings.delivery.source_address or "",
                reason_code=reason_code,
            )
        )
        return result or SUCCESS

    def _policy_result(
        self, hp: HostPolicy, verification: PeerVerification, verify_error: str | None
    ) -> tuple[str | None, str]:
        """The RFC 8460 result of a completed handshake under this host's policy."""
        if hp.report.type == "no-policy-found":
            return None, ""  # without a policy, an encrypted session is a success
        if hp.sts_mismatch:
            return VALIDATION_FAILURE, "mx-mismatch"
        if verification is not PeerVerification.VERIFIED:
            return classify_certificate(verification, verify_error), ""
        return None, ""

    async def _suspect_stripping(
        self, attempt: _Attempt, hp: HostPolicy, ip: str, seen: Observation
    ) -> str | None:
        """After a completed handshake: does the certificate look intercepted (a verified
        one replaced by one that does not verify)? Records the event. Missing TLS is the
        decision point's business (``_plaintext``)."""
        if hp.history is None or not self.settings.stripping.enabled:
            return None
        now = self.clock()
        why = stripping_suspected(hp.history, seen, now=now, window=self.settings.stripping.window)
        if why is not None:
            await self._stripping_event(attempt, hp, ip, why, seen.sha256)
        return why

    async def _stripping_event(
        self, attempt: _Attempt, hp: HostPolicy, ip: str, why: str, sha256: str | None
    ) -> None:
        """Log and record a ``tls-stripping-suspected`` event; a storage problem only logs."""
        data = {
            "domain": attempt.destination.domain,
            "mx_host": hp.mx_host,
            "ip": ip,
            "reason": why,
            "deferred": self.settings.stripping.defer,
            "certificate_sha256": sha256,
        }
        log.warning("possible STARTTLS stripping: %s", why)
        try:
            await self.state.add_tls_event("tls-stripping-suspected", data, self.clock())
        except Exception as exc:
            log.warning("could not record the stripping event: %s", exc)

    def _observe(self, attempt: _Attempt, host: str, seen: Observation) -> None:
        attempt.observations[host] = seen

    # -- opening connections -------------------------------------------------------------------

    async def _open(self, attempt: _Attempt, host: MXHost, ip: str) -> Connection:
        """A new connection to one MX address that satisfies the policy; raises _HostFailure."""
        hp = attempt.destination.host(host.name)
        mx = MXUsed(host.name, ip)
        key = self._key(attempt, host, ip)
        if hp.skip is not None:
            word = self._session_result(attempt, hp, ip, hp.skip_result, hp.skip_reason_code)
            raise _HostFailure(_HostFailure.POLICY, hp.skip, mx, self._receipt(hp, tlsrpt=word))
        level = hp.level

        if level is TLSLevel.NONE:
            return await self._plaintext(
                attempt, hp, host, ip, None, failure="is not asked for STARTTLS (level none)"
            )
        if ip in attempt.tls_broken:
            # T6: the handshake failed earlier in this attempt, and plaintext was allowed.
            return await self._plaintext(
                attempt,
                hp,
                host,
                ip,
                None,
                failure="failed the TLS handshake earlier",
                downgraded=True,
            )
        session = await self._session(attempt, host, ip)

        if not session.supports("STARTTLS"):
            self._observe(attempt, host.name, Observation(offered_starttls=False))
            word = self._session_result(attempt, hp, ip, STARTTLS_NOT_SUPPORTED)
            return await self._plaintext(
                attempt, hp, host, ip, session, failure="does not offer STARTTLS", tlsrpt=word
            )

        if level.dane and hp.tlsa:
            return await self._open_dane(attempt, hp, host, ip, session)

        wanted = hp.match_names if level is TLSLevel.SECURE and hp.match_names else (host.name,)
        protected = hp.source in PROTECTED_SOURCES and not hp.sts_testing
        remembered = None if level.verifies or protected else self.unverified.get(host.name)
        # DANE with only unusable TLSA records: encryption without authentication (T14).
        verifying = remembered is None and hp.source is not PolicySource.DANE
        kind = ContextKind.choose(mandatory=level.mandatory, verifying=verifying)
        try:
            reply, info = await session.starttls(
                self.contexts.get(kind), hp.sni or host.name, self.pool.session_for(key, kind)
            )
        except TLSHandshakeError as exc:
            session.stream.abort()
            if exc.certificate_failure and not level.verifies:
                return await self._open_unverified(attempt, hp, host, ip, exc.verify_error or "")
            if exc.certificate_failure:
                verification = PeerVerification.UNTRUSTED
                failed = classify_certificate(verification, exc.verify_error)
                word = self._session_result(attempt, hp, ip, failed)
                self._observe(attempt, host.name, Observation(offered_starttls=True))
                raise _HostFailure(
                    _HostFailure.POLICY,
                    Reply(
                        451,
                        "4.7.5",
                        f"certificate of {host.name} does not verify: {exc.verify_error}",
                    ),
                    mx,
                    self._receipt(
                        hp,
                        verification=verification,
                        verify_error=exc.verify_error,
                        tlsrpt=word,
                    ),
                ) from exc
            return await self._after_handshake_failure(attempt, hp, host, ip, session, kind, exc)
        except SMTPError as exc:
            session.stream.abort()
            raise _HostFailure(
                _HostFailure.UNREACHABLE,
                Reply(451, "4.4.2", f"STARTTLS with {host.name}: {exc}"),
                mx,
            ) from exc
        if info is None:
            return await self._after_refusal(attempt, hp, host, ip, session, reply)

        if info.session_reused:
            self.pool.stats.sessions_resumed += 1
        verify_error: str | None = remembered.verify_error if remembered else None
        if hp.source is PolicySource.DANE and not verifying:
            verify_error = "not checked: the TLSA records have no usable entry (RFC 7672 §2.2)"
        judgement = judge_peer(
            info.peer_certificate,
            chain_verified=info.chain_verified,
            wanted_names=wanted,
            verify_error=verify_error,
        )
        verify_error = judgement.verify_error
        if remembered is not None and judgement.sha256 != remembered.sha256:
            self.unverified.forget(host.name)
            verify_error = "not verified: certificate changed since it last failed verification"
        result, reason_code = self._policy_result(hp, judgement.verification, verify_error)
        if level.verifies and judgement.verification is not PeerVerification.VERIFIED:
            result = result or classify_certificate(judgement.verification, verify_error)
        seen = Observation(
            True, judgement.sha256, judgement.verification is PeerVerification.VERIFIED
        )
        self._observe(attempt, host.name, seen)
        word = self._session_result(attempt, hp, ip, result, reason_code)
        receipt = self._receipt(
            hp,
            info=info,
            verification=judgement.verification,
            sha256=judgement.sha256,
            verify_error=verify_error,
            tlsrpt=word,
        )
        if level.verifies and judgement.verification is not PeerVerification.VERIFIED:
            await session.quit()
            raise _HostFailure(
                _HostFailure.POLICY,
                Reply(
                    451,
                    "4.7.5",
                    f"certificate of {host.name} does not match "
                    f"{', '.join(wanted)}: {verify_error}",
                ),
                mx,
                receipt,
            )
        return await self._finish(attempt, hp, key, session, mx, ip, receipt, kind, seen)

    async def _finish(
        self,
        attempt: _Attempt,
        hp: HostPolicy,
        key: PoolKey,
        session: SMTPClientSession,
        mx: MXUsed,
        ip: str,
        receipt: TLSReceipt,
        kind: ContextKind,
        seen: Observation,
    ) -> Connection:
        """The stripping check for a completed opportunistic handshake, then the connection."""
        why = await self._suspect_stripping(attempt, hp, ip, seen)
        if why is not None:
            receipt = dataclasses.replace(
                receipt, stripping_suspected=why, policy_source=PolicySource.HISTORY
            )
            if self.settings.stripping.defer:
                # Refused: the session failed on its certificate, whatever the host's
                # (missing) RFC 8460 policy counted it as a moment ago.
                result = classify_certificate(receipt.verification, receipt.verify_error)
                last = attempt.sessions[-1] if attempt.sessions else None
                if last is not None and last.mx_host == hp.mx_host and last.result_type is None:
                    attempt.sessions[-1] = dataclasses.replace(last, result_type=result)
                receipt = dataclasses.replace(receipt, tlsrpt_result=result)
                await session.quit()
                raise _HostFailure(
                    _HostFailure.POLICY,
                    Reply(451, "4.7.5", f"possible TLS interception, not sent: {why}"),
                    mx,
                    receipt,
                )
        secure = hp.secure and receipt.verified
        return Connection(key, session, mx, receipt, kind, secure=secure)

    async def _open_dane(
        self,
        attempt: _Attempt,
        hp: HostPolicy,
        host: MXHost,
        ip: str,
        session: SMTPClientSession,
    ) -> Connection:
        """STARTTLS under usable TLSA records: SNI the TLSA base domain, the chain must
        match (T13, T17); any failure skips this MX, never plaintext. No session is
        resumed: the chain must be seen to be matched."""
        mx = MXUsed(host.name, ip)
        key = self._key(attempt, host, ip)
        kind = ContextKind.MANDATORY_NONVERIFYING
        try:
            reply, info = await session.starttls(self.contexts.get(kind), hp.sni or host.name)
        except TLSHandshakeError as exc:
            session.stream.abort()
            return await self._after_handshake_failure(attempt, hp, host, ip, session, kind, exc)
        except SMTPError as exc:
            session.stream.abort()
            raise _HostFailure(
                _HostFailure.UNREACHABLE,
                Reply(451, "4.4.2", f"STARTTLS with {host.name}: {exc}"),
                mx,
            ) from exc
        if info is None:
            return await self._after_refusal(attempt, hp, host, ip, session, reply)
        chain = session.stream.peer_chain()
        if not chain and info.peer_certificate:
            chain = [info.peer_certificate]
        sha = certificate_sha256(info.peer_certificate) if info.peer_certificate else None
        match = match_tlsa(chain, hp.tlsa, names=(hp.sni or host.name, host.name))
        if not match.ok:
            await session.quit()
            word = self._session_result(attempt, hp, ip, VALIDATION_FAILURE, "tlsa-mismatch")
            raise _HostFailure(
                _HostFailure.POLICY,
                Reply(
                    451,
                    "4.7.5",
                    f"certificate of {host.name} does not match its TLSA records: {match.reason}",
                ),
                mx,
                self._receipt(
                    hp,
                    info=info,
                    verification=PeerVerification.UNTRUSTED,
                    sha256=sha,
                    verify_error=match.reason,
                    tlsrpt=word,
                ),
            )
        self._observe(attempt, host.name, Observation(True, sha, True))
        word = self._session_result(attempt, hp, ip, None)
        receipt = self._receipt(
            hp,
            info=info,
            verification=PeerVerification.VERIFIED,
            sha256=sha,
            tlsrpt=word,
        )
        return Connection(key, session, mx, receipt, kind, secure=True)

    async def _open_unverified(
        self, attempt: _Attempt, hp: HostPolicy, host: MXHost, ip: str, verify_error: str
    ) -> Connection:
        """After a certificate failure at may/encrypt: TLS again without verification, on a
        new connection, and remember the certificate so next time goes straight there
        (never for hosts under DANE or MTA-STS, T40)."""
        level = hp.level
        mx = MXUsed(host.name, ip)
        key = self._key(attempt, host, ip)
        session = await self._session(attempt, host, ip)
        kind = ContextKind.choose(mandatory=level.mandatory, verifying=False)
        if not session.supports("STARTTLS"):
            await session.quit()
            raise _HostFailure(
                _HostFailure.UNREACHABLE,
                Reply(451, "4.7.4", f"{host.name} stopped offering STARTTLS"),
                mx,
            )
        try:
            reply, info = await session.starttls(
                self.contexts.get(kind), hp.sni or host.name, self.pool.session_for(key, kind)
            )
        except TLSHandshakeError as exc:
            session.stream.abort()
            return await self._after_handshake_failure(attempt, hp, host, ip, session, kind, exc)
        except SMTPError as exc:
            session.stream.abort()
            raise _HostFailure(
                _HostFailure.UNREACHABLE,
                Reply(451, "4.4.2", f"STARTTLS with {host.name}: {exc}"),
                mx,
            ) from exc
        if info is None:
            await session.quit()
            raise _HostFailure(
                _HostFailure.UNREACHABLE,
                Reply(451, "4.7.4", f"{host.name} refused STARTTLS: {reply}"),
                mx,
            )
        judgement = judge_peer(
            info.peer_certificate,
            chain_verified=False,
            wanted_names=(host.name,),
            verify_error=verify_error,
        )
        if judgement.sha256 is not None and hp.source not in PROTECTED_SOURCES:
            self.unverified.remember(host.name, judgement.sha256, verify_error)
        result, reason_code = self._policy_result(hp, judgement.verification, verify_error)
        seen = Observation(True, judgement.sha256, False)
        self._observe(attempt, host.name, seen)
        word = self._session_result(attempt, hp, ip, result, reason_code)
        receipt = self._receipt(
            hp,
            info=info,
            verification=judgement.verification,
            sha256=judgement.sha256,
            verify_error=verify_error,
            tlsrpt=word,
        )
        return await self._finish(attempt, hp, key, session, mx, ip, receipt, kind, seen)

    async def _after_handshake_failure(
        self,
        attempt: _Attempt,
        hp: HostPolicy,
        host: MXHost,
        ip: str,
        session: SMTPClientSession,
        kind: ContextKind,
        exc: TLSHandshakeError,
    ) -> Connection:
        """A handshake that failed for a reason other than the certificate: plaintext on a
        new connection when the decision point allows it (T6), else a 4.7.5 deferral."""
        word = self._session_result(attempt, hp, ip, VALIDATION_FAILURE, "tls-handshake")
        cause = handshake_cause(exc, session.stream.discarded_before_tls, kind)
        return await self._plaintext(
            attempt,
            hp,
            host,
            ip,
            None,
            failure=f"failed the TLS handshake: {cause}",
            enhanced="4.7.5",
            tlsrpt=word,
            downgraded=True,
            verify_error=exc.verify_error,
            broken=True,
        )

    async def _after_refusal(
        self,
        attempt: _Attempt,
        hp: HostPolicy,
        host: MXHost,
        ip: str,
        session: SMTPClientSession,
        reply: Reply,
    ) -> Connection:
        """STARTTLS offered but answered with something else than 220 (454, 502, 421):
        plaintext on this connection when the decision point allows it, else 4.7.4."""
        word = self._session_result(attempt, hp, ip, STARTTLS_NOT_SUPPORTED)
        failure = f"refused STARTTLS: {reply}"
        if reply.code == 421:
            # The server is closing this session: even where plaintext is allowed it
            # cannot be this one; another MX (or a later attempt) may do.
            verdict = self._verdict(attempt, hp, failure)
            if verdict.allowed:
                await session.quit()
                raise _HostFailure(
                    _HostFailure.UNREACHABLE,
                    Reply(451, "4.4.2", f"{host.name} closed the session: {reply}"),
                    MXUsed(host.name, ip),
                )
        return await self._plaintext(
            attempt, hp, host, ip, session, failure=failure, tlsrpt=word, downgraded=True
        )

    # -- the one way to plaintext -----------------------------------------------------------

    def _verdict(self, attempt: _Attempt, hp: HostPolicy, failure: str) -> PlaintextVerdict:
        return plaintext_verdict(
            hp,
            failure=failure,
            requiretls=attempt.requiretls,
            stripping=self.settings.stripping,
            now=self.clock(),
        )

    async def _plaintext(
        self,
        attempt: _Attempt,
        hp: HostPolicy,
        host: MXHost,
        ip: str,
        session: SMTPClientSession | None,
        *,
        failure: str,
        enhanced: str = "4.7.4",
        tlsrpt: str | None = None,
        downgraded: bool = False,
        verify_error: str | None = None,
        broken: bool = False,
    ) -> Connection:
        """Every path that would end in plaintext comes here and asks ``tls.plaintext``
        (T43). Refused: nothing is sent, the session is closed and the host is skipped
        with a 4.7.x deferral. Allowed: ``session`` in plaintext (a new one when None), the
        receipt naming the rule that allowed it. ``broken`` remembers the address as
        TLS-broken for the rest of this attempt (never for DANE or MTA-STS hosts, T40)."""
        mx = MXUsed(host.name, ip)
        verdict = self._verdict(attempt, hp, failure)
        if verdict.stripping is not None:
            await self._stripping_event(attempt, hp, ip, verdict.stripping, None)
        receipt = self._receipt(
            hp,
            downgraded=downgraded,
            verify_error=verify_error,
            tlsrpt=tlsrpt,
            stripping=verdict.stripping,
            history=verdict.stripping is not None,
        )
        if not verdict.allowed:
            if session is not None:
                await session.quit()
            if verdict.stripping is not None:
                text = f"possible STARTTLS stripping, not sent: {verdict.stripping}"
            else:
                text = f"TLS is required ({verdict.reason}), but {host.name} {failure}"
            raise _HostFailure(_HostFailure.POLICY, Reply(451, enhanced, text), mx, receipt)
        if broken and hp.source not in PROTECTED_SOURCES:
            attempt.tls_broken.add(ip)
        if session is None:
            session = await self._session(attempt, host, ip)
        receipt = dataclasses.replace(receipt, plaintext_reason=verdict.reason)
        return Connection(self._key(attempt, host, ip), session, mx, receipt, None)


def handshake_cause(exc: TLSHandshakeError, discarded: int, kind: ContextKind) -> str:
    """What made a handshake fail, in words, for the deferral and the receipt.

    The stream's error alone often says only "connection closed during the TLS
    handshake". Added here: the connection error beneath it (a reset); the bytes the
    server sent behind its 220 that were thrown away (T3), which means it answered with
    something that is not TLS; and, when the server simply hung up, what our ClientHello
    offered (a server that accepts none of it closes without an alert)."""
    text = str(exc)
    cause = exc.__cause__
    if isinstance(cause, SMTPError):
        text += f" ({cause})"
    if discarded:
        text += f"; the server sent {discarded} bytes after its 220 that are not TLS (discarded)"
    elif cause is None:
        offered = "TLS 1.2 or later, forward-secret AEAD ciphers only"
        if not kind.mandatory:
            offered = "any TLS version OpenSSL allows"
        text += f": the server hung up on our ClientHello ({offered}) without a TLS alert"
    return text


__all__ = ["DeliveryAgent", "HostHistory", "handshake_cause", "outcome_for", "tls_required_no"]
