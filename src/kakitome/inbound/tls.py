"""Server-side TLS for the listeners: one strong context, certificates reloaded from disk.

Talks to: the certificate and key files named in the settings (or made at first start).
Trusts: those files. Offers (T41): TLS 1.2 and 1.3 only; for TLS 1.2 only ECDHE key
exchange with AES-GCM or ChaCha20-Poly1305 (forward secrecy, AEAD); no compression, no
renegotiation, no session tickets that outlive a key rotation unnoticed (tickets are
OpenSSL's default and are keyed per context, so a reload rotates them).

Reloading without a restart: every handshake goes through ``CertificateSource.context``
(through the SNI callback for implicit TLS, and per connection for STARTTLS), which looks
at the files' modification times at most every ``check_interval`` seconds and builds a new
context when they changed. A reload that fails (a half-written file) keeps the old
context and tries again at the next check.

With no certificate configured, ``ensure_certificate`` makes a self-signed one (EC P-256)
in ``<data_dir>/inbound-tls/`` and says so loudly: senders using opportunistic TLS accept
it, verifying senders will not. With generation off it returns None and the listeners run
without TLS (T4: STARTTLS not offered, 454 4.7.0 when asked).
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["SERVER_CIPHERS", "CertificateSource", "ensure_certificate", "server_context"]

log = structlog.get_logger("kakitome.inbound.tls")

# TLS 1.2 suites: ECDHE + AEAD only. TLS 1.3 suites are all strong (OpenSSL's defaults).
SERVER_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!SHA1"


def server_context(cert_file: str | Path, key_file: str | Path) -> ssl.SSLContext:
    """A server context presenting the given chain, with the limits in the module doc."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(SERVER_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    ctx.options |= ssl.OP_SINGLE_ECDH_USE
    # Senders rarely present client certificates; we neither ask nor check.
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


class CertificateSource:
    """The current server context for a certificate/key pair that may change on disk."""

    def __init__(
        self,
        cert_file: str | Path,
        key_file: str | Path,
        *,
        check_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self._interval = check_interval
        self._clock = clock
        self._stamp = self._mtimes()
        self._context = server_context(self.cert_file, self.key_file)
        self._checked = clock()
        self.reloads = 0
        # The context handed to servers: its SNI callback swaps in the current one, so
        # implicit-TLS servers (whose context is fixed at bind time) see reloads too.
        self._front = server_context(self.cert_file, self.key_file)
        self._front.sni_callback = self._on_client_hello

    def _mtimes(self) -> tuple[int, int]:
        return (os.stat(self.cert_file).st_mtime_ns, os.stat(self.key_file).st_mtime_ns)

    def context(self) -> ssl.SSLContext:
        """The newest context (reloaded when the files changed since the last check)."""
        now = self._clock()
        if now - self._checked >= self._interval:
            self._checked = now
            try:
                stamp = self._mtimes()
                if stamp != self._stamp:
                    self._context = server_context(self.cert_file, self.key_file)
                    self._stamp = stamp
                    self.reloads += 1
                    log.info("TLS certificate reloaded", cert_file=str(self.cert_file))
            except (OSError, ssl.SSLError) as exc:
                log.warning("TLS certificate reload failed; keeping the old one", error=str(exc))
        return self._context

    @property
    def front(self) -> ssl.SSLContext:
        """The context to give a server or an SMTP session: it delegates each handshake
        to ``context()``."""
        return self._front

    def _on_client_hello(
        self, sslobj: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext
    ) -> None:
        sslobj.context = self.context()


def ensure_certificate(
    cert_file: str | None,
    key_file: str | None,
    data_dir: Path,
    hostname: str,
    *,
    generate: bool = True,
) -> tuple[Path, Path] | None:
    """The configured pair, or a self-signed one made (once) under ``data_dir``; None when
    none is configured and ``generate`` is off (the listeners then run without TLS)."""
    if cert_file and key_file:
        return Path(cert_file), Path(key_file)
    if cert_file or key_file:
        raise ValueError("inbound.cert_file and inbound.key_file go together")
    if not generate:
        log.warning(
            "no inbound TLS certificate configured and self-signed generation off: "
            "STARTTLS is not offered (454 if asked) and implicit TLS (465) does not start"
        )
        return None
    directory = data_dir / "inbound-tls"
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.warning(
        "no inbound TLS certificate configured: made a self-signed one; set "
        "inbound.cert_file and inbound.key_file for senders that verify",
        cert_file=str(cert_path),
    )
    return cert_path, key_path
