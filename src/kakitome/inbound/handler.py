"""The aiosmtpd handlers: the MX (port 25) and submission (587 and 465).

The protocol object calls these hooks; each returns the reply line. What each listener
accepts:

- MX: any sender, recipients as ``InboundPolicy`` decides (never an open relay), no AUTH.
  At DATA: the T10 check, ``Received`` + ``Authentication-Results``, then the processor's
  verdict is committed (group commit) before 250; a failed commit answers 451 4.3.0.
- Submission: AUTH PLAIN/LOGIN after TLS (aiosmtpd refuses MAIL before AUTH with 530
  5.7.0); the envelope and header From domains must be configured sending domains
  (``senders``: 550 5.7.1 otherwise); the message, with a ``Received`` field saying
  ESMTPSA, goes through the one injection path (``Injector.submit_raw``: validation,
  DKIM, queue) and 250 means queued. ``MAIL FROM ... REQUIRETLS`` (inside TLS only, T28)
  queues the message with ``requiretls`` set.

T10: the data must not contain a CR or LF that is not part of a CRLF pair. aiosmtpd only
ends DATA at ``<CRLF>.<CRLF>``, so ``\\n.\\n`` or ``\\r.\\r`` never end a message here; a
message that carries them is refused whole (550 5.5.2), because another server down the
line might read them as the end of data.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import structlog
from aiosmtpd.smtp import MISSING, AuthResult, LoginPassword

from kakitome.auth.dnsio import AsyncLookup
from kakitome.auth.results import AuthResult as AuthClause
from kakitome.errors import InputError, StorageError
from kakitome.inbound.headers import (
    AUTH_BUDGET,
    SPFCache,
    authenticate,
    protocol_name,
    received_field,
    with_auth_results,
)
from kakitome.inbound.policy import InboundPolicy, RecipientDecision
from kakitome.inbound.processor import MXProcessor, Received
from kakitome.inbound.protocol import InboundEnvelope, InboundSession, KakitomeSMTP, tls_info
from kakitome.inbound.senders import SendingDomains, from_domains, refusal
from kakitome.inbound.store import NewInbound
from kakitome.inbound.users import Authenticator, AuthOutcome
from kakitome.injection import Injector
from kakitome.message import MessageTooLarge
from kakitome.store.ids import new_message_id

__all__ = ["GroupCommit", "MXHandler", "SubmissionHandler", "has_bare_cr_or_lf"]

log = structlog.get_logger("kakitome.inbound")

T = TypeVar("T")
R = TypeVar("R")


def has_bare_cr_or_lf(data: bytes) -> bool:
    """True when ``data`` has a CR not followed by LF or an LF not preceded by CR.

    CRLF pairs cannot overlap, so every CR and every LF is in a pair exactly when there are
    as many CRs and as many LFs as pairs (three scans in C, no regular expression)."""
    pairs = data.count(b"\r\n")
    return data.count(b"\r") != pairs or data.count(b"\n") != pairs


class GroupCommit(Generic[T, R]):
    """Items handed in while a commit runs are written together in the next one."""

    def __init__(self, write: Callable[[list[T]], Awaitable[list[R]]], max_batch: int = 256):
        self._write = write
        self._max = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            try:
                results = await self._write([item for item, _ in batch])
            except BaseException as exc:  # every waiter must hear of the failure
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


class _BaseHandler:
    listener = "mx"

    def __init__(self, hostname: str, max_recipients: int) -> None:
        self.hostname = hostname
        self.max_recipients = max_recipients
        self.advertise_auth = False

    async def handle_EHLO(
        self,
        server: KakitomeSMTP,
        session: InboundSession,
        envelope: InboundEnvelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        keywords = [r[4:] for r in responses[1:]]
        keep = []
        for word in keywords:
            upper = word.upper()
            if upper.startswith("AUTH") and not (self.advertise_auth and server.is_tls):
                continue  # T5; and the MX takes no AUTH at all
            if upper == "HELP":
                continue
            keep.append(word)
        keep += ["PIPELINING", "ENHANCEDSTATUSCODES"]
        if server.offers_requiretls:
            keep.append("REQUIRETLS")  # T28, RFC 8689 §3: only inside TLS
        lines = [responses[0]] + [f"250-{w}" for w in keep]
        lines[-1] = "250 " + lines[-1][4:]
        return lines

    async def handle_MAIL(
        self,
        server: KakitomeSMTP,
        session: InboundSession,
        envelope: InboundEnvelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    def too_many(self, envelope: InboundEnvelope) -> bool:
        return len(envelope.rcpt_tos) >= self.max_recipients

    async def handle_exception(self, error: Exception) -> str:
        log.exception("SMTP session error", error=repr(error))
        return "451 4.3.0 Internal error; try again later"

    def received(
        self,
        server: KakitomeSMTP,
        session: InboundSession,
        envelope: InboundEnvelope,
        queue_id: str,
        now: float,
    ) -> bytes:
        tls = tls_info(server.transport)
        peer = session.peer
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        return received_field(
            helo=session.host_name or "",
            client_ip=ip,
            hostname=self.hostname,
            protocol=protocol_name(
                esmtp=bool(session.extended_smtp),
                tls=tls is not None,
                authenticated=session.username is not None,
            ),
            tls=tls,
            queue_id=queue_id,
            recipient=envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None,
            now=now,
        )


def _client_ip(session: InboundSession) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


class MXHandler(_BaseHandler):
    """Port 25: bounces, complaints, TLS reports and routed mail for our domains."""

    listener = "mx"

    def __init__(
        self,
        *,
        hostname: str,
        authserv_id: str,
        max_recipients: int,
        policy: InboundPolicy,
        processor: MXProcessor,
        commit: GroupCommit[NewInbound, str],
        lookup: AsyncLookup | None,
        clock: Callable[[], float] = time.time,
        auth_budget: float = AUTH_BUDGET,
    ) -> None:
        super().__init__(hostname, max_recipients)
        self.auth_budget = auth_budget
        self.spf_cache = SPFCache()
        self.authserv_id = authserv_id
        self.policy = policy
        self.processor = processor
        self.commit = commit
        self.lookup = lookup
        self.clock = clock

    async def handle_AUTH(
        self, server: KakitomeSMTP, session: InboundSession, envelope: InboundEnvelope, args: Any
    ) -> str:
        return "503 5.5.1 AUTH not available on this port; use submission (587 or 465)"

    async def handle_RCPT(
        self,
        server: KakitomeSMTP,
        session: InboundSession,
        envelope: InboundEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.too_many(envelope):
            return "452 4.5.3 Too many recipients"
        try:
            decision = await self.policy.check_recipient(address)
        except StorageError:
            return "451 4.3.0 Temporary lookup failure; try again later"
        if decision.verdict.code >= 300:
            return decision.verdict.reply
        envelope.rcpt_tos.append(decision.address or address)
        envelope.rcpt_options.extend(rcpt_options)
        envelope.decisions.append(decision)
        return decision.verdict.reply

    async def handle_DATA(
        self, server: KakitomeSMTP, session: InboundSession, envelope: InboundEnvelope
    ) -> str:
        original = envelope.original_content or b""
        if has_bare_cr_or_lf(original):
            return "550 5.5.2 Message refused: bare CR or LF in data (RFC 5321 2.3.8)"
        now = self.clock()
        queue_id = new_message_id(int(now * 1000))
        ip = _client_ip(session)
        mail_from = envelope.mail_from or ""
        if mail_from == "<>":
            mail_from = ""
        helo = session.host_name or ""
        clauses: list[AuthClause] = []
        if self.lookup is not None:
            clauses = await authenticate(
                original,
                client_ip=ip,
                mail_from=mail_from,
                helo=helo,
                lookup=self.lookup,
                receiver=self.hostname,
                budget=self.auth_budget,
                spf_cache=self.spf_cache,
            )
        received = self.received(server, session, envelope, queue_id, now)
        content = with_auth_results(original, self.authserv_id, clauses, received)
        decisions: list[RecipientDecision] = envelope.decisions
        msg = Received(
            original=original,
            content=content,
            mail_from=mail_from,
            recipients=tuple(zip(envelope.rcpt_tos, decisions, strict=True)),
            client_ip=ip,
            helo=helo,
            tls=tls_info(server.transport),
            received_at=now,
        )
        try:
            item = await self.processor.process(msg)
            inbound_id = await self.commit.submit(item)
        except StorageError as exc:
            log.warning("inbound message not stored", error=str(exc))
            return "451 4.3.0 Storage unavailable; try again later"
        return f"250 2.0.0 OK queued as {inbound_id}"


class SubmissionHandler(_BaseHandler):
    """Ports 587 and 465: authenticated clients hand mail to the injector."""

    listener = "submission"

    def __init__(
        self,
        *,
        hostname: str,
        max_recipients: int,
        injector: Injector,
        authenticator: Authenticator,
        senders: SendingDomains | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(hostname, max_recipients)
        self.advertise_auth = True
        self.injector = injector
        self.authenticator = authenticator
        self.senders = senders
        self.clock = clock

    async def _refused_domain(self, session: InboundSession, domains: list[str], where: str) -> str:
        """The 550 reply for the first domain the user may not send From, or ""."""
        if self.senders is None:
            return ""
        for domain in domains:
            if not await self.senders.allows(session.username or "", domain):
                log.info("sender domain refused", user=session.username, domain=domain, where=where)
                return refusal(domain, where)
        return ""

    async def handle_MAIL(
        self,
        server: KakitomeSMTP,
        session: InboundSession,
        envelope: InboundEnvelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if address and address != "<>" and "@" in address:
            try:
                refused = await self._refused_domain(
                    session, [address.rpartition("@")[2]], "MAIL FROM"
                )
            except StorageError:
                return "451 4.3.0 Temporary lookup failure; try again later"
            if refused:
                return refused
        return await super().handle_MAIL(server, session, envelope, address, mail_options)

    async def handle_RCPT(
        self,
        server: KakitomeSMTP,
        session: InboundSession,
        envelope: InboundEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.too_many(envelope):
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(
        self, server: KakitomeSMTP, session: InboundSession, envelope: InboundEnvelope
    ) -> str:
        original = envelope.original_content or b""
        if has_bare_cr_or_lf(original):
            return "550 5.5.2 Message refused: bare CR or LF in data (RFC 5321 2.3.8)"
        domains = from_domains(original)
        if domains is not None:
            try:
                refused = await self._refused_domain(session, domains, "header From")
            except StorageError:
                return "451 4.3.0 Temporary lookup failure; try again later"
            if refused:
                return refused
        now = self.clock()
        received = self.received(server, session, envelope, new_message_id(int(now * 1000)), now)
        sender = envelope.mail_from or ""
        try:
            message_id = await self.injector.submit_raw(
                received + original,
                sender="" if sender == "<>" else sender,
                recipients=list(envelope.rcpt_tos),
                source="smtp",
                requiretls=envelope.requiretls,
            )
        except MessageTooLarge as exc:
            return f"552 5.3.4 {_one_line(str(exc))}"
        except InputError as exc:
            return f"554 5.6.0 Message refused: {_one_line(str(exc))}"
        except StorageError:
            return "451 4.3.0 Storage unavailable; try again later"
        log.info("message submitted", message_id=message_id, user=session.username)
        return f"250 2.0.0 OK queued as {message_id}"

    # AUTH mechanisms: aiosmtpd calls handler methods named auth_<MECHANISM>.

    async def auth_PLAIN(self, server: KakitomeSMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except ValueError:
                return AuthResult(success=False, handled=False, message="501 5.5.2 Bad base64")
        assert isinstance(blob, bytes)
        parts = blob.split(b"\0")
        if len(parts) != 3:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Bad AUTH PLAIN")
        return await self._check(server, parts[1], parts[2])

    async def auth_LOGIN(self, server: KakitomeSMTP, args: list[str]) -> AuthResult:
        username = await server.challenge_auth(server.AuthLoginUsernameChallenge)
        if username is MISSING:
            return AuthResult(success=False, handled=True)
        password = await server.challenge_auth(server.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        assert isinstance(username, bytes) and isinstance(password, bytes)
        return await self._check(server, username, password)

    async def _check(self, server: KakitomeSMTP, login: bytes, password: bytes) -> AuthResult:
        session = server.session
        assert isinstance(session, InboundSession)
        try:
            username, secret = login.decode("utf-8"), password.decode("utf-8")
        except UnicodeDecodeError:
            return AuthResult(success=False, handled=False)
        try:
            outcome = await self.authenticator.check(username, secret, _client_ip(session))
        except StorageError:
            return AuthResult(success=False, handled=False, message="454 4.7.0 Try again later")
        if outcome is AuthOutcome.OK:
            session.username = username
            return AuthResult(success=True, auth_data=LoginPassword(login, b""))
        if outcome is AuthOutcome.LOCKED:
            return AuthResult(
                success=False,
                handled=False,
                message="454 4.7.0 Too many authentication failures; try again later",
            )
        return AuthResult(success=False, handled=False)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]
