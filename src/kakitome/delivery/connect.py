"""The secure connection: one SMTP session to one MX address that satisfies its TLS policy.

``Connector.open(mx, host_policy, ledger)`` returns a ``Connection`` (``delivery.pool``:
the live session, its pool key, and the TLS receipt of how it travels) or the
``HostFailure`` to record; ``Connector.pooled`` hands back an idle pooled connection that
may still be used. The policy itself is resolved before (``tls.resolution``, handed over
as the ``HostPolicy``); the batch loop (``delivery.agent``) decides which hosts to try.

Talks to: the MX address over SMTP on ``settings.delivery.smtp_port`` (from
``settings.delivery.source_address`` when set): TCP, greeting, EHLO, STARTTLS, EHLO
again; the connection pool (saved TLS sessions to resume, idle connections, RSET probes).

Trusts: the ``HostPolicy`` (table, DANE, MTA-STS, history, default). Certificates are
judged by ``tls.contexts`` against the system store plus ``settings.tls.ca_file``, or by
``tls.dane`` against the TLSA records. Nothing the server says before TLS.

What each level needs: ``none`` plaintext; ``may`` any TLS, else plaintext; ``encrypt``
TLS with any certificate; ``verify`` a certificate that chains and matches the MX host
name (MTA-STS ``enforce`` uses it, T23); ``secure`` the next-hop domain or the policy's
``match_names``; ``dane`` a chain matching the host's TLSA records with SNI the TLSA base
domain (T13, T17; no session resumption: the chain must be seen). A certificate failure
where the level allows it (may, encrypt) means TLS again without verification on a new
connection, recorded *untrusted* with OpenSSL's reason; the failing leaf is remembered per
MX host (``UnverifiedCertificates``) so later connections go straight there — never for
DANE or MTA-STS hosts (T40). A verified certificate that changed to one that does not
verify is suspected interception (an event; with ``settings.stripping.defer`` the host is
skipped). Every way to plaintext goes through ``delivery.downgrade`` (T43). A host whose
certificate does not satisfy its policy is skipped (``HostFailure.POLICY``), never used in
plaintext. Every new TLS session attempt is counted for TLS-RPT (T26) and what the host
showed is noted for stripping detection, in the attempt's ``TLSLedger``.

Limits: connect, command and data time limits from the settings; one TCP connection per
``open`` (two when an unverified retry or a plaintext retry after a failed handshake is
allowed).
"""

from __future__ import annotations

import dataclasses
import ssl
import time
from collections.abc import Callable, Sequence

from kakitome.config import Settings
from kakitome.delivery.downgrade import PROTECTED_SOURCES, PlaintextGate
from kakitome.delivery.outcomes import HostFailure, tls_receipt
from kakitome.delivery.pool import Connection, ConnectionPool, PoolKey
from kakitome.delivery.tls_ledger import TLSBook, TLSLedger, policy_result
from kakitome.delivery.types import MXUsed
from kakitome.smtp.client import SMTPClientSession, Timeouts
from kakitome.smtp.exceptions import SMTPError, TLSHandshakeError
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
from kakitome.tls.history import Observation
from kakitome.tls.policy import PolicySource, TLSLevel
from kakitome.tls.receipt import PeerVerification, TLSReceipt
from kakitome.tls.resolution import HostPolicy
from kakitome.tls.state import MemoryTLSState, TLSState
from kakitome.tls.tlsrpt import STARTTLS_NOT_SUPPORTED, VALIDATION_FAILURE, classify_certificate


class Connector:
    """Opens connections that satisfy their host's TLS policy; one per agent."""

    def __init__(
        self,
        settings: Settings,
        pool: ConnectionPool,
        *,
        contexts: ClientContexts | None = None,
        unverified: UnverifiedCertificates | None = None,
        tls_state: TLSState | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings  # replaced when settings are reloaded (runtime)
        self.pool = pool
        self.contexts = contexts or ClientContexts(settings.tls)
        self.unverified = unverified or UnverifiedCertificates()
        self.state: TLSState = tls_state if tls_state is not None else MemoryTLSState()
        self.clock = clock
        self.timeouts = Timeouts(
            command=settings.delivery.command_timeout, data=settings.delivery.data_timeout
        )
        self.book = TLSBook(lambda: self.settings, self.state, clock)
        self.gate = PlaintextGate(lambda: self.settings, self.book, self.dial, self.key)

    def key(self, mx: MXUsed, hp: HostPolicy) -> PoolKey:
        """The pool key of a connection to ``mx`` under ``hp``."""
        return PoolKey(mx.ip, self.settings.delivery.smtp_port, mx.host, hp.pool_mode)

    def ledger(self, domain: str, *, requiretls: bool = False) -> TLSLedger:
        """A fresh ledger for one attempt at ``domain``."""
        return TLSLedger(domain, requiretls=requiretls)

    async def open(self, mx: MXUsed, hp: HostPolicy, ledger: TLSLedger) -> Connection | HostFailure:
        """A new connection to one MX address that satisfies ``hp``, or why not."""
        try:
            return await self._open(ledger, hp, mx)
        except HostFailure as failure:
            return failure

    # -- pooled connections ---------------------------------------------------------------

    async def pooled(
        self,
        candidates: Sequence[tuple[MXUsed, HostPolicy]],
        ledger: TLSLedger,
        *,
        probe_after: float,
    ) -> Connection | None:
        """An idle pooled connection to any of ``candidates`` that may still be used: one
        pooled in plaintext only while plaintext is still allowed, one idle for
        ``probe_after`` seconds or more only after a positive RSET."""
        for mx, hp in candidates:
            key = self.key(mx, hp)
            while (conn := self.pool.take(key)) is not None:
                if not conn.receipt.used:
                    verdict = self.gate.verdict(ledger, hp, "was pooled in plaintext")
                    if not verdict.allowed or verdict.stripping is not None:
                        # Pooled in plaintext, but the host is now expected to offer
                        # TLS: open a new connection, which asks again.
                        self.pool.release(conn, reusable=False)
                        continue
                if conn.idled < probe_after or await self._still_good(conn):
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

    # -- opening ----------------------------------------------------------------------------

    async def dial(self, mx: MXUsed) -> SMTPClientSession:
        """TCP connect, greeting, EHLO; raises HostFailure."""
        delivery = self.settings.delivery
        try:
            stream = await SMTPStream.connect(
                mx.ip,
                delivery.smtp_port,
                time_limit=delivery.connect_timeout,
                source_address=delivery.source_address,
            )
        except SMTPError as exc:
            raise HostFailure(HostFailure.UNREACHABLE, Reply(451, "4.4.1", str(exc)), mx) from exc
        session = SMTPClientSession(
            stream, helo_name=delivery.helo_hostname, timeouts=self.timeouts
        )
        try:
            banner = await session.greet()
            if banner.code != 220:
                await session.quit()
                raise HostFailure(HostFailure.REJECTED, banner, mx)
            ehlo = await session.ehlo()
            if not ehlo.positive:
                await session.quit()
                raise HostFailure(HostFailure.REJECTED, ehlo, mx)
        except SMTPError as exc:
            stream.abort()
            raise HostFailure(
                HostFailure.UNREACHABLE, Reply(451, "4.4.2", f"session set-up: {exc}"), mx
            ) from exc
        return session

    async def _open(self, ledger: TLSLedger, hp: HostPolicy, mx: MXUsed) -> Connection:
        """A new connection to one MX address that satisfies the policy; raises HostFailure."""
        book, gate, ip = self.book, self.gate, mx.ip
        key = self.key(mx, hp)
        if hp.skip is not None:
            word = book.count(ledger, hp, ip, hp.skip_result, hp.skip_reason_code)
            raise HostFailure(HostFailure.POLICY, hp.skip, mx, tls_receipt(hp, tlsrpt=word))
        level = hp.level

        if level is TLSLevel.NONE:
            return await gate.plaintext(
                ledger, hp, mx, None, failure="is not asked for STARTTLS (level none)"
            )
        if ip in ledger.tls_broken:
            # T6: the handshake failed earlier in this attempt, and plaintext was allowed.
            return await gate.plaintext(
                ledger, hp, mx, None, failure="failed the TLS handshake earlier", downgraded=True
            )
        session = await self.dial(mx)

        if not session.supports("STARTTLS"):
            ledger.observe(mx.host, Observation(offered_starttls=False))
            word = book.count(ledger, hp, ip, STARTTLS_NOT_SUPPORTED)
            return await gate.plaintext(
                ledger, hp, mx, session, failure="does not offer STARTTLS", tlsrpt=word
            )

        if level.dane and hp.tlsa:
            return await self._open_dane(ledger, hp, mx, session)

        wanted = hp.match_names if level is TLSLevel.SECURE and hp.match_names else (mx.host,)
        protected = hp.source in PROTECTED_SOURCES and not hp.sts_testing
        remembered = None if level.verifies or protected else self.unverified.get(mx.host)
        # DANE with only unusable TLSA records: encryption without authentication (T14).
        verifying = remembered is None and hp.source is not PolicySource.DANE
        kind = ContextKind.choose(mandatory=level.mandatory, verifying=verifying)
        try:
            reply, info = await self._starttls(
                session, mx, kind, hp.sni or mx.host, self.pool.session_for(key, kind)
            )
        except TLSHandshakeError as exc:
            if exc.certificate_failure and not level.verifies:
                return await self._open_unverified(ledger, hp, mx, exc.verify_error or "")
            if exc.certificate_failure:
                verification = PeerVerification.UNTRUSTED
                failed = classify_certificate(verification, exc.verify_error)
                word = book.count(ledger, hp, ip, failed)
                ledger.observe(mx.host, Observation(offered_starttls=True))
                raise HostFailure(
                    HostFailure.POLICY,
                    Reply(
                        451,
                        "4.7.5",
                        f"certificate of {mx.host} does not verify: {exc.verify_error}",
                    ),
                    mx,
                    tls_receipt(
                        hp, verification=verification, verify_error=exc.verify_error, tlsrpt=word
                    ),
                ) from exc
            return await gate.after_handshake_failure(ledger, hp, mx, session, kind, exc)
        if info is None:
            return await gate.after_refusal(ledger, hp, mx, session, reply)

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
            self.unverified.forget(mx.host)
            verify_error = "not verified: certificate changed since it last failed verification"
        result, reason_code = policy_result(hp, judgement.verification, verify_error)
        if level.verifies and judgement.verification is not PeerVerification.VERIFIED:
            result = result or classify_certificate(judgement.verification, verify_error)
        seen = Observation(
            True, judgement.sha256, judgement.verification is PeerVerification.VERIFIED
        )
        ledger.observe(mx.host, seen)
        word = book.count(ledger, hp, ip, result, reason_code)
        receipt = tls_receipt(
            hp,
            info=info,
            verification=judgement.verification,
            sha256=judgement.sha256,
            verify_error=verify_error,
            tlsrpt=word,
        )
        if level.verifies and judgement.verification is not PeerVerification.VERIFIED:
            await session.quit()
            raise HostFailure(
                HostFailure.POLICY,
                Reply(
                    451,
                    "4.7.5",
                    f"certificate of {mx.host} does not match {', '.join(wanted)}: {verify_error}",
                ),
                mx,
                receipt,
            )
        return await self._finish(ledger, hp, key, session, mx, receipt, kind, seen)

    async def _finish(
        self,
        ledger: TLSLedger,
        hp: HostPolicy,
        key: PoolKey,
        session: SMTPClientSession,
        mx: MXUsed,
        receipt: TLSReceipt,
        kind: ContextKind,
        seen: Observation,
    ) -> Connection:
        """The stripping check for a completed opportunistic handshake, then the connection."""
        why = await self.book.suspect_stripping(ledger, hp, mx.ip, seen)
        if why is not None:
            receipt = dataclasses.replace(
                receipt, stripping_suspected=why, policy_source=PolicySource.HISTORY
            )
            if self.settings.stripping.defer:
                # Refused: the session failed on its certificate, whatever the host's
                # (missing) RFC 8460 policy counted it as a moment ago.
                result = classify_certificate(receipt.verification, receipt.verify_error)
                last = ledger.sessions[-1] if ledger.sessions else None
                if last is not None and last.mx_host == hp.mx_host and last.result_type is None:
                    ledger.sessions[-1] = dataclasses.replace(last, result_type=result)
                receipt = dataclasses.replace(receipt, tlsrpt_result=result)
                await session.quit()
                raise HostFailure(
                    HostFailure.POLICY,
                    Reply(451, "4.7.5", f"possible TLS interception, not sent: {why}"),
                    mx,
                    receipt,
                )
        secure = hp.secure and receipt.verified
        return Connection(key, session, mx, receipt, kind, secure=secure)

    async def _starttls(
        self,
        session: SMTPClientSession,
        mx: MXUsed,
        kind: ContextKind,
        name: str,
        saved: ssl.SSLSession | None = None,
    ) -> tuple[Reply, TLSInfo | None]:
        """STARTTLS with the context of ``kind``. A failed handshake aborts the stream and
        is raised for the caller to judge (``TLSHandshakeError``); any other SMTP failure
        ends the attempt with this MX (4.4.2)."""
        try:
            return await session.starttls(self.contexts.get(kind), name, saved)
        except TLSHandshakeError:
            session.stream.abort()
            raise
        except SMTPError as exc:
            session.stream.abort()
            raise HostFailure(
                HostFailure.UNREACHABLE, Reply(451, "4.4.2", f"STARTTLS with {mx.host}: {exc}"), mx
            ) from exc

    async def _open_dane(
        self, ledger: TLSLedger, hp: HostPolicy, mx: MXUsed, session: SMTPClientSession
    ) -> Connection:
        """STARTTLS under usable TLSA records: SNI the TLSA base domain, the chain must
        match (T13, T17); any failure skips this MX, never plaintext. No session is
        resumed: the chain must be seen to be matched."""
        key = self.key(mx, hp)
        kind = ContextKind.MANDATORY_NONVERIFYING
        try:
            reply, info = await self._starttls(session, mx, kind, hp.sni or mx.host)
        except TLSHandshakeError as exc:
            return await self.gate.after_handshake_failure(ledger, hp, mx, session, kind, exc)
        if info is None:
            return await self.gate.after_refusal(ledger, hp, mx, session, reply)
        chain = session.stream.peer_chain()
        if not chain and info.peer_certificate:
            chain = [info.peer_certificate]
        sha = certificate_sha256(info.peer_certificate) if info.peer_certificate else None
        match = match_tlsa(chain, hp.tlsa, names=(hp.sni or mx.host, mx.host))
        if not match.ok:
            await session.quit()
            word = self.book.count(ledger, hp, mx.ip, VALIDATION_FAILURE, "tlsa-mismatch")
            raise HostFailure(
                HostFailure.POLICY,
                Reply(
                    451,
                    "4.7.5",
                    f"certificate of {mx.host} does not match its TLSA records: {match.reason}",
                ),
                mx,
                tls_receipt(
                    hp,
                    info=info,
                    verification=PeerVerification.UNTRUSTED,
                    sha256=sha,
                    verify_error=match.reason,
                    tlsrpt=word,
                ),
            )
        ledger.observe(mx.host, Observation(True, sha, True))
        word = self.book.count(ledger, hp, mx.ip, None)
        receipt = tls_receipt(
            hp, info=info, verification=PeerVerification.VERIFIED, sha256=sha, tlsrpt=word
        )
        return Connection(key, session, mx, receipt, kind, secure=True)

    async def _open_unverified(
        self, ledger: TLSLedger, hp: HostPolicy, mx: MXUsed, verify_error: str
    ) -> Connection:
        """After a certificate failure at may/encrypt: TLS again without verification, on a
        new connection, and remember the certificate so next time goes straight there
        (never for hosts under DANE or MTA-STS, T40)."""
        key = self.key(mx, hp)
        session = await self.dial(mx)
        kind = ContextKind.choose(mandatory=hp.level.mandatory, verifying=False)
        if not session.supports("STARTTLS"):
            await session.quit()
            raise HostFailure(
                HostFailure.UNREACHABLE,
                Reply(451, "4.7.4", f"{mx.host} stopped offering STARTTLS"),
                mx,
            )
        try:
            reply, info = await self._starttls(
                session, mx, kind, hp.sni or mx.host, self.pool.session_for(key, kind)
            )
        except TLSHandshakeError as exc:
            return await self.gate.after_handshake_failure(ledger, hp, mx, session, kind, exc)
        if info is None:
            await session.quit()
            raise HostFailure(
                HostFailure.UNREACHABLE,
                Reply(451, "4.7.4", f"{mx.host} refused STARTTLS: {reply}"),
                mx,
            )
        judgement = judge_peer(
            info.peer_certificate,
            chain_verified=False,
            wanted_names=(mx.host,),
            verify_error=verify_error,
        )
        if judgement.sha256 is not None and hp.source not in PROTECTED_SOURCES:
            self.unverified.remember(mx.host, judgement.sha256, verify_error)
        result, reason_code = policy_result(hp, judgement.verification, verify_error)
        seen = Observation(True, judgement.sha256, False)
        ledger.observe(mx.host, seen)
        word = self.book.count(ledger, hp, mx.ip, result, reason_code)
        receipt = tls_receipt(
            hp,
            info=info,
            verification=judgement.verification,
            sha256=judgement.sha256,
            verify_error=verify_error,
            tlsrpt=word,
        )
        return await self._finish(ledger, hp, key, session, mx, receipt, kind, seen)


__all__ = ["Connector"]
