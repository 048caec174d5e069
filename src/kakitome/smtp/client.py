"""The outbound SMTP client session: EHLO, STARTTLS, PIPELINING, per-recipient replies.

Talks to: one SMTP server (an MX) over an ``SMTPStream``. Speaks RFC 5321 with the
extensions delivery needs: STARTTLS (RFC 3207), SIZE (RFC 1870), 8BITMIME (RFC 6152),
SMTPUTF8 (RFC 6531), PIPELINING (RFC 2920) and DSN parameters (RFC 3461).

Trusts: nothing the server says before TLS survives TLS: after STARTTLS the capabilities
are forgotten and EHLO is sent again (T1), and bytes the server sent after its 220 to
STARTTLS are discarded by the stream (T3). Policy decisions (must TLS be used, is the
certificate good enough) belong to the caller; this class only reports.

Limits: every reply is read under a time limit (``command_timeout``; the reply to the end
of data under ``data_timeout``); reply lines, lines per reply and bytes per reply are
bounded (``smtp.wire``). Message content is normalised to CRLF and dot-stuffed (T10), and
arguments with CR/LF are refused, so an address cannot inject a command.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

from kakitome.smtp import wire
from kakitome.smtp.exceptions import SMTPConnectionError, SMTPProtocolError, SMTPTimeout
from kakitome.smtp.replies import Reply, ReplySyntaxError, parse_reply, parse_reply_line
from kakitome.smtp.stream import SMTPStream, TLSInfo


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds to wait for a reply (``command``) and for the reply to end-of-data."""

    command: float = 60.0
    data: float = 180.0


@dataclass(frozen=True, slots=True)
class RcptSpec:
    """One RCPT TO: the address and its optional RFC 3461 parameters."""

    address: str
    notify: str | None = None
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class MailSpec:
    """MAIL FROM and its parameters, chosen by the caller."""

    sender: str  # "" is the null sender
    size: int | None = None
    body_8bitmime: bool = False
    smtputf8: bool = False
    requiretls: bool = False
    envid: str | None = None
    ret: str | None = None


@dataclass(frozen=True, slots=True)
class TransactionResult:
    """The replies of one mail transaction; ``rcpt`` is in the order recipients were given.

    ``final`` is the reply that decides each recipient: the RCPT reply when it was negative,
    else the reply to the end of data (or to DATA, or to MAIL, whichever failed first).
    """

    mail: Reply
    rcpt: tuple[Reply, ...]
    data: Reply | None
    final: tuple[Reply, ...] = field(default=())


def _local(code: int, enhanced: str, text: str) -> Reply:
    return Reply(code, enhanced, text)


class SMTPClientSession:
    """Drives one connection. Not safe for concurrent use: one transaction at a time."""

    def __init__(self, stream: SMTPStream, *, helo_name: str, timeouts: Timeouts) -> None:
        self.stream = stream
        self.helo_name = helo_name
        self.timeouts = timeouts
        self.banner: Reply | None = None
        self.ehlo_reply: Reply | None = None
        self.esmtp = False
        # Upper-case keyword -> parameter string, from the latest EHLO only.
        self.capabilities: dict[str, str] = {}
        self.tls: TLSInfo | None = None
        self.transactions = 0
        # True once the current transaction's content went out: from then on a lost
        # connection may mean the message was delivered, so it must not be resent blindly.
        self.content_sent = False

    # -- replies ----------------------------------------------------------------------

    async def read_reply(self, time_limit: float | None = None) -> Reply:
        """Read one complete (possibly multi-line) reply."""
        return (await self.read_replies(1, time_limit))[0]

    async def read_replies(self, count: int, time_limit: float | None = None) -> list[Reply]:
        """Read ``count`` replies in a row (a pipelined group), within one time limit."""
        replies: list[Reply] = []
        try:
            async with asyncio.timeout(self.timeouts.command if time_limit is None else time_limit):
                for _ in range(count):
                    replies.append(await self._reply())
        except TimeoutError as exc:
            raise SMTPTimeout("timed out waiting for the server's reply") from exc
        except ReplySyntaxError as exc:
            raise SMTPProtocolError(str(exc)) from exc
        return replies

    async def _reply(self) -> Reply:
        lines: list[bytes] = []
        total = 0
        while True:
            line = await self.stream.readline(wire.MAX_REPLY_LINE)
            lines.append(line)
            total += len(line)
            if len(lines) > wire.MAX_REPLY_LINES or total > wire.MAX_REPLY_BYTES:
                raise SMTPProtocolError("reply longer than our limits")
            _, last, _ = parse_reply_line(line)
            if last:
                return parse_reply(lines)

    async def command(self, line: bytes, time_limit: float | None = None) -> Reply:
        self.stream.write(line)
        return await self.read_reply(time_limit)

    # -- session ----------------------------------------------------------------------

    async def greet(self) -> Reply:
        """Read the server's greeting."""
        self.banner = await self.read_reply()
        return self.banner

    async def ehlo(self) -> Reply:
        """EHLO, falling back to HELO when the server refuses EHLO with 5xx."""
        self.capabilities = {}
        reply = await self.command(wire.command("EHLO", self.helo_name))
        if reply.code == 250:
            self.esmtp = True
            for line in reply.text.split("\n")[1:]:
                keyword, _, params = line.strip().partition(" ")
                if keyword:
                    self.capabilities[keyword.upper()] = params.strip()
        elif reply.permanent:
            self.esmtp = False
            reply = await self.command(wire.command("HELO", self.helo_name))
        self.ehlo_reply = reply
        return reply

    def supports(self, extension: str) -> bool:
        return extension.upper() in self.capabilities

    @property
    def max_size(self) -> int | None:
        """The server's SIZE limit, None when it declares none."""
        value = self.capabilities.get("SIZE", "")
        return int(value) if value.isdigit() and int(value) > 0 else None

    async def starttls(
        self,
        context: ssl.SSLContext,
        server_hostname: str | None,
        session: ssl.SSLSession | None = None,
    ) -> tuple[Reply, TLSInfo | None]:
        """STARTTLS; on 220 run the handshake and EHLO again with a clean slate (T1).

        Returns the reply to STARTTLS and the TLS facts (None when the server refused).
        TLSHandshakeError propagates: the connection is then unusable.
        """
        reply = await self.command(wire.command("STARTTLS"))
        if reply.code != 220:
            return reply, None
        self.capabilities = {}
        self.ehlo_reply = None
        try:
            async with asyncio.timeout(self.timeouts.command):
                self.tls = await self.stream.start_tls(context, server_hostname, session)
        except TimeoutError as exc:
            raise SMTPTimeout("timed out in the TLS handshake") from exc
        ehlo = await self.ehlo()
        if not ehlo.positive:
            raise SMTPProtocolError(f"EHLO after STARTTLS refused: {ehlo}")
        return reply, self.tls

    async def rset(self) -> Reply:
        return await self.command(wire.command("RSET"))

    async def noop(self) -> Reply:
        return await self.command(wire.command("NOOP"))

    async def quit(self) -> None:
        """QUIT politely and close; never raises."""
        try:
            self.stream.write(wire.command("QUIT"))
            await self.read_reply(time_limit=min(self.timeouts.command, 5.0))
        except Exception:
            pass
        await self.aclose()

    async def aclose(self) -> None:
        await self.stream.aclose()

    # -- transaction --------------------------------------------------------------------

    def mail_command(self, mail: MailSpec) -> bytes:
        params: list[str] = []
        if mail.size is not None and self.supports("SIZE"):
            params.append(f"SIZE={mail.size}")
        if mail.body_8bitmime and self.supports("8BITMIME"):
            params.append("BODY=8BITMIME")
        if mail.smtputf8 and self.supports("SMTPUTF8"):
            params.append("SMTPUTF8")
        if mail.requiretls and self.supports("REQUIRETLS"):
            params.append("REQUIRETLS")
        if self.supports("DSN"):
            if mail.ret:
                params.append(f"RET={mail.ret}")
            if mail.envid:
                params.append(f"ENVID={wire.xtext(mail.envid)}")
        return wire.command(f"MAIL FROM:<{mail.sender}>", *params)

    def rcpt_command(self, rcpt: RcptSpec) -> bytes:
        params: list[str] = []
        if self.supports("DSN"):
            if rcpt.notify:
                params.append(f"NOTIFY={rcpt.notify}")
            if rcpt.orcpt:
                params.append(f"ORCPT={wire.xtext(rcpt.orcpt)}")
        return wire.command(f"RCPT TO:<{rcpt.address}>", *params)

    async def send_mail(
        self, mail: MailSpec, recipients: Sequence[RcptSpec], content: bytes
    ) -> TransactionResult:
        """One mail transaction; pipelined when the server offers PIPELINING.

        Negative replies are returned, not raised. Network failures and timeouts raise
        (SMTPConnectionError, SMTPTimeout, SMTPProtocolError): the connection is then
        unusable and the caller treats every recipient as not delivered.
        """
        if not recipients:
            raise ValueError("a transaction needs at least one recipient")
        self.transactions += 1
        self.content_sent = False
        if self.supports("PIPELINING"):
            return await self._send_pipelined(mail, recipients, content)
        return await self._send_lockstep(mail, recipients, content)

    async def _send_pipelined(
        self, mail: MailSpec, recipients: Sequence[RcptSpec], content: bytes
    ) -> TransactionResult:
        # RFC 2920 §3.1: MAIL, every RCPT and DATA go in one write; replies come in order.
        group = [self.mail_command(mail)]
        group.extend(self.rcpt_command(r) for r in recipients)
        group.append(wire.command("DATA"))
        self.stream.write(b"".join(group))
        # One time limit for the group: the server answers each command in turn.
        mail_reply, *rcpt_replies, data_reply = await self.read_replies(len(group))
        accepted = any(r.positive for r in rcpt_replies) and mail_reply.positive
        if data_reply.code == 354 and not accepted:
            # RFC 2920 §3.1: DATA went through although nobody was accepted; end it empty.
            data_reply = await self.command(wire.END_OF_DATA, self.timeouts.data)
            await self._reset_quietly()
            return self._result(mail_reply, rcpt_replies, data_reply)
        if data_reply.code != 354:
            await self._reset_quietly()
            return self._result(mail_reply, rcpt_replies, data_reply)
        final = await self._send_content(content)
        return self._result(mail_reply, rcpt_replies, final)

    async def _send_lockstep(
        self, mail: MailSpec, recipients: Sequence[RcptSpec], content: bytes
    ) -> TransactionResult:
        mail_reply = await self.command(self.mail_command(mail))
        if not mail_reply.positive:
            await self._reset_quietly()
            return self._result(mail_reply, [mail_reply] * len(recipients), None)
        rcpt_replies = [await self.command(self.rcpt_command(r)) for r in recipients]
        if not any(r.positive for r in rcpt_replies):
            await self._reset_quietly()
            return self._result(mail_reply, rcpt_replies, None)
        data_reply = await self.command(wire.command("DATA"))
        if data_reply.code != 354:
            await self._reset_quietly()
            return self._result(mail_reply, rcpt_replies, data_reply)
        final = await self._send_content(content)
        return self._result(mail_reply, rcpt_replies, final)

    async def _send_content(self, content: bytes) -> Reply:
        self.content_sent = True
        self.stream.write(wire.encode_data(content))
        await self.stream.drain()
        return await self.read_reply(self.timeouts.data)

    async def _reset_quietly(self) -> None:
        # Leave the session ready for the next transaction; a server that cannot RSET
        # will show it at the next command.
        reply = await self.rset()
        if not reply.positive:
            raise SMTPProtocolError(f"RSET refused: {reply}")

    @staticmethod
    def _result(mail: Reply, rcpt: Sequence[Reply], data: Reply | None) -> TransactionResult:
        final: list[Reply] = []
        for reply in rcpt:
            if not mail.positive:
                final.append(mail)
            elif not reply.positive:
                final.append(reply)
            elif data is None:
                final.append(_local(451, "4.3.0", "no reply to DATA"))
            else:
                final.append(data)
        return TransactionResult(mail, tuple(rcpt), data, tuple(final))


__all__ = [
    "MailSpec",
    "RcptSpec",
    "SMTPClientSession",
    "SMTPConnectionError",
    "Timeouts",
    "TransactionResult",
]
