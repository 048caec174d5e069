"""Errors of the outbound SMTP wire, in one tree.

    KakitomeError
    └── SMTPError                 something went wrong talking to a peer
        ├── SMTPConnectionError   could not connect, connection reset or closed by the peer
        ├── SMTPTimeout           the peer did not answer in time
        ├── SMTPProtocolError     the peer spoke something that is not SMTP (bad reply
        │                         syntax, a line or reply longer than our limits)
        └── TLSHandshakeError     the TLS handshake failed; ``verify_error`` is set when the
                                  reason is a certificate that does not verify

These never leave the delivery agent: it turns them into per-recipient results.
"""

from __future__ import annotations

from kakitome.errors import KakitomeError


class SMTPError(KakitomeError):
    """A failure talking to an SMTP peer."""


class SMTPConnectionError(SMTPError):
    """Connecting failed, or the connection broke or was closed by the peer."""


class SMTPTimeout(SMTPError):
    """The peer did not answer within the command's time limit."""


class SMTPProtocolError(SMTPError):
    """The peer's bytes are not a valid SMTP reply, or exceed our limits."""


class TLSHandshakeError(SMTPError):
    """The TLS handshake failed.

    ``verify_error`` holds OpenSSL's reason when the certificate did not verify; it is None
    for every other failure (protocol version, ciphers, a peer that hangs up).
    """

    def __init__(self, message: str, verify_error: str | None = None) -> None:
        super().__init__(message)
        self.verify_error = verify_error

    @property
    def certificate_failure(self) -> bool:
        return self.verify_error is not None
