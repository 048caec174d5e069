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
- T28 REQUIRETLS (RFC 8689), on listeners built with ``requiretls=True`` (submission): the
  ``REQUIRETLS`` MAIL FROM parameter is taken only inside TLS and marks the envelope
  (``InboundEnvelope.requiretls``); the handler advertises the keyword only inside TLS.
  Elsewhere (the MX, which relays nothing over SMTP) aiosmtpd refuses it as an unknown
  parameter (555 5.5.4).
- Replies: aiosmtpd's bare texts get enhanced status codes (RFC 2034, RFC 3463), so
  clients and logs see 530 5.7.0, 552 5.3.4, 500 5.5.2 rather than free text
  (``enhanced_reply``). Without one by design: the 220 greeting and the replies to
  HELO/EHLO (RFC 2034 §3), and the intermediate 334 and 354 (RFC 3463 has no class 3).
- T4, TLS unavailable: a listener built without a TLS context (no certificate, and
  self-signed generation off: ``inbound.self_signed_certificate = false``) does not advertise
  STARTTLS and answers it 454 4.7.0, as Postfix does when it has no certificate.

Talks to: one client socket. Trusts: nothing the client sends. The decisions (which
recipients, what to do with the data) are the handler's (``kakitome.inbound.handler``).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import (
    SMTP,
    Envelope,
    Session,
    TLSSetupException,
    _AuthMechAttr,
    login_always_fail,
    syntax,
)

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
    b"454 TLS not available": b"454 4.7.0 TLS not available due to local problem",
    b"220 Ready to start TLS": b"220 2.0.0 Ready to start TLS",
    b"221 Bye": b"221 2.0.0 Bye",
    b"250 OK": b"250 2.0.0 OK",
    b"555 MAIL FROM parameters not recognized or not implemented": (
        b"555 5.5.4 MAIL FROM parameters not recognized or not implemented"
    ),
    b"555 RCPT TO parameters not recognized or not implemented": (
        b"555 5.5.4 RCPT TO parameters not recognized or not implemented"
    ),
    # RFC 3463: X.5.2 a line that cannot be interpreted, X.5.4 a known command with bad or
    # unexpected arguments, X.5.1 a command out of sequence or not offered.
    b"500 Error: bad syntax": b"500 5.5.2 Error: bad syntax",
    b"500 Error: strict ASCII mode": b"500 5.5.2 Error: strict ASCII mode",
    b"554 Command refused due to lack of security": (
        b"554 5.7.0 Command refused due to lack of security"
    ),
    b"501 Syntax: QUIT": b"501 5.5.4 Syntax: QUIT takes no argument",
    b"501 Syntax: RSET": b"501 5.5.4 Syntax: RSET takes no argument",
    b"501 Syntax: DATA": b"501 5.5.4 Syntax: DATA takes no argument",
    b"501 Syntax: VRFY <address>": b"501 5.5.4 Syntax: VRFY <address>",
    b"252 Cannot VRFY user, but will accept message and attempt delivery": (
        b"252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"
    ),
    b"502 EXPN not implemented": b"502 5.5.1 EXPN not implemented",
    b"503 Already authenticated": b"503 5.5.1 Already authenticated",
    b"501 Not enough value": b"501 5.5.4 Syntax: AUTH mechanism [initial-response]",
    b"501 Too many values": b"501 5.5.4 Syntax: AUTH mechanism [initial-response]",
    b"500 Error: command 'AUTH' not recognized": b"500 5.5.1 Error: AUTH needs EHLO, not HELO",
    b"501 Syntax: MAIL FROM: <address>": b"501 5.5.2 Syntax: MAIL FROM:<address>",
    b"501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]": (
        b"501 5.5.2 Syntax: MAIL FROM:<address> [SP <mail-parameters>]"
    ),
    b"501 Syntax: RCPT TO: <address>": b"501 5.5.2 Syntax: RCPT TO:<address>",
    b"501 Syntax: RCPT TO: <address> [SP <mail-parameters>]": (
        b"501 5.5.2 Syntax: RCPT TO:<address> [SP <mail-parameters>]"
    ),
    b"501 Error: BODY can only be one of 7BIT, 8BITMIME": (
        b"501 5.5.4 Error: BODY can only be one of 7BIT, 8BITMIME"
    ),
    b"501 Error: SMTPUTF8 takes no arguments": b"501 5.5.4 Error: SMTPUTF8 takes no arguments",
    b"501 Error: SMTPUTF8 disabled": b"501 5.5.4 Error: SMTPUTF8 disabled",
}

# aiosmtpd's replies with variable text (a command name, an address, a command list):
# the prefix, and the enhanced code to put after the reply code.
_PREFIX_REWRITES: tuple[tuple[bytes, bytes], ...] = (
    (b'500 Error: command "', b"5.5.2"),  # "... not recognized" (RFC 3463 X.5.2)
    (b"502 Could not VRFY ", b"5.1.3"),  # the address did not parse
    (b"250 Syntax: ", b"2.0.0"),  # HELP <command>
    (b"250 Supported commands: ", b"2.0.0"),  # HELP
    (b"501 Supported commands: ", b"5.5.4"),  # HELP <unknown command>
)


def enhanced_reply(line: bytes) -> bytes:
    """``line`` (one reply line, no CRLF) with aiosmtpd's bare text given its enhanced code."""
    found = _REWRITES.get(line)
    if found is not None:
        return found
    for prefix, code in _PREFIX_REWRITES:
        if line.startswith(prefix):
            return line[:4] + code + b" " + line[4:]
    return line


# T28, RFC 8689 §4.1: REQUIRETLS is used only in a session that negotiated TLS. In
# plaintext we answer as RFC 3207 §4 does for a command that needs TLS first (530, "must
# issue STARTTLS"), with 5.7.10 "Encryption Needed" (RFC 5248 registry): it tells the
# client what to do (STARTTLS, then retry). 555 5.5.4 "parameter not implemented" would say
# this server lacks the extension, and a REQUIRETLS client would then give the message up
# with 5.7.30 (RFC 8689 §4.2.1) instead of upgrading the session.
_REQUIRETLS_PLAINTEXT = "530 5.7.10 REQUIRETLS requires TLS"
_REQUIRETLS_VALUE = "501 5.5.4 Syntax: REQUIRETLS takes no value"


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
        # RFC 8689: MAIL FROM carried REQUIRETLS (only ever set inside TLS).
        self.requiretls = False


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


class _CountedCommands(dict[str, Any]):
    """aiosmtpd's command table (name -> bound ``smtp_*`` method) that counts look-ups:
    past ``max_commands`` every command is answered 421 and the connection closed."""

    def __init__(self, owner: KakitomeSMTP, names: dict[str, str], budget: int) -> None:
        super().__init__((name, getattr(owner, attr)) for name, attr in names.items())
        self.budget = budget
        self._closer = owner._too_many_commands

    def get(self, key: str, default: Any = None) -> Any:
        method = super().get(key, default)
        if method is None:
            return default
        self.budget -= 1
        return self._closer if self.budget < 0 else method


@dataclass(frozen=True)
class _Tables:
    """What aiosmtpd's ``__init__`` finds by introspection, found once per class/handler."""

    smtp_methods: dict[str, str]  # command -> attribute name on the protocol
    auth_methods: dict[str, tuple[bool, str]]  # mechanism -> (on the protocol?, attribute)
    hooks: dict[str, Any]  # aiosmtpd's _handle_hooks (bound methods of the handler)


_TABLES: dict[tuple[type, int], _Tables] = {}


def _tables(cls: type, handler: Any) -> _Tables:
    key = (cls, id(handler))
    found = _TABLES.get(key)
    if found is None:
        smtp = {a.replace("smtp_", ""): a for a in dir(cls) if a.startswith("smtp_")}
        auth: dict[str, tuple[bool, str]] = {}
        for owner, is_builtin in ((cls, True), (type(handler), False)):
            for attr in dir(owner):
                if attr.startswith("auth_"):
                    function = getattr(owner, attr)
                    mechanism = getattr(
                        function,
                        "__auth_mechanism_name__",
                        attr.replace("auth_", "").replace("__", "-"),
                    )
                    auth[mechanism] = (is_builtin, attr)
        hooks = {
            a.replace("handle_", ""): getattr(handler, a)
            for a in dir(handler)
            if a.startswith("handle_")
        }
        found = _TABLES[key] = _Tables(smtp, auth, hooks)
    return found


class KakitomeSMTP(SMTP):
    """One SMTP connection. ``implicit_tls`` for port 465 (the socket is TLS from the start).

    Three departures from aiosmtpd for speed (the protocol is aiosmtpd's):

    - ``__init__`` sets aiosmtpd 1.4's attributes itself from tables found once per class
      and handler; aiosmtpd runs ``inspect.getmembers`` over the protocol and the handler
      for every connection (about a fifth of the MX's time per message).
      ``tests/inbound/test_protocol_init.py`` checks both set the same attributes.
    - STARTTLS uses the event loop's ``start_tls`` (uvloop's TLS in C when running under
      uvloop) instead of asyncio's pure-Python ``SSLProtocol``.
    - Replies are held back while another complete command line is already waiting
      (RFC 2920 pipelining) and sent in one write with the next reply, as Postfix does; a
      reply is never held when nothing more is waiting, so no client waits on us.
    """

    _MAX_CORKED = 64

    def __init__(
        self,
        handler: Any,
        *,
        limits: ConnectionLimits,
        tracker: ConnectionTracker,
        implicit_tls: bool = False,
        data_size_limit: int | None = None,
        enable_SMTPUTF8: bool = False,
        hostname: str,
        ident: str,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        auth_required: bool = False,
        auth_require_tls: bool = True,
        auth_exclude_mechanism: Iterable[str] = (),
        requiretls: bool = False,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        # aiosmtpd sizes its stream reader from this attribute.
        self.line_length_limit = limits.max_line_length
        self.__ident__ = ident
        self.loop = loop
        asyncio.StreamReaderProtocol.__init__(
            self,
            asyncio.StreamReader(loop=loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected,
            loop=loop,
        )
        self.event_handler = handler
        self.data_size_limit = data_size_limit
        self.enable_SMTPUTF8 = enable_SMTPUTF8
        self._decode_data = False
        # Per connection (aiosmtpd shares one class-level dict among all connections).
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        self.hostname = hostname
        self.tls_context = tls_context
        self.require_starttls = bool(tls_context and require_starttls)
        self._timeout_duration = limits.idle_timeout
        self._timeout_handle = None
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        self._auth_require_tls = auth_require_tls
        self._proxy_timeout = None
        self._authenticator = None
        self._auth_callback = login_always_fail
        self._auth_required = auth_required
        tables = _tables(type(self), handler)
        excluded = set(auth_exclude_mechanism)
        self._auth_methods = {
            mechanism: _AuthMechAttr(getattr(self if builtin else handler, attr), builtin)
            for mechanism, (builtin, attr) in tables.auth_methods.items()
            if mechanism not in excluded
        }
        self._handle_hooks = tables.hooks
        self._ehlo_hook_ver = None if "EHLO" not in tables.hooks else "new"
        self._enforce_call_limit = False
        self._commands = _CountedCommands(self, tables.smtp_methods, limits.max_commands)
        self._smtp_methods = self._commands
        self.implicit_tls = implicit_tls
        self.requiretls = requiretls
        self._tracker = tracker
        self._admitted_ip: str | None = None
        self._refused = False
        self._corked: list[bytes] | None = None

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

    @property
    def offers_requiretls(self) -> bool:
        """REQUIRETLS is offered in EHLO and taken in MAIL FROM: never before TLS (T28)."""
        return self.requiretls and self.is_tls

    # (The decorator keeps MAIL in HELP: aiosmtpd lists only commands that carry it.)
    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        """aiosmtpd's MAIL, plus the REQUIRETLS parameter (T28) on listeners that take it.

        aiosmtpd refuses any parameter it does not know (555), so REQUIRETLS is taken out
        of the line here and, once the transaction has started, recorded on the envelope."""
        found = self._requiretls_param(arg) if self.requiretls else None
        if found is None:
            await super().smtp_MAIL(arg)
            return
        rest, refusal = found
        if refusal:
            await self.push(refusal)
            return
        started_before = self.envelope is not None and bool(self.envelope.mail_from)
        await super().smtp_MAIL(rest)
        envelope = self.envelope
        if not started_before and isinstance(envelope, InboundEnvelope) and envelope.mail_from:
            envelope.requiretls = True
            envelope.mail_options.append("REQUIRETLS")

    def _requiretls_param(self, arg: str | None) -> tuple[str, str] | None:
        """None when the MAIL line has no REQUIRETLS parameter (or is no ESMTP MAIL line:
        aiosmtpd answers those); else the line without it and the refusal reply, or ""."""
        if arg is None or self.session is None or not self.session.extended_smtp:
            return None
        stripped = self._strip_command_keyword("FROM:", arg)
        if stripped is None:
            return None
        address, params = self._getaddr(stripped)
        if address is None or not params:
            return None
        words = params.split()
        keep = [w for w in words if w.upper() != "REQUIRETLS"]
        if any(w.upper().startswith("REQUIRETLS=") for w in words):
            return "", _REQUIRETLS_VALUE
        if len(keep) == len(words):
            return None
        if not self.is_tls:
            return "", _REQUIRETLS_PLAINTEXT
        head = stripped[: len(stripped) - len(params)].rstrip()
        return " ".join(["FROM:" + head, *keep]), ""

    async def push(self, status: Any) -> None:
        data = status.encode("ascii", "replace") if isinstance(status, str) else status
        data = enhanced_reply(data) + b"\r\n"
        corked = self._corked
        if (
            self._more_waiting()
            and not data.startswith((b"421", b"221"))  # the connection closes after these
            and (corked is None or len(corked) < self._MAX_CORKED)
        ):
            if corked is None:
                self._corked = [data]
            else:
                corked.append(data)
            return
        if corked is not None:
            self._corked = None
            data = b"".join(corked) + data
        if self.transport is None or self.transport.is_closing():
            return
        self._writer.write(data)
        await self._writer.drain()

    def _more_waiting(self) -> bool:
        """True when a complete command line is buffered already."""
        buffer: bytearray = self._reader._buffer  # type: ignore[attr-defined]
        return b"\n" in buffer

    async def _too_many_commands(self, arg: Any) -> None:
        await self.push("421 4.7.0 Too many commands; closing connection")
        self.close()

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        if self.is_tls:
            await self.push("503 5.5.1 TLS already active")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: STARTTLS takes no argument")
            return
        if not self.tls_context or self.transport is None:
            await self.push("454 4.7.0 TLS not available due to local problem")
            return
        transport = self.transport
        corked, self._corked = self._corked, None
        # No await between the reply and the switch of protocol: nothing the client sends
        # after it sees 220 can reach the plaintext reader, and what it pipelined behind
        # STARTTLS is discarded unread (T2, RFC 3207 §4.2).
        self._writer.write(b"".join(corked or ()) + b"220 2.0.0 Ready to start TLS\r\n")
        self._reader._buffer.clear()  # type: ignore[attr-defined]
        try:
            tls = await self.loop.start_tls(
                transport,  # type: ignore[arg-type]
                self,
                self.tls_context,
                server_side=True,
                ssl_handshake_timeout=self._timeout_duration,
            )
        except Exception as error:
            raise TLSSetupException() from error
        if tls is None:  # closed during the handshake
            raise TLSSetupException()
        self._original_transport = transport
        self._tls_protocol = tls  # type: ignore[assignment]  # only tested for truth
        self.transport = tls
        self._reader._transport = tls  # type: ignore[attr-defined]
        self._writer._transport = tls  # type: ignore[attr-defined]
        # (The reader may hold the first command sent inside TLS already: keep it.)
        # RFC 3207 §4.2: forget everything learnt before TLS.
        peer = self.session.peer if self.session is not None else None
        self._set_rset_state()  # type: ignore[no-untyped-call]
        self.session = self._create_session()
        self.session.peer = peer
        self.session.ssl = {"ssl_object": tls.get_extra_info("ssl_object")}
        self._tls_handshake_okay = True
        self._reset_timeout()
