"""A throw-away certificate authority for the local internet.

``TestCA`` makes a root CA (EC P-256) in memory, writes its certificate to ``ca_file``
(give that path to the service as ``KAKITOME_TLS__CA_FILE`` together with
``KAKITOME_TLS__CA_FILE_ONLY=true``, so the system trust store plays no part), and issues
leaf certificates for the kinds of certificate real MX hosts show:

- ``CertKind.VALID``: chains to the CA, names match, in date;
- ``CertKind.EXPIRED``: chains and matches, ``not_after`` yesterday;
- ``CertKind.NOT_YET_VALID``: chains and matches, ``not_before`` tomorrow;
- ``CertKind.WRONG_NAME``: chains, in date, issued for ``wrong-name.invalid`` only;
- ``CertKind.SELF_SIGNED``: right names, in date, signed by its own key;
- ``CertKind.WEAK_KEY``: chains and matches, but an RSA-1024 key (OpenSSL's default
  security level 2 rejects it on the verifying side).

It talks to nothing: it only writes PEM files under its directory (a temporary directory
unless one is given). Keys are never meant to protect anything; do not ship them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import ip_address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertKind", "IssuedCert", "LeafKey", "TestCA", "client_context"]

WRONG_NAME = "wrong-name.invalid"
_DAY = dt.timedelta(days=1)

LeafKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class CertKind(StrEnum):
    VALID = "valid"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    WRONG_NAME = "wrong-name"
    SELF_SIGNED = "self-signed"
    WEAK_KEY = "weak-key"


@dataclass(frozen=True, slots=True)
class IssuedCert:
    """A leaf certificate and its key, as PEM bytes and as files."""

    names: tuple[str, ...]  # the names asked for (the certificate may not carry them)
    kind: CertKind
    cert_pem: bytes  # leaf first, then the issuing CA (none for self-signed)
    key_pem: bytes
    cert_file: Path
    key_file: Path
    der: bytes  # the leaf alone, DER

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the leaf certificate (DER), as in a TLS receipt."""
        return hashlib.sha256(self.der).hexdigest()

    @property
    def spki_der(self) -> bytes:
        cert = x509.load_der_x509_certificate(self.der)
        return cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def tlsa(self, selector: int = 1, matching: int = 1) -> bytes:
        """Certificate association data for a TLSA record (RFC 6698 §2.1)."""
        data = self.spki_der if selector == 1 else self.der
        if matching == 0:
            return data
        if matching == 1:
            return hashlib.sha256(data).digest()
        if matching == 2:
            return hashlib.sha512(data).digest()
        raise ValueError(f"unknown TLSA matching type {matching}")

    def server_context(
        self,
        minimum_version: ssl.TLSVersion | None = None,
        maximum_version: ssl.TLSVersion | None = None,
    ) -> ssl.SSLContext:
        """A server-side context presenting this certificate.

        Security level 0 so that weak keys and old protocol versions can be served on
        purpose; the versions default to OpenSSL's.
        """
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        if minimum_version is not None:
            ctx.minimum_version = minimum_version
        if maximum_version is not None:
            ctx.maximum_version = maximum_version
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kakitome.testing"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _pem_key(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class TestCA:
    """A root CA whose certificate lives in ``ca_file``; thread-safe."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: str | Path | None = None) -> None:
        if directory is None:
            self._tmp: tempfile.TemporaryDirectory[str] | None = tempfile.TemporaryDirectory(
                prefix="kakitome-ca-"
            )
            directory = self._tmp.name
        else:
            self._tmp = None
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._serial = 0
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = _name("kakitome.testing root CA")
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 3650 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.ca_file = self.directory / "ca.pem"
        self.ca_file.write_bytes(self.cert_pem)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this CA and nothing else."""
        return client_context(self.ca_file)

    @staticmethod
    def new_key(kind: CertKind = CertKind.VALID, rsa_bits: int = 0) -> LeafKey:
        """A key for ``issue``: EC P-256, RSA of ``rsa_bits``, or RSA-1024 for WEAK_KEY."""
        if kind is CertKind.WEAK_KEY:
            return rsa.generate_private_key(public_exponent=65537, key_size=1024)
        if rsa_bits:
            return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        return ec.generate_private_key(ec.SECP256R1())

    def issue(
        self,
        names: Sequence[str],
        kind: CertKind = CertKind.VALID,
        *,
        rsa_bits: int = 0,
        key: LeafKey | None = None,
    ) -> IssuedCert:
        """Issue a leaf certificate of the given kind for ``names`` (DNS names or IPs).

        ``key`` reuses a key from ``new_key`` (so TLSA "3 1 x" data stays the same across
        re-issues); otherwise a new one is made: EC P-256, or RSA of ``rsa_bits`` when
        that is > 0 (``WEAK_KEY`` is always RSA-1024).
        """
        if not names:
            raise ValueError("a certificate needs at least one name")
        names = tuple(n.lower().rstrip(".") for n in names)
        if key is None:
            key = self.new_key(kind, rsa_bits)
        now = dt.datetime.now(dt.UTC)
        not_before, not_after = now - _DAY, now + 365 * _DAY
        if kind is CertKind.EXPIRED:
            not_before, not_after = now - 60 * _DAY, now - _DAY
        elif kind is CertKind.NOT_YET_VALID:
            not_before, not_after = now + _DAY, now + 60 * _DAY
        cert_names = (WRONG_NAME,) if kind is CertKind.WRONG_NAME else names
        signer: CertificateIssuerPrivateKeyTypes = self._key
        issuer = self.cert.subject
        if kind is CertKind.SELF_SIGNED:
            signer, issuer = key, _name(cert_names[0])
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cert_names[0]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(_san(cert_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if kind is not CertKind.SELF_SIGNED:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        cert = builder.sign(signer, hashes.SHA256())
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        if kind is not CertKind.SELF_SIGNED:
            cert_pem += self.cert_pem
        key_pem = _pem_key(key)
        with self._lock:
            self._serial += 1
            stem = f"{self._serial:05d}-{kind.value}-{names[0]}"
        cert_file = self.directory / f"{stem}.crt.pem"
        key_file = self.directory / f"{stem}.key.pem"
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        key_file.chmod(0o600)
        return IssuedCert(
            names=names,
            kind=kind,
            cert_pem=cert_pem,
            key_pem=key_pem,
            cert_file=cert_file,
            key_file=key_file,
            der=cert.public_bytes(serialization.Encoding.DER),
        )

    def close(self) -> None:
        """Remove the files when the directory was a temporary one."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def client_context(ca_file: str | Path) -> ssl.SSLContext:
    """A verifying client context trusting only ``ca_file`` (the ``ca_file_only`` world)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ca_file))
    return ctx
