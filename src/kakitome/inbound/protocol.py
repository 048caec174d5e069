"""The SMTP server protocol: aiosmtpd's state machine with Kakitome's protections on top.

aiosmtpd (≥ 1.4.6) enforces command order, line limits and STARTTLS, ends DATA only at
``<CRLF>.<CRLF>`` (lines are read up to CRLF, so a bare LF or CR never ends a line) and
discards plaintext buffered behind STARTTLS when the handshake completes (T2). This
subclass adds what it leaves out:

- T4: STARTTLS is not advertised inside TLS (aiosmtpd) and is *refused* there (503; aiosmtpd
  would start a second TLS layer); with an argument it gets 501 (aiosmtpd).
- T5: AUTH is not advertised before TLS (the handler's EHLO hook removes it, also on the MX,
  which aiosmtpd would otherwise advertise after STARTTLS without an authenticator) and is
  refused before TLS with 530 5.7.0.
- Limits: commands per connection (``max_commands``), connections at once and per client
  address (421 4.7.0 and close), line length (the stream limit), idle time.
- Replies: aiosmtpd's bare texts get enhanced status codes (RFC 2034), so clients and logs
  see 530 5.7.0, 552 5.3.4, 500 5.5.2 rather than free text.

Talks to: one client socket. Trusts: nothing the client sends. The decisions (which
recipients, what to do with the data) are the handler's (``kakitome.inbound.handler``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from kakitome.inbound.headers import TLSInfo

__all__ = [
    "ConnectionLimits",
    "ConnectionTracker",
    "InboundEnvelope",
    "InboundSession",
    "KakitomeSMTP",
    "tls_info",
]

# aiosmtpd's replies that lack an enhanced status code, and ours.
_REWRITES: dict[bytes, bytes] = {
    b"530 Must issue a STARTTLS command first": b"530 5.7.0 Must issue a STARTTLS command first",
    b"538 5.7.11 Encryption required for requested authentication mechanism": (
        b"530 5.7.0 Must issue a STARTTLS command first"
    ),
    b"552 Error: message size exceeds fixed maximum message size": (
        b"552 5.3.4 Message size exceeds fixed maximum message size"
    ),
    b"552 Error: Too much mail data": b"552 5.3.4 Message size exceeds fixed maximum message size",
    b"500 Command line too long": b"500 5.5.2 Command line too long",
    b"500 Line too long (see RFC5321 4.5.3.1.6)": b"500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)",
    b"503 Error: need MAIL command": b"503 5.5.1 Error: need MAIL command",
    b"503 Error: need RCPT command": b"503 5.5.1 Error: need RCPT command",
    b"503 Error: nested MAIL command": b"503 5.5.1 Error: nested MAIL command",
    b"503 Error: send HELO first": b"503 5.5.1 Error: send HELO first",
    b"503 Error: send EHLO first": b"503 5.5.1 Error: send EHLO first",
    b"501 Syntax: STARTTLS": b"501 5.5.4 Syntax: STARTTLS takes no argument",
    b"454 TLS not available": b"454 4.7.0 TLS not available",
    b"220 Ready to start TLS": b"220 2.0.0 Ready to start TLS",
    b"221 Bye": b"221 2.0.0 Bye",
    b"250 OK": b"250 2.0.0 OK",
}


class InboundSession(Session):
    """aiosmtpd's session plus who authenticated (submission)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.username: str | None = None


class InboundEnvelope(Envelope):
    """aiosmtpd's envelope plus the policy's decision for each accepted recipient."""

    def __init__(self) -> None:
        super().__init__()
        self.decisions: list[Any] = []


@dataclass
class ConnectionTracker:
    """Open connections of one listener group, per client address."""

    max_total: int
    max_per_ip: int
    per_ip: dict[str, int] = field(default_factory=dict)
    total: int = 0
    sessions: set[KakitomeSMTP] = field(default_factory=set)

    def admit(self, ip: str) -> bool:
        if self.total >= self.max_total or self.per_ip.get(ip, 0) >= self.max_per_ip:
            return False
        self.total += 1
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        return True

    def release(self, ip: str) -> None:
        self.total -= 1
        left = self.per_ip.get(ip, 1) - 1
        if left <= 0:
            self.per_ip.pop(ip, None)
        else:
            self.per_ip[ip] = left


@dataclass(frozen=True)
class ConnectionLimits:
    max_commands: int
    max_line_length: int
    idle_timeout: float


def tls_info(transport: asyncio.BaseTransport | None) -> TLSInfo | None:
    """Version and cipher of a TLS transport, or None for plaintext."""
    if transport is None:
        return None
    sslobj = transport.get_extra_info("ssl_object")
    if not isinstance(sslobj, ssl.SSLObject | ssl.SSLSocket):
        return None
    cipher = sslobj.cipher()
    if cipher is None:
        return None
    return TLSInfo(version=cipher[1], cipher=cipher[0], bits=int(cipher[2]))


class KakitomeSMTP(SMTP):
    """One SMTP connection. ``implicit_tls`` for port 465 (the socket is TLS from the start)."""

    def __init__(
        self,
        handler: Any,
        *,
        limits: ConnectionLimits,
        tracker: ConnectionTracker,
        implicit_tls: bool = False,
        **kwargs: Any,
    ) -> None:
        # aiosmtpd sizes its stream reader from this attribute in __init__.
        self.line_length_limit = limits.max_line_length
        super().__init__(handler, timeout=limits.idle_timeout, **kwargs)
        self.implicit_tls = implicit_tls
        self._tracker = tracker
        self._admitted_ip: str | None = None
        self._refused = False
        self._commands_left = limits.max_commands
        for name, method in list(self._smtp_methods.items()):
            self._smtp_methods[name] = self._counted(name, method)

    def _create_session(self) -> Session:
        return InboundSession(self.loop)

    def _create_envelope(self) -> Envelope:
        return InboundEnvelope()

    # -- connection life cycle ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._admitted_ip is None and not self._refused:
            peer = transport.get_extra_info("peername")
            ip = str(peer[0]) if peer else ""
            if not self._tracker.admit(ip):
                self._refused = True
                write = getattr(transport, "write", None)
                if write is not None:
                    write(b"421 4.7.0 Too many connections; try again later\r\n")
                transport.close()
                return
            self._admitted_ip = ip
            self._tracker.sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        if self._admitted_ip is not None:
            self._tracker.release(self._admitted_ip)
            self._tracker.sessions.discard(self)
            self._admitted_ip = None
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if self._refused:
            return False
        return super().eof_received()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)

    def close(self) -> None:
        """Close the connection (at shutdown)."""
        if self.transport is not None:
            self.transport.close()

    # -- protections --------------------------------------------------------------------

    @property
    def is_tls(self) -> bool:
        return self.implicit_tls or self._tls_protocol is not None

    async def push(self, status: Any) -> None:
        data = status.encode("ascii", "replace") if isinstance(status, str) else status
        await super().push(_REWRITES.get(data, data))

    async def smtp_STARTTLS(self, arg: str) -> None:
        if self.is_tls:
            await self.push("503 5.5.1 TLS already active")
            return
        await super().smtp_STARTTLS(arg)

    def _counted(
        self, name: str, method: Callable[[Any], Awaitable[None]]
    ) -> Callable[[Any], Awaitable[None]]:
        async def counted(arg: Any) -> None:
            self._commands_left -= 1
            if self._commands_left < 0:
                await self.push("421 4.7.0 Too many commands; closing connection")
                self.close()
                return
            await method(arg)

        return counted
