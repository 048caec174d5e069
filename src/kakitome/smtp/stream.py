"""A byte stream over one TCP connection that can switch to TLS in place.

Talks to: one remote SMTP server, over TCP, first in plaintext and then (after STARTTLS)
over TLS driven here through ``ssl.MemoryBIO``. We run TLS ourselves rather than with
``loop.start_tls`` because asyncio cannot hand a saved ``SSLSession`` to the handshake, and
resumption is what makes a reconnect to the same MX cheap.

Trusts: nothing. The stream only moves bytes; what the certificate means is decided by
the caller from the facts ``start_tls`` returns (``tls.contexts``). Bytes the peer sent
before the TLS handshake begins, but after the reply that preceded it, are thrown away
(checklist item T3: a man in the middle must not be able to inject replies that we would
then read as if they came through TLS).

Limits: a line is refused beyond the caller's limit and the unread buffer never grows past
``MAX_BUFFER`` (a peer that floods us is disconnected). Writes honour transport flow
control through ``drain``. Time limits belong to the caller (``asyncio.timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from typing import cast

from kakitome.smtp.exceptions import (
    SMTPConnectionError,
    SMTPProtocolError,
    TLSHandshakeError,
)

# Unread bytes we keep at most: far more than any legitimate burst of pipelined replies.
MAX_BUFFER = 1024 * 1024
_READ_CHUNK = 16384
# ssl.Certificate.public_bytes(format): DER is _ssl.ENCODING_DER, not re-exported by ssl.
_ENCODING_DER: int = ssl._ssl.ENCODING_DER  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class TLSInfo:
    """What the handshake established."""

    version: str  # "TLSv1.3"
    cipher: str  # OpenSSL's name, "TLS_AES_256_GCM_SHA384"
    cipher_bits: int
    peer_certificate: bytes | None  # leaf certificate, DER; None when none was shown
    session_reused: bool
    # True when the context verified the chain during the handshake (CERT_REQUIRED).
    chain_verified: bool


class _Protocol(asyncio.Protocol):
    def __init__(self, stream: SMTPStream) -> None:
        self._stream = stream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not a subclass of asyncio.Transport, so no isinstance.
        self._stream._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._stream._on_data(data)

    def eof_received(self) -> bool:
        self._stream._on_eof(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._stream._on_eof(exc)
        self._stream._on_resume_writing()

    def pause_writing(self) -> None:
        self._stream._paused = True

    def resume_writing(self) -> None:
        self._stream._on_resume_writing()


class SMTPStream:
    """One connection: ``readline``, ``write``, ``drain``, ``start_tls``, ``aclose``."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._scan = 0
        self._eof = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._ssl: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._handshaking = False
        self.tls: TLSInfo | None = None
        # Bytes thrown away when TLS started (T3); kept for tests and logs.
        self.discarded_before_tls = 0
        self.peer: tuple[str, int] | None = None

    @classmethod
    async def connect(
        cls, host: str, port: int, *, time_limit: float, source_address: str | None = None
    ) -> SMTPStream:
        """Open a TCP connection; raises SMTPConnectionError (refused, unreachable, timeout)."""
        loop = asyncio.get_running_loop()
        stream = cls()
        local = (source_address, 0) if source_address else None
        try:
            async with asyncio.timeout(time_limit):
                await loop.create_connection(
                    lambda: _Protocol(stream), host, port, local_addr=local
                )
        except TimeoutError as exc:
            raise SMTPConnectionError(f"connect to {host}:{port} timed out") from exc
        except OSError as exc:
            raise SMTPConnectionError(f"connect to {host}:{port}: {exc.strerror or exc}") from exc
        stream.peer = (host, port)
        return stream

    # -- protocol callbacks -------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        if self._ssl is None:
            self._buf += data
        else:
            self._incoming.write(data)
            if not self._handshaking:
                self._decrypt()
        if len(self._buf) > MAX_BUFFER or self._incoming.pending > MAX_BUFFER:
            self._error = SMTPProtocolError("peer sent more than we buffer; disconnecting")
            self.abort()
        self._wake()

    def _on_eof(self, exc: Exception | None) -> None:
        self._eof = True
        if exc is not None and self._error is None:
            self._error = SMTPConnectionError(f"connection lost: {exc}")
        self._wake()

    def _on_resume_writing(self) -> None:
        self._paused = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            if self._waiter is waiter:
                self._waiter = None

    def _decrypt(self) -> None:
        assert self._ssl is not None
        while True:
            try:
                chunk = self._ssl.read(_READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self._eof = True
                break
            except ssl.SSLError as exc:
                self._error = SMTPConnectionError(f"TLS error: {exc.reason or exc}")
                self._eof = True
                break
            if not chunk:
                self._eof = True
                break
            self._buf += chunk
        self._flush()

    def _flush(self) -> None:
        if self._outgoing.pending and self._transport is not None:
            self._transport.write(self._outgoing.read())

    # -- public API ---------------------------------------------------------------------

    @property
    def at_eof(self) -> bool:
        return (self._eof or self._transport is None or self._transport.is_closing()) and not (
            self._buf
        )

    @property
    def tls_session(self) -> ssl.SSLSession | None:
        """The current TLS session, for resumption on the next connection (None if none).

        Read it late: TLS 1.3 tickets arrive after the handshake, with the next reply.
        """
        if self._ssl is None:
            return None
        return self._ssl.session

    def peer_chain(self) -> list[bytes]:
        """The certificate chain the peer sent in the TLS handshake: leaf first, DER, as
        sent and not verified (DANE judges it: ``tls.dane.match_tlsa``).

        Empty before ``start_tls`` and when the peer showed no certificate. Python 3.13
        has ``SSLObject.get_unverified_chain()``; 3.10-3.12 have the same method,
        undocumented, on the object's private ``_sslobj``. When neither exists the leaf
        alone is returned.
        """
        if self._ssl is None:
            return []
        getter = getattr(self._ssl, "get_unverified_chain", None)
        if getter is None:
            getter = getattr(getattr(self._ssl, "_sslobj", None), "get_unverified_chain", None)
        if getter is None:
            leaf = self._ssl.getpeercert(binary_form=True)
            return [leaf] if leaf else []
        chain: list[bytes] = []
        for cert in getter() or []:
            if isinstance(cert, bytes):
                chain.append(cert)
            else:
                chain.append(cert.public_bytes(_ENCODING_DER))
        return chain

    @property
    def buffered(self) -> int:
        """Bytes received and not yet read."""
        return len(self._buf)

    async def readline(self, limit: int) -> bytes:
        """One line including its LF; SMTPProtocolError beyond ``limit`` bytes."""
        while True:
            index = self._buf.find(b"\n", self._scan)
            if index >= 0:
                line = bytes(self._buf[: index + 1])
                del self._buf[: index + 1]
                self._scan = 0
                if len(line) > limit:
                    raise SMTPProtocolError(f"reply line longer than {limit} octets")
                return line
            self._scan = len(self._buf)
            if self._scan > limit:
                raise SMTPProtocolError(f"reply line longer than {limit} octets")
            if self._error is not None:
                raise self._error
            if self._eof:
                raise SMTPConnectionError("connection closed by the peer")
            await self._wait()

    def write(self, data: bytes) -> None:
        """Queue bytes for sending (encrypted when TLS is on)."""
        if self._transport is None or self._transport.is_closing():
            raise self._error or SMTPConnectionError("connection is closed")
        if self._ssl is None:
            self._transport.write(data)
            return
        view = memoryview(data)
        while view:
            try:
                written = self._ssl.write(view)
            except ssl.SSLError as exc:
                raise SMTPConnectionError(f"TLS error: {exc.reason or exc}") from exc
            view = view[written:]
            self._flush()

    async def drain(self) -> None:
        """Wait until the transport's buffer has room again."""
        while self._paused:
            if self._transport is None or self._transport.is_closing():
                raise self._error or SMTPConnectionError("connection is closed")
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiter = waiter
            await waiter
        if self._error is not None and self._eof:
            raise self._error

    async def start_tls(
        self,
        context: ssl.SSLContext,
        server_hostname: str | None,
        session: ssl.SSLSession | None = None,
    ) -> TLSInfo:
        """Run the client handshake over this connection and return its facts.

        Anything the peer sent before this call and we have not read is discarded (T3).
        ``server_hostname`` is sent as SNI; whether the certificate must match it is the
        context's business (``check_hostname``). A ``session`` from an earlier connection
        made with the same context is offered for resumption. Raises TLSHandshakeError.
        """
        if self._ssl is not None:
            raise SMTPProtocolError("TLS is already on")
        self.discarded_before_tls = len(self._buf)
        self._buf.clear()
        self._scan = 0
        self._handshaking = True
        try:
            self._ssl = context.wrap_bio(
                self._incoming,
                self._outgoing,
                server_side=False,
                server_hostname=server_hostname,
                session=session,
            )
        except (ssl.SSLError, ValueError) as exc:
            # A session from another context: drop it rather than fail the connection.
            if session is None:
                raise TLSHandshakeError(f"TLS set-up failed: {exc}") from exc
            self._ssl = context.wrap_bio(
                self._incoming, self._outgoing, server_side=False, server_hostname=server_hostname
            )
        try:
            while True:
                try:
                    self._ssl.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._flush()
                    if self._incoming.pending:
                        continue
                    if self._eof:
                        raise TLSHandshakeError(
                            "connection closed during the TLS handshake"
                        ) from self._error
                    await self._wait()
        except ssl.SSLCertVerificationError as exc:
            self._flush()
            reason = exc.verify_message or exc.reason or str(exc)
            raise TLSHandshakeError(f"certificate verification failed: {reason}", reason) from exc
        except ssl.SSLError as exc:
            self._flush()
            raise TLSHandshakeError(f"TLS handshake failed: {exc.reason or exc}") from exc
        finally:
            self._handshaking = False
        self._flush()
        self._decrypt()
        cipher = self._ssl.cipher()
        self.tls = TLSInfo(
            version=self._ssl.version() or "unknown",
            cipher=cipher[0] if cipher else "unknown",
            cipher_bits=cipher[2] if cipher else 0,
            peer_certificate=self._ssl.getpeercert(binary_form=True),
            session_reused=self._ssl.session_reused,
            chain_verified=context.verify_mode == ssl.CERT_REQUIRED,
        )
        return self.tls

    def abort(self) -> None:
        """Drop the connection at once."""
        if self._transport is not None:
            self._transport.abort()

    async def aclose(self) -> None:
        """Send TLS close_notify when TLS is on, then close; never waits for the peer."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._ssl is not None and not self._eof:
            with contextlib.suppress(ssl.SSLError):
                self._ssl.unwrap()
            self._flush()
        transport.close()
