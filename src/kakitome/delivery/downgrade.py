"""The one way to plaintext: what a connection does when TLS does not happen.

Every path of the secure connection (``delivery.connect``) that would send without TLS —
level ``none``, STARTTLS not offered, refused (454, 502, 421), a handshake that failed
after the 220 (a close, garbage), the plaintext retry after it, a pooled plaintext
connection — comes to ``PlaintextGate``, which asks ``tls.plaintext.plaintext_verdict``
(T43) and nothing else.

Refused (usable DANE, ``dane-only``, ``encrypt`` and above, MTA-STS enforce, REQUIRETLS, a
history of TLS for the host while ``settings.stripping`` is on, T44): nothing is sent, the
session is closed, and the host is skipped with a 4.7.x ``HostFailure`` naming the cause
(for a failed handshake the real error, ``handshake_cause``). Allowed (``none``; ``may``
with no history and no protection; ``TLS-Required: No``): plaintext, the receipt's
``plaintext_reason`` naming the rule; a failed handshake means plaintext on a *new*
connection, recorded as a downgrade, and the address is remembered as TLS-broken for the
rest of the attempt (T6) — never for DANE or MTA-STS hosts (``PROTECTED_SOURCES``, T40).
A 421 to STARTTLS closes the session: even where plaintext is allowed it is not that one.

Talks to: the MX host over the session it is handed, or a new one it dials (the
connection module's dialer); the ``TLSBook`` for TLS-RPT counts and stripping events.

Trusts: the host policy and the verdict; nothing the server says in plaintext.

Limits: at most one new connection per call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from kakitome.config import Settings
from kakitome.delivery.outcomes import HostFailure, tls_receipt
from kakitome.delivery.pool import Connection, PoolKey
from kakitome.delivery.tls_ledger import TLSBook, TLSLedger
from kakitome.delivery.types import MXUsed
from kakitome.smtp.client import SMTPClientSession
from kakitome.smtp.exceptions import SMTPError, TLSHandshakeError
from kakitome.smtp.replies import Reply
from kakitome.tls.contexts import ContextKind
from kakitome.tls.plaintext import PlaintextVerdict, plaintext_verdict
from kakitome.tls.policy import PolicySource
from kakitome.tls.resolution import HostPolicy
from kakitome.tls.tlsrpt import STARTTLS_NOT_SUPPORTED, VALIDATION_FAILURE

# Sources whose hosts are never remembered as TLS-broken or as having a bad certificate
# (T40): they refuse plaintext by policy, so such a memory could only weaken them.
PROTECTED_SOURCES = (PolicySource.DANE, PolicySource.MTA_STS)

Dial = Callable[[MXUsed], Awaitable[SMTPClientSession]]
KeyOf = Callable[[MXUsed, HostPolicy], PoolKey]


class PlaintextGate:
    """The decision point for plaintext, with what it needs to act on the verdict."""

    def __init__(
        self, settings: Callable[[], Settings], book: TLSBook, dial: Dial, key: KeyOf
    ) -> None:
        self._settings = settings  # read at each use: settings may be reloaded
        self.book = book
        self.dial = dial
        self.key = key

    def verdict(self, ledger: TLSLedger, hp: HostPolicy, failure: str) -> PlaintextVerdict:
        return plaintext_verdict(
            hp,
            failure=failure,
            requiretls=ledger.requiretls,
            stripping=self._settings().stripping,
            now=self.book.clock(),
        )

    async def plaintext(
        self,
        ledger: TLSLedger,
        hp: HostPolicy,
        mx: MXUsed,
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
        verdict = self.verdict(ledger, hp, failure)
        if verdict.stripping is not None:
            await self.book.stripping_event(ledger, hp, mx.ip, verdict.stripping, None)
        receipt = tls_receipt(
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
                text = f"TLS is required ({verdict.reason}), but {mx.host} {failure}"
            raise HostFailure(HostFailure.POLICY, Reply(451, enhanced, text), mx, receipt)
        if broken and hp.source not in PROTECTED_SOURCES:
            ledger.tls_broken.add(mx.ip)
        if session is None:
            session = await self.dial(mx)
        receipt = dataclasses.replace(receipt, plaintext_reason=verdict.reason)
        return Connection(self.key(mx, hp), session, mx, receipt, None)

    async def after_handshake_failure(
        self,
        ledger: TLSLedger,
        hp: HostPolicy,
        mx: MXUsed,
        session: SMTPClientSession,
        kind: ContextKind,
        exc: TLSHandshakeError,
    ) -> Connection:
        """A handshake that failed for a reason other than the certificate: plaintext on a
        new connection when the decision point allows it (T6), else a 4.7.5 deferral."""
        word = self.book.count(ledger, hp, mx.ip, VALIDATION_FAILURE, "tls-handshake")
        cause = handshake_cause(exc, session.stream.discarded_before_tls, kind)
        return await self.plaintext(
            ledger,
            hp,
            mx,
            None,
            failure=f"failed the TLS handshake: {cause}",
            enhanced="4.7.5",
            tlsrpt=word,
            downgraded=True,
            verify_error=exc.verify_error,
            broken=True,
        )

    async def after_refusal(
        self,
        ledger: TLSLedger,
        hp: HostPolicy,
        mx: MXUsed,
        session: SMTPClientSession,
        reply: Reply,
    ) -> Connection:
        """STARTTLS offered but answered with something else than 220 (454, 502, 421):
        plaintext on this connection when the decision point allows it, else 4.7.4."""
        word = self.book.count(ledger, hp, mx.ip, STARTTLS_NOT_SUPPORTED)
        failure = f"refused STARTTLS: {reply}"
        if reply.code == 421:
            # The server is closing this session: even where plaintext is allowed it
            # cannot be this one; another MX (or a later attempt) may do.
            verdict = self.verdict(ledger, hp, failure)
            if verdict.allowed:
                await session.quit()
                raise HostFailure(
                    HostFailure.UNREACHABLE,
                    Reply(451, "4.4.2", f"{mx.host} closed the session: {reply}"),
                    mx,
                )
        return await self.plaintext(
            ledger, hp, mx, session, failure=failure, tlsrpt=word, downgraded=True
        )


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


__all__ = ["PROTECTED_SOURCES", "PlaintextGate", "handshake_cause"]
