"""The delivery agent: one attempt at a batch (one destination, many messages).

Talks to: the DNS resolver (MX and addresses of the destination) and the destination's
mail exchangers over SMTP on ``settings.delivery.smtp_port``, from
``settings.delivery.source_address`` when set, through the connection pool.

Trusts: the TLS policy resolved for the destination (``tls.policy``); certificates are
judged by ``tls.contexts`` against the system store plus ``settings.tls.ca_file``. Under
``none`` STARTTLS is never sent; under ``may`` TLS is used when offered and a failed
handshake means plaintext on a *new* connection, recorded as a downgrade (T6); under
``encrypt`` and above plaintext is never sent: no STARTTLS or a failed handshake defers
the mail with 4.7.x, after trying the other MX hosts (T7); ``verify`` requires the
certificate to chain and match the MX host name, ``secure`` the next-hop domain or the
policy's ``match_names``. Every result carries a TLS receipt (T8).

Limits: at most ``per_destination_concurrency`` connections in use per destination;
``recipients_per_transaction`` RCPTs per transaction; ``messages_per_connection`` per
connection; connect, command and data time limits from the settings.

It never decides when to retry and never raises for delivery problems: every recipient
of every message gets exactly one ``RecipientResult`` (delivered, deferred or bounced).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from kakitome.config import Settings
from kakitome.delivery.pool import Connection, ConnectionPool, PoolKey
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
from kakitome.errors import DeliveryError, PermanentFailure
from kakitome.smtp.client import MailSpec, RcptSpec, SMTPClientSession, Timeouts
from kakitome.smtp.exceptions import SMTPError, SMTPTimeout, TLSHandshakeError
from kakitome.smtp.replies import Reply
from kakitome.smtp.stream import SMTPStream, TLSInfo
from kakitome.tls.contexts import (
    ClientContexts,
    ContextKind,
    UnverifiedCertificates,
    judge_peer,
)
from kakitome.tls.policy import PolicySource, TLSLevel, TLSPolicy, resolve_tls_policy
from kakitome.tls.receipt import PeerVerification, TLSReceipt

log = logging.getLogger(__name__)


def outcome_for(reply: Reply) -> Outcome:
    """2xx delivered, 4xx deferred, 5xx bounced."""
    if reply.positive:
        return Outcome.DELIVERED
    if reply.permanent:
        return Outcome.BOUNCED
    return Outcome.DEFERRED


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
    policy: TLSPolicy
    mx: MXResult
    unreachable: set[str] = field(default_factory=set)  # IPs
    policy_failed: dict[str, _HostFailure] = field(default_factory=dict)  # MX host -> why
    tls_broken: set[str] = field(default_factory=set)  # IPs whose handshake failed (may)
    failures: list[_HostFailure] = field(default_factory=list)
    results: list[RecipientResult] = field(default_factory=list)


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
    ) -> None:
        self.settings = settings
        self.resolver = resolver
        self.pool = pool
        self.contexts = contexts or ClientContexts(settings.tls)
        self.unverified = unverified or UnverifiedCertificates()
        self.timeouts = Timeouts(
            command=settings.delivery.command_timeout, data=settings.delivery.data_timeout
        )

    # -- entry point ----------------------------------------------------------------------

    async def deliver(self, batch: Batch) -> list[RecipientResult]:
        """One attempt for every recipient of every message of the batch."""
        try:
            results = await self._deliver(batch)
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

    async def _deliver(self, batch: Batch) -> list[RecipientResult]:
        all_recipients = [r for m in batch.messages for r in m.recipients]
        policy = resolve_tls_policy(
            batch.domain, self.settings.tls.policy, self.settings.tls.default_level
        )
        try:
            mx = await self.resolver.resolve_mx(batch.domain)
        except DeliveryError as exc:
            outcome = Outcome.BOUNCED if isinstance(exc, PermanentFailure) else Outcome.DEFERRED
            return [RecipientResult(r.delivery_id, outcome, exc.reply) for r in all_recipients]
        if mx.null_mx:
            reply = Reply(556, "5.1.10", f"{mx.domain} does not accept mail (null MX)")
            return [RecipientResult(r.delivery_id, Outcome.BOUNCED, reply) for r in all_recipients]
        attempt = _Attempt(batch, policy, mx)
        per_transaction = self.settings.delivery.recipients_per_transaction
        jobs: deque[_Job] = deque()
        for message in batch.messages:
            rcpts = message.recipients
            for start in range(0, len(rcpts), per_transaction):
                jobs.append(_Job(message, rcpts[start : start + per_transaction]))
        workers = min(self.settings.delivery.per_destination_concurrency, len(jobs))
        # A TaskGroup so that a bug in one worker stops the others before deliver() answers.
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(self._worker(attempt, jobs))
        return attempt.results

    # -- workers --------------------------------------------------------------------------

    async def _worker(self, attempt: _Attempt, jobs: deque[_Job]) -> None:
        async with self.pool.slots(attempt.batch.domain):
            conn: Connection | None = None
            try:
                while jobs:
                    job = jobs.popleft()
                    conn = await self._run_job(attempt, job, conn)
            except BaseException:
                # Cancelled or a bug, perhaps mid-transaction: never pool that connection.
                if conn is not None:
                    self.pool.discard(conn)
                raise
            if conn is not None:
                self.pool.release(conn)

    async def _run_job(
        self, attempt: _Attempt, job: _Job, conn: Connection | None
    ) -> Connection | None:
        """Send one transaction; returns the connection if it can carry more."""
        for try_number in (1, 2):
            if conn is None:
                conn, failure = await self._connection(attempt)
                if conn is None:
                    assert failure is not None
                    self._record(
                        attempt, job.recipients, failure.reply, failure.mx, failure.receipt
                    )
                    return None
            refusal = self._refuse_before_sending(attempt, job.message, conn)
            if refusal is not None:
                self._record(attempt, job.recipients, refusal, conn.mx, conn.receipt)
                return conn
            reused = conn.messages > 0 or conn.from_pool
            session = conn.session
            try:
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
            if conn.messages >= self.settings.delivery.messages_per_connection:
                self.pool.release(conn)
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
            secure_source = attempt.policy.source in (PolicySource.DANE, PolicySource.MTA_STS)
            if not (secure_source and conn.receipt.verified and session.supports("REQUIRETLS")):
                return Reply(
                    550,
                    "5.7.30",
                    f"REQUIRETLS support required: {conn.mx.host} is not a verified REQUIRETLS hop",
                )
        return None

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

    def _tls_mode(self, policy: TLSPolicy) -> str:
        if policy.level is TLSLevel.SECURE:
            return "secure:" + ",".join(policy.match_names)
        return policy.level.value

    def _key(self, attempt: _Attempt, host: MXHost, ip: str) -> PoolKey:
        return PoolKey(
            ip, self.settings.delivery.smtp_port, host.name, self._tls_mode(attempt.policy)
        )

    async def _connection(self, attempt: _Attempt) -> tuple[Connection | None, _HostFailure | None]:
        """An idle pooled connection to any MX of the destination, else a new one in MX
        order. When none can be had: (None, the failure to report)."""
        for host in attempt.mx.hosts:
            for ip in host.addresses:
                key = self._key(attempt, host, ip)
                while (conn := self.pool.take(key)) is not None:
                    if await self._still_good(conn):
                        return conn, None
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
                return conn, None
        return None, self._summarise(attempt)

    async def _still_good(self, conn: Connection) -> bool:
        """RSET a connection that sat in the pool; close it when it does not answer."""
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

    def _receipt(
        self,
        attempt: _Attempt,
        *,
        info: TLSInfo | None = None,
        verification: PeerVerification = PeerVerification.NONE,
        sha256: str | None = None,
        downgraded: bool = False,
        verify_error: str | None = None,
    ) -> TLSReceipt:
        return TLSReceipt(
            used=info is not None,
            version=info.version if info else None,
            cipher=info.cipher if info else None,
            verification=verification,
            level=attempt.policy.level,
            policy_source=attempt.policy.source,
            peer_certificate_sha256=sha256,
            downgraded=downgraded,
            verify_error=verify_error,
        )

    async def _open(self, attempt: _Attempt, host: MXHost, ip: str) -> Connection:
        """A new connection to one MX address that satisfies the policy; raises _HostFailure."""
        policy = attempt.policy
        level = policy.level
        mx = MXUsed(host.name, ip)
        key = self._key(attempt, host, ip)

        if level is TLSLevel.DANE_ONLY:
            # No TLSA support yet: dane-only can never be met, so never send in plaintext.
            raise _HostFailure(
                _HostFailure.POLICY,
                Reply(451, "4.7.5", "dane-only policy but DANE is not available"),
                mx,
                self._receipt(attempt),
            )
        if level is TLSLevel.DANE:
            level = TLSLevel.MAY  # DANE without usable TLSA is opportunistic (RFC 7672)

        plaintext_downgrade = level is TLSLevel.MAY and ip in attempt.tls_broken
        session = await self._session(attempt, host, ip)
        if level is TLSLevel.NONE or plaintext_downgrade:
            return Connection(
                key, session, mx, self._receipt(attempt, downgraded=plaintext_downgrade), None
            )

        if not session.supports("STARTTLS"):
            if level.mandatory:
                await session.quit()
                raise _HostFailure(
                    _HostFailure.POLICY,
                    Reply(
                        451, "4.7.4", f"TLS is required, but {host.name} does not offer STARTTLS"
                    ),
                    mx,
                    self._receipt(attempt),
                )
            return Connection(key, session, mx, self._receipt(attempt), None)

        wanted = (
            policy.match_names if level is TLSLevel.SECURE and policy.match_names else (host.name,)
        )
        remembered = None if level.verifies else self.unverified.get(host.name)
        kind = ContextKind.choose(mandatory=level.mandatory, verifying=remembered is None)
        try:
            reply, info = await session.starttls(
                self.contexts.get(kind), host.name, self.pool.session_for(key, kind)
            )
        except TLSHandshakeError as exc:
            session.stream.abort()
            if exc.certificate_failure and not level.verifies:
                return await self._open_unverified(attempt, host, ip, exc.verify_error or "")
            if exc.certificate_failure:
                raise _HostFailure(
                    _HostFailure.POLICY,
                    Reply(
                        451,
                        "4.7.5",
                        f"certificate of {host.name} does not verify: {exc.verify_error}",
                    ),
                    mx,
                    self._receipt(
                        attempt,
                        verification=PeerVerification.UNTRUSTED,
                        verify_error=exc.verify_error,
                    ),
                ) from exc
            return await self._after_handshake_failure(attempt, host, ip, exc)
        except SMTPError as exc:
            session.stream.abort()
            raise _HostFailure(
                _HostFailure.UNREACHABLE,
                Reply(451, "4.4.2", f"STARTTLS with {host.name}: {exc}"),
                mx,
            ) from exc
        if info is None:
            # STARTTLS offered but refused (454 and the like).
            if level.mandatory:
                await session.quit()
                raise _HostFailure(
                    _HostFailure.POLICY,
                    Reply(
                        451, "4.7.4", f"TLS is required, but {host.name} refused STARTTLS: {reply}"
                    ),
                    mx,
                    self._receipt(attempt),
                )
            return Connection(key, session, mx, self._receipt(attempt, downgraded=True), None)

        if info.session_reused:
            self.pool.stats.sessions_resumed += 1
        verify_error = remembered.verify_error if remembered else None
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
        receipt = self._receipt(
            attempt,
            info=info,
            verification=judgement.verification,
            sha256=judgement.sha256,
            verify_error=verify_error,
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
        return Connection(key, session, mx, receipt, kind)

    async def _open_unverified(
        self, attempt: _Attempt, host: MXHost, ip: str, verify_error: str
    ) -> Connection:
        """After a certificate failure at may/encrypt: TLS again without verification, on a
        new connection, and remember the certificate so next time goes straight there."""
        level = TLSLevel.MAY if attempt.policy.level is TLSLevel.DANE else attempt.policy.level
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
                self.contexts.get(kind), host.name, self.pool.session_for(key, kind)
            )
        except TLSHandshakeError as exc:
            session.stream.abort()
            return await self._after_handshake_failure(attempt, host, ip, exc)
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
        if judgement.sha256 is not None:
            self.unverified.remember(host.name, judgement.sha256, verify_error)
        receipt = self._receipt(
            attempt,
            info=info,
            verification=judgement.verification,
            sha256=judgement.sha256,
            verify_error=verify_error,
        )
        return Connection(key, session, mx, receipt, kind)

    async def _after_handshake_failure(
        self, attempt: _Attempt, host: MXHost, ip: str, exc: TLSHandshakeError
    ) -> Connection:
        """A handshake that failed for a reason other than the certificate."""
        mx = MXUsed(host.name, ip)
        level = attempt.policy.level
        if level.mandatory:
            raise _HostFailure(
                _HostFailure.POLICY,
                Reply(451, "4.7.5", f"TLS handshake with {host.name} failed: {exc}"),
                mx,
                self._receipt(attempt),
            ) from exc
        # T6: plaintext on a new connection, and say so in the receipt.
        attempt.tls_broken.add(ip)
        session = await self._session(attempt, host, ip)
        receipt = self._receipt(attempt, downgraded=True, verify_error=exc.verify_error)
        return Connection(self._key(attempt, host, ip), session, mx, receipt, None)
