"""MX peers for the local internet: a lean SMTP receiver that can misbehave on purpose.

A ``Peer`` listens on one loopback address (``127.0.0.x`` or ``::1``) and a port shared by
every peer of a world, and speaks enough ESMTP to stand in for a real receiving MTA:
EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, VRFY, HELP, QUIT and STARTTLS (RFC 3207: after
the handshake all state is reset and EHLO is required again; plaintext pipelined behind
STARTTLS is discarded, never run inside TLS). Commands pipelined in one segment (RFC 2920)
are all read and answered in order; replies go out in one write when the input runs dry.
DATA is dot-unstuffed; only ``<CRLF>.<CRLF>`` ends it; with ``strict`` (the default) a
message with a bare LF or bare CR is refused (SMTP smuggling, T10).

What it does wrong on request (``PeerBehaviour``, a frozen dataclass; change it at run
time with ``Peer.set_behaviour``): certificates of every ``CertKind``, no STARTTLS,
STARTTLS refused (454) or answered 220 and then closed or followed by garbage, TLS
versions limited (for example TLS 1.0 only), a chosen reply (4xx/5xx) at the greeting,
MAIL, RCPT or end of DATA - always, for the first N times, or for some recipients - a
dropped connection in the middle of DATA, slow replies, any set of the PIPELINING,
8BITMIME, SIZE, SMTPUTF8, ENHANCEDSTATUSCODES, DSN, REQUIRETLS extensions, and "down"
(nothing listening: connections are refused). For the downgrade matrix (attacks.py): a
TLS alert or a forged reply right after the 220 to STARTTLS, a chosen cipher string (weak
TLS 1.2 suites), and a certificate from a CA nobody trusts.

It records every accepted message (``ReceivedMessage``: envelope, data, TLS version and
cipher, SNI, connection id) and counts connections, TLS handshakes and failures,
transactions, drops; all record access is thread-safe. It talks only to clients on the
loopback address it is bound to, never connects anywhere, and bounds what it holds: a
command line to ``MAX_LINE`` bytes, a message to the advertised SIZE, recipients per
transaction to ``MAX_RECIPIENTS``; ``keep_data=False`` stops keeping message bodies.

Throughput (as a benchmark sink), measured on the 2-core machine while other work loaded it
(load average about 2), 1 KB messages, one recipient, ``keep_data=False``, the client in a
separate process on the same machine:

- stdlib ``smtplib``, one connection: 2,000-2,800 messages/s plaintext, about 1,900/s
  inside one TLS 1.3 session (the client is the bottleneck);
- a raw client pipelining MAIL/RCPT/DATA (two round trips per message), one connection:
  6,300-8,600 messages/s plaintext, about 3,400/s inside TLS 1.3;
- a new connection with STARTTLS for every message (smtplib): about 210 messages/s
  (EC P-256 certificate; both ends of the handshake in Python on the same 2 cores).

With the client in the same process (tests/testing/test_mx.py::test_sink_throughput)
the GIL is shared and the numbers halve.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import cast

from kakitome.testing._loop import LoopThread
from kakitome.testing.ca import CertKind, IssuedCert, TestCA

__all__ = [
    "ALWAYS",
    "ConnectionRecord",
    "Fault",
    "Peer",
    "PeerBehaviour",
    "PeerStats",
    "ReceivedMessage",
    "StartTLSFailure",
]

# "Every time", for Fault.times and PeerBehaviour.drop_in_data.
ALWAYS = 1 << 62
# RFC 5321 §4.5.3.1.4 allows 512 octets per command line; extensions (SIZE, DSN, SMTPUTF8)
# make them longer, so we accept four times that.
MAX_LINE = 2048
# RFC 5321 §4.5.3.1.8: a server must accept at least 100 recipients per transaction.
MAX_RECIPIENTS = 1000
DEFAULT_SIZE = 50 * 1024 * 1024
# Lines of the per-connection transcript kept (commands only, each cut to 200 chars).
MAX_TRANSCRIPT = 2000
HANDSHAKE_TIMEOUT = 10.0

_connection_ids = itertools.count(1)


class StartTLSFailure(StrEnum):
    REFUSE = "refuse"  # "454 4.7.0 TLS not available"
    NOT_IMPLEMENTED = "not-implemented"  # advertised, then "502 5.5.1 Command not implemented"
    SHUTDOWN = "shutdown"  # "421 4.3.2 Service shutting down", then the connection closes
    CLOSE = "close"  # "220 Ready to start TLS", then the connection closes
    GARBAGE = "garbage"  # "220 Ready to start TLS", then bytes that are not TLS, then close
    ALERT = "alert"  # "220 Ready to start TLS", then a fatal TLS alert record, then close
    # "220 Ready to start TLS" and a forged "250" in the same write (a man in the middle
    # injecting a reply, T3), then a normal handshake.
    INJECT = "inject"


@dataclass(frozen=True, slots=True)
class Fault:
    """A reply given instead of the normal one.

    ``reply`` is the full reply text, for example ``"451 4.3.0 Try again later"`` (several
    lines separated by ``\\n``, each with its code). ``times`` limits it to the first N
    matching occasions on this peer; ``recipients`` limits it to those addresses (lower
    case; at DATA the fault applies when any recipient of the transaction is listed).
    """

    reply: str
    times: int = ALWAYS
    recipients: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PeerBehaviour:
    """How one MX peer behaves; every field defaults to a well-behaved modern MTA."""

    down: bool = False  # nothing listening: connections are refused
    cert: CertKind = CertKind.VALID
    starttls: bool = True  # advertise and accept STARTTLS
    starttls_failure: StartTLSFailure | None = None
    tls_min_version: ssl.TLSVersion | None = None
    tls_max_version: ssl.TLSVersion | None = None
    # Extensions advertised in the EHLO reply.
    pipelining: bool = True
    eightbitmime: bool = True
    smtputf8: bool = True
    enhancedstatuscodes: bool = True
    dsn: bool = False
    requiretls: bool = False  # advertised only inside TLS (RFC 8689 §4.1)...
    requiretls_in_plaintext: bool = False  # ...unless this misbehaviour is asked for
    size: int = DEFAULT_SIZE  # advertised and enforced; 0: not advertised, not enforced
    greeting_fault: Fault | None = None
    mail_fault: Fault | None = None
    rcpt_fault: Fault | None = None
    data_fault: Fault | None = None  # the reply after the final "."
    drop_in_data: int = 0  # drop the connection mid-DATA on the first N transactions
    delay: float = 0.0  # seconds before each reply (and the greeting)
    strict: bool = True  # refuse messages with bare LF or bare CR
    keep_data: bool = True  # keep message bodies (turn off for long benchmarks)
    transcript: bool = True  # keep each connection's command lines
    # OpenSSL cipher string for TLS 1.2 and below (for example weak CBC suites only);
    # None: the CA's default. Combine with tls_max_version=TLSv1_2 to rule out TLS 1.3.
    tls_ciphers: str | None = None
    # Present a certificate from a different CA than the world's (a chain nobody trusts).
    foreign_ca: bool = False


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    peer_ip: str
    connection_id: int
    client: tuple[str, int]
    helo: str
    mail_from: str  # "" for the null sender
    mail_options: tuple[str, ...]
    rcpt_tos: tuple[str, ...]
    rcpt_options: tuple[tuple[str, ...], ...]
    data: bytes  # dot-unstuffed, CRLF line ends, without the final ".CRLF"
    size: int
    tls: bool
    tls_version: str | None
    tls_cipher: str | None
    sni: str | None
    received_at: float


@dataclass(frozen=True, slots=True)
class ConnectionRecord:
    connection_id: int
    client: tuple[str, int]
    tls: bool
    tls_version: str | None
    tls_cipher: str | None
    sni: str | None
    helo: str | None  # the last EHLO/HELO argument
    commands: tuple[str, ...]  # command lines as received, in order
    messages: int
    # Bytes pipelined behind STARTTLS were thrown away (T2).
    discarded_after_starttls: bool
    max_pipeline: int  # most commands answered in one write
    closed: bool


@dataclass(frozen=True, slots=True)
class PeerStats:
    connections: int = 0
    tls_handshakes: int = 0
    tls_failures: int = 0
    transactions: int = 0  # MAIL commands accepted
    messages: int = 0  # messages accepted
    drops: int = 0  # connections dropped in DATA on purpose
    rejected_bare_lf: int = 0
    max_pipeline: int = 0
    open_connections: int = 0  # open now
    max_concurrent_connections: int = 0  # most open at once (since the last clear())


@dataclass(slots=True)
class _ConnState:
    connection_id: int
    client: tuple[str, int]
    tls: bool = False
    tls_version: str | None = None
    tls_cipher: str | None = None
    sni: str | None = None
    helo: str | None = None
    commands: list[str] = field(default_factory=list)
    messages: int = 0
    discarded_after_starttls: bool = False
    max_pipeline: int = 0
    closed: bool = False

    def snapshot(self) -> ConnectionRecord:
        return ConnectionRecord(
            self.connection_id,
            self.client,
            self.tls,
            self.tls_version,
            self.tls_cipher,
            self.sni,
            self.helo,
            tuple(self.commands),
            self.messages,
            self.discarded_after_starttls,
            self.max_pipeline,
            self.closed,
        )


class Peer:
    """One MX peer: a listener on ``ip:port`` with a ``PeerBehaviour`` and a record.

    ``names`` are the DNS names the peer's certificate is issued for (the world adds MX
    host names as domains point at the peer; the certificate is re-issued each time).
    """

    def __init__(
        self,
        ip: str,
        port: int,
        ca: TestCA,
        behaviour: PeerBehaviour | None = None,
        hostname: str | None = None,
    ) -> None:
        self.ip = ip
        self.port = port
        self.ca = ca
        self.hostname = hostname or f"mx-{ip.replace('.', '-').replace(':', '-')}.peers.test"
        self._behaviour = behaviour or PeerBehaviour()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._names: list[str] = [self.hostname]
        self._messages: list[ReceivedMessage] = []
        self._connections: dict[int, _ConnState] = {}
        self._stats: dict[str, int] = dict.fromkeys(PeerStats.__dataclass_fields__, 0)
        self._fault_uses: dict[str, int] = {}
        self._sni: dict[int, str] = {}
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._loop_thread: LoopThread | None = None
        self._own_loop = False
        self.cert: IssuedCert | None = None
        self._ssl: ssl.SSLContext | None = None
        self._key = ca.new_key(self._behaviour.cert)
        self._issue()

    def __repr__(self) -> str:
        return f"<Peer {self.hostname} {self.address} {self._behaviour}>"

    @property
    def address(self) -> str:
        """``ip:port`` (``[::1]:port`` for IPv6)."""
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}"

    @property
    def behaviour(self) -> PeerBehaviour:
        return self._behaviour

    @property
    def names(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._names)

    # -- certificates -------------------------------------------------------------------

    def _issue(self) -> None:
        b = self._behaviour
        with self._lock:
            names = list(self._names)
        ca = _foreign_ca() if b.foreign_ca else self.ca
        cert = ca.issue(names, b.cert, key=self._key)
        ctx = cert.server_context(b.tls_min_version, b.tls_max_version)
        if b.tls_ciphers is not None:
            ctx.set_ciphers(b.tls_ciphers)
        ctx.sni_callback = self._on_sni
        self.cert, self._ssl = cert, ctx

    def _on_sni(self, sslobj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        if name is not None:
            if len(self._sni) > 10_000:  # entries of failed handshakes are never popped
                self._sni.clear()
            self._sni[id(sslobj)] = name

    def add_names(self, *names: str) -> None:
        """Add DNS names to the certificate (re-issued; new connections get it)."""
        with self._lock:
            new = [n.lower().rstrip(".") for n in names if n.lower().rstrip(".") not in self._names]
            self._names.extend(new)
        if new:
            self._issue()

    # -- life cycle ---------------------------------------------------------------------

    def start(self, loop_thread: LoopThread | None = None) -> Peer:
        """Start listening (unless down) on ``loop_thread``, or on a new one."""
        if loop_thread is None:
            loop_thread = LoopThread("kakitome-peer")
            self._own_loop = True
        self._loop_thread = loop_thread
        loop_thread.call(self.astart())
        return self

    async def astart(self) -> None:
        if self._behaviour.down or self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Session(self), host=self.ip, port=self.port, reuse_address=True, backlog=1024
        )
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]

    async def astop(self, *, abort: bool = True) -> None:
        """Stop listening; with ``abort`` also cut the open connections."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if abort:
            for session in list(self._sessions):
                session.abort()

    def stop(self) -> None:
        if self._loop_thread is None:
            return
        with contextlib.suppress(RuntimeError):
            self._loop_thread.call(self.astop())
        if self._own_loop:
            self._loop_thread.stop()
        self._loop_thread = None

    def set_behaviour(self, behaviour: PeerBehaviour) -> None:
        """Change the behaviour for new commands and connections; resets fault counters.

        Going ``down`` closes the listener and the open connections; coming back up
        listens again.
        """
        old, self._behaviour = self._behaviour, behaviour
        with self._lock:
            self._fault_uses.clear()
        if (old.cert is CertKind.WEAK_KEY) != (behaviour.cert is CertKind.WEAK_KEY):
            self._key = self.ca.new_key(behaviour.cert)
        if (
            old.cert,
            old.tls_min_version,
            old.tls_max_version,
            old.tls_ciphers,
            old.foreign_ca,
        ) != (
            behaviour.cert,
            behaviour.tls_min_version,
            behaviour.tls_max_version,
            behaviour.tls_ciphers,
            behaviour.foreign_ca,
        ):
            self._issue()
        if self._loop_thread is not None and old.down != behaviour.down:
            self._loop_thread.call(self.astop() if behaviour.down else self.astart())

    # -- records ------------------------------------------------------------------------

    def messages(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._messages)

    def messages_for(self, domain: str) -> list[ReceivedMessage]:
        """Messages with at least one recipient at ``domain``."""
        suffix = "@" + domain.lower()
        return [m for m in self.messages() if any(r.lower().endswith(suffix) for r in m.rcpt_tos)]

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Block until ``count`` messages have arrived; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.hostname}: {len(self._messages)} of {count}")
                self._changed.wait(left)
            return list(self._messages)

    async def await_messages(self, count: int) -> list[ReceivedMessage]:
        """``wait_for_messages`` for coroutines: polls, never blocks the caller's loop.

        Bound it with ``asyncio.timeout``.
        """
        while True:
            messages = self.messages()
            if len(messages) >= count:
                return messages
            await asyncio.sleep(0.01)

    def connections(self) -> list[ConnectionRecord]:
        with self._lock:
            return [c.snapshot() for c in self._connections.values()]

    def stats(self) -> PeerStats:
        with self._lock:
            return PeerStats(**self._stats)

    def clear(self) -> None:
        """Forget messages, connections, counters and fault uses."""
        with self._lock:
            self._messages.clear()
            self._connections = {k: v for k, v in self._connections.items() if not v.closed}
            self._stats = dict.fromkeys(self._stats, 0)
            self._stats["open_connections"] = len(self._connections)  # still open
            self._fault_uses.clear()

    # -- used by sessions (on the loop thread) --------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def _use(self, kind: str, fault: Fault | int | None, addresses: Sequence[str] = ()) -> bool:
        """Whether a fault applies now; counts the use."""
        if fault is None or fault == 0:
            return False
        times = fault if isinstance(fault, int) else fault.times
        if (
            isinstance(fault, Fault)
            and fault.recipients
            and not any(a.lower() in fault.recipients for a in addresses)
        ):
            return False
        with self._lock:
            used = self._fault_uses.get(kind, 0)
            if used >= times:
                return False
            self._fault_uses[kind] = used + 1
            return True

    def _record(self, message: ReceivedMessage, conn: _ConnState) -> None:
        with self._changed:
            self._messages.append(message)
            self._stats["messages"] += 1
            conn.messages += 1
            self._changed.notify_all()


_FOREIGN: list[TestCA] = []
_FOREIGN_LOCK = threading.Lock()


def _foreign_ca() -> TestCA:
    """A second CA, made once per process, that no client trusts."""
    with _FOREIGN_LOCK:
        if not _FOREIGN:
            _FOREIGN.append(TestCA())
        return _FOREIGN[0]


class _Close(Exception):
    """End the session."""


class _Session(asyncio.Protocol):
    """One SMTP connection: a buffered reader fed by the protocol, run by one task."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.buf = bytearray()
        self.out: list[bytes] = []
        self.eof = False
        self.waiter: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.pending_commands = 0
        self.conn: _ConnState | None = None
        self.helo: str | None = None
        self.esmtp = False
        self.tls = False
        self.mail_from: str | None = None
        self.mail_options: tuple[str, ...] = ()
        self.rcpts: list[str] = []
        self.rcpt_options: list[tuple[str, ...]] = []
        self.b = peer.behaviour

    # -- protocol callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        host, port = transport.get_extra_info("peername")[:2]
        self.conn = _ConnState(next(_connection_ids), (host, port))
        with self.peer._lock:
            self.peer._stats["connections"] += 1
            self.peer._stats["open_connections"] += 1
            self.peer._stats["max_concurrent_connections"] = max(
                self.peer._stats["max_concurrent_connections"], self.peer._stats["open_connections"]
            )
            self.peer._connections[self.conn.connection_id] = self.conn
        self.peer._sessions.add(self)
        self.task = asyncio.get_running_loop().create_task(self.run())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self._wake()
        self.peer._sessions.discard(self)
        if self.conn is not None and not self.conn.closed:
            self.conn.closed = True
            with self.peer._lock:
                self.peer._stats["open_connections"] -= 1

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- I/O ----------------------------------------------------------------------------

    def reply(self, text: str) -> None:
        self.out.append(text.replace("\n", "\r\n").encode() + b"\r\n")

    def code(self, code: int, enhanced: str, text: str) -> None:
        if self.b.enhancedstatuscodes and self.esmtp:
            self.out.append(f"{code} {enhanced} {text}\r\n".encode())
        else:
            self.out.append(f"{code} {text}\r\n".encode())

    def flush(self) -> None:
        if self.pending_commands and self.conn is not None:
            if self.pending_commands > self.conn.max_pipeline:
                self.conn.max_pipeline = self.pending_commands
                with self.peer._lock:
                    if self.pending_commands > self.peer._stats["max_pipeline"]:
                        self.peer._stats["max_pipeline"] = self.pending_commands
            self.pending_commands = 0
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.out))
        self.out.clear()

    async def more(self) -> None:
        """Send what is pending, then wait for more input."""
        self.flush()
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    async def readline(self) -> bytes | None:
        scan = 0
        while True:
            i = self.buf.find(b"\n", scan)
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            if len(self.buf) > MAX_LINE:
                self.code(500, "5.5.2", "Line too long")
                raise _Close
            if self.eof:
                return None
            scan = len(self.buf)
            await self.more()

    async def read_data(self, limit: int) -> bytes:
        """The DATA section up to and without the final ".CRLF" (still dot-stuffed)."""
        scan = 0
        while True:
            if self.buf[:3] == b".\r\n":
                del self.buf[:3]
                return b""
            i = self.buf.find(b"\r\n.\r\n", scan)
            if i >= 0:
                data = bytes(self.buf[: i + 2])
                del self.buf[: i + 5]
                return data
            if limit and len(self.buf) > limit + 4096:
                self.code(552, "5.3.4", "Message size exceeds fixed limit")
                raise _Close
            if self.eof:
                raise _Close
            scan = max(0, len(self.buf) - 4)
            await self.more()

    # -- the session --------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if self.b.delay:
                await asyncio.sleep(self.b.delay)
            if self.peer._use("greeting", self.b.greeting_fault):
                assert self.b.greeting_fault is not None
                self.reply(self.b.greeting_fault.reply)
                raise _Close
            self.reply(f"220 {self.peer.hostname} ESMTP kakitome.testing")
            while True:
                line = await self.readline()
                if line is None:
                    break
                self.b = self.peer.behaviour
                if self.b.delay:
                    self.flush()
                    await asyncio.sleep(self.b.delay)
                self.pending_commands += 1
                if not await self.command(line):
                    break
        except _Close:
            pass
        except (ConnectionError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            self.flush()
            if self.transport is not None:
                self.transport.close()

    async def command(self, line: bytes) -> bool:
        """Handle one command line; False ends the session."""
        text = line.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
        assert self.conn is not None
        if self.b.transcript and len(self.conn.commands) < MAX_TRANSCRIPT:
            self.conn.commands.append(text[:200])
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        arg = arg.strip()
        if verb == "MAIL":
            self.mail(arg)
        elif verb == "RCPT":
            self.rcpt(arg)
        elif verb == "DATA":
            return await self.data(arg)
        elif verb in ("EHLO", "HELO"):
            self.ehlo(verb, arg)
        elif verb == "RSET":
            self.reset()
            self.code(250, "2.0.0", "Ok")
        elif verb == "NOOP":
            self.code(250, "2.0.0", "Ok")
        elif verb == "QUIT":
            self.code(221, "2.0.0", "Bye")
            return False
        elif verb == "STARTTLS":
            return await self.starttls(arg)
        elif verb == "VRFY":
            self.code(252, "2.5.2", "Cannot VRFY user")
        elif verb == "HELP":
            self.code(214, "2.0.0", "See RFC 5321")
        else:
            self.code(500, "5.5.1", "Command not recognized")
        return True

    def reset(self) -> None:
        self.mail_from = None
        self.mail_options = ()
        self.rcpts = []
        self.rcpt_options = []

    def ehlo(self, verb: str, arg: str) -> None:
        if not arg:
            self.code(501, "5.5.4", f"Syntax: {verb} hostname")
            return
        self.reset()
        self.helo = arg
        assert self.conn is not None
        self.conn.helo = arg
        if verb == "HELO":
            self.esmtp = False
            self.reply(f"250 {self.peer.hostname}")
            return
        self.esmtp = True
        b = self.b
        lines = [f"{self.peer.hostname} greets {arg}"]
        if b.pipelining:
            lines.append("PIPELINING")
        if b.size:
            lines.append(f"SIZE {b.size}")
        if b.eightbitmime:
            lines.append("8BITMIME")
        if b.smtputf8:
            lines.append("SMTPUTF8")
        if b.enhancedstatuscodes:
            lines.append("ENHANCEDSTATUSCODES")
        if b.dsn:
            lines.append("DSN")
        if b.starttls and not self.tls:
            lines.append("STARTTLS")
        if b.requiretls and (self.tls or b.requiretls_in_plaintext):
            lines.append("REQUIRETLS")
        body = "".join(f"250-{x}\r\n" for x in lines[:-1]) + f"250 {lines[-1]}\r\n"
        self.out.append(body.encode())

    def _path(self, arg: str, keyword: str) -> tuple[str, tuple[str, ...]] | None:
        if arg[: len(keyword)].upper() != keyword:
            return None
        rest = arg[len(keyword) :].lstrip()
        if not rest.startswith("<"):
            return None
        end = rest.find(">")
        if end < 0:
            return None
        return rest[1:end], tuple(rest[end + 1 :].split())

    def mail(self, arg: str) -> None:
        if self.helo is None:
            self.code(503, "5.5.1", "Send EHLO or HELO first")
            return
        if self.mail_from is not None:
            self.code(503, "5.5.1", "Nested MAIL command")
            return
        parsed = self._path(arg, "FROM:")
        if parsed is None:
            self.code(501, "5.5.4", "Syntax: MAIL FROM:<address>")
            return
        address, options = parsed
        b = self.b
        for option in options:
            key, _, value = option.upper().partition("=")
            if key == "SIZE" and b.size and value.isdigit() and int(value) > b.size:
                self.code(552, "5.3.4", "Message size exceeds fixed limit")
                return
            if key == "REQUIRETLS" and not (
                b.requiretls and (self.tls or b.requiretls_in_plaintext)
            ):
                self.code(555, "5.7.10", "REQUIRETLS not supported here")
                return
            if (key == "SMTPUTF8" and not b.smtputf8) or (
                key == "BODY" and value == "8BITMIME" and not b.eightbitmime
            ):
                self.code(555, "5.5.4", f"{key} not supported")
                return
        if self.peer._use("mail", b.mail_fault, (address,)):
            assert b.mail_fault is not None
            self.reply(b.mail_fault.reply)
            return
        self.mail_from = address
        self.mail_options = options
        self.peer._count("transactions")
        self.code(250, "2.1.0", "Ok")

    def rcpt(self, arg: str) -> None:
        if self.mail_from is None:
            self.code(503, "5.5.1", "Need MAIL command")
            return
        parsed = self._path(arg, "TO:")
        if parsed is None or not parsed[0]:
            self.code(501, "5.5.4", "Syntax: RCPT TO:<address>")
            return
        if len(self.rcpts) >= MAX_RECIPIENTS:
            self.code(452, "4.5.3", "Too many recipients")
            return
        address, options = parsed
        if self.peer._use("rcpt", self.b.rcpt_fault, (address,)):
            assert self.b.rcpt_fault is not None
            self.reply(self.b.rcpt_fault.reply)
            return
        self.rcpts.append(address)
        self.rcpt_options.append(options)
        self.code(250, "2.1.5", "Ok")

    async def data(self, arg: str) -> bool:
        if arg:
            self.code(501, "5.5.4", "Syntax: DATA")
            return True
        if self.mail_from is None:
            self.code(503, "5.5.1", "Need MAIL command")
            return True
        if not self.rcpts:
            self.code(554, "5.5.1", "No valid recipients")
            return True
        b = self.b
        self.reply("354 End data with <CR><LF>.<CR><LF>")
        if self.peer._use("drop", b.drop_in_data):
            while not self.buf and not self.eof:
                await self.more()
            self.peer._count("drops")
            self.abort()
            return False
        raw = await self.read_data(b.size)
        mail_from, rcpts = self.mail_from, tuple(self.rcpts)
        options, rcpt_options = self.mail_options, tuple(self.rcpt_options)
        self.reset()
        if b.strict and (
            raw.count(b"\n") != raw.count(b"\r\n") or raw.count(b"\r") != raw.count(b"\r\n")
        ):
            self.peer._count("rejected_bare_lf")
            self.code(550, "5.6.11", "Bare CR or LF in message refused")
            return True
        data = raw[1:] if raw.startswith(b".") else raw
        data = data.replace(b"\r\n.", b"\r\n")
        if b.size and len(data) > b.size:
            self.code(552, "5.3.4", "Message size exceeds fixed limit")
            return True
        if self.peer._use("data", b.data_fault, rcpts):
            assert b.data_fault is not None
            self.reply(b.data_fault.reply)
            return True
        conn = self.conn
        assert conn is not None
        message = ReceivedMessage(
            peer_ip=self.peer.ip,
            connection_id=conn.connection_id,
            client=conn.client,
            helo=self.helo or "",
            mail_from=mail_from,
            mail_options=options,
            rcpt_tos=rcpts,
            rcpt_options=rcpt_options,
            data=data if b.keep_data else b"",
            size=len(data),
            tls=self.tls,
            tls_version=conn.tls_version,
            tls_cipher=conn.tls_cipher,
            sni=conn.sni,
            received_at=time.time(),
        )
        self.peer._record(message, conn)
        self.code(250, "2.0.0", f"Ok: queued as {conn.connection_id}.{conn.messages}")
        return True

    async def starttls(self, arg: str) -> bool:
        b = self.b
        if arg:
            self.code(501, "5.5.4", "Syntax: STARTTLS")
            return True
        if self.tls:
            self.code(503, "5.5.1", "TLS already active")
            return True
        if not b.starttls:
            self.code(502, "5.5.1", "Command not implemented")
            return True
        ctx = self.peer._ssl
        if b.starttls_failure is StartTLSFailure.REFUSE or ctx is None:
            self.code(454, "4.7.0", "TLS not available due to temporary reason")
            return True
        if b.starttls_failure is StartTLSFailure.NOT_IMPLEMENTED:
            self.code(502, "5.5.1", "Command not implemented")
            return True
        if b.starttls_failure is StartTLSFailure.SHUTDOWN:
            self.code(421, "4.3.2", "Service shutting down")
            return False
        self.reply("220 2.0.0 Ready to start TLS")
        if b.starttls_failure is StartTLSFailure.INJECT:
            self.reply("250 2.0.0 injected in plaintext after the 220")
        assert self.conn is not None and self.transport is not None
        if self.buf:
            # T2: plaintext sent behind STARTTLS is thrown away, never read inside TLS.
            self.conn.discarded_after_starttls = True
            self.buf.clear()
        self.flush()
        if b.starttls_failure is StartTLSFailure.CLOSE:
            self.abort()
            return False
        if b.starttls_failure is StartTLSFailure.GARBAGE:
            self.transport.write(b"this is not TLS\r\n\x00\xff\x00\xff")
            self.peer._count("tls_failures")
            return False
        if b.starttls_failure is StartTLSFailure.ALERT:
            # A TLS 1.2 record: alert, fatal (2), handshake_failure (40).
            self.transport.write(b"\x15\x03\x03\x00\x02\x02\x28")
            self.peer._count("tls_failures")
            return False
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                self.transport,
                self,
                ctx,
                server_side=True,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError):
            self.peer._count("tls_failures")
            self.abort()
            return False
        if transport is None:
            self.peer._count("tls_failures")
            return False
        self.transport = transport
        sslobj: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        self.tls = True
        self.helo = None
        self.esmtp = False
        self.reset()
        if sslobj is not None:
            cipher = sslobj.cipher()
            self.conn.tls = True
            self.conn.tls_version = sslobj.version()
            self.conn.tls_cipher = cipher[0] if cipher else None
            self.conn.sni = self.peer._sni.pop(id(sslobj), None)
        self.peer._count("tls_handshakes")
        return True
