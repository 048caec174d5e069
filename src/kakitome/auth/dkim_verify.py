"""DKIM verification for inbound mail (RFC 6376, RFC 8301, RFC 8463).

Talks to: DNS only, through the lookup the caller passes (``kakitome.auth.dnsio``): one TXT
query per signature, for ``<s>._domainkey.<d>``. Trusts: nothing in the message; the key
record as published. Limits: at most ``MAX_SIGNATURES`` signatures are checked per message
(each costs a DNS query and a public-key operation); the rest are reported ``neutral``.

Results per signature use the RFC 8601 vocabulary:

- ``pass``; ``fail`` (bad signature, body hash mismatch, expired ``x=``, or a message with
  several From fields — RFC 5322 allows one, and a second one is how a signed message is
  made to show another author, T32); ``policy`` (valid-looking but refused by RFC 8301:
  ``rsa-sha1``, RSA keys under 1024 bits); ``permerror`` (malformed signature or key
  record, no key, revoked key); ``temperror`` (the key lookup failed); ``neutral`` (not
  checked, past the limit).

Both canonicalisations (simple and relaxed) are supported, and ``l=`` is honoured when a
signer used it (we never do).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from kakitome.auth.dkim_canon import (
    HeaderField,
    canonical_body,
    canonical_header,
    select_headers,
    split_message,
    strip_b_value,
)
from kakitome.auth.dkim_keys import MIN_RSA_BITS
from kakitome.auth.dnsio import (
    AsyncLookup,
    DNSTemporaryError,
    Query,
    Step,
    SyncLookup,
    run_async,
    run_sync,
)

__all__ = [
    "MAX_SIGNATURES",
    "DKIMSignatureResult",
    "DKIMVerification",
    "dkim_steps",
    "parse_tag_list",
    "verify_dkim",
    "verify_dkim_async",
]

MAX_SIGNATURES = 8
# Allowed clock difference for t= in the future (RFC 6376 §3.5 leaves the slop to us).
CLOCK_SKEW = 300

_FWS = re.compile(r"[ \t\r\n]+")
_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class _Outcome(Exception):
    """Internal: a signature's verdict reached before the end of the checks."""

    def __init__(self, result: str, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DKIMSignatureResult:
    """The verdict on one DKIM-Signature field."""

    result: str
    reason: str
    domain: str = ""
    selector: str = ""
    algorithm: str = ""
    identity: str = ""
    signature_b: str = ""  # the b= value, for header.b in Authentication-Results
    key_bits: int | None = None

    @property
    def passed(self) -> bool:
        return self.result == "pass"


@dataclass(frozen=True, slots=True)
class DKIMVerification:
    """The verdicts on all DKIM-Signature fields of a message, top first."""

    signatures: tuple[DKIMSignatureResult, ...]

    @property
    def passing_domains(self) -> tuple[str, ...]:
        """The ``d=`` domains of passing signatures (what DMARC aligns against)."""
        return tuple(s.domain for s in self.signatures if s.passed)

    @property
    def result(self) -> str:
        """``pass`` if any signature passed, ``none`` if there were none, else the first."""
        if not self.signatures:
            return "none"
        if any(s.passed for s in self.signatures):
            return "pass"
        return self.signatures[0].result


def parse_tag_list(value: str) -> dict[str, str]:
    """RFC 6376 §3.2 tag=value list; FWS removed from values. ``ValueError`` on bad syntax
    or a duplicated tag."""
    tags: dict[str, str] = {}
    for part in value.split(";"):
        if not part.strip(" \t\r\n"):
            continue
        name, eq, tag_value = part.partition("=")
        name = name.strip(" \t\r\n")
        if not eq or not _TAG_NAME.fullmatch(name):
            raise ValueError(f"malformed tag {part.strip()!r}")
        if name in tags:
            raise ValueError(f"duplicate tag {name}=")
        tags[name] = _FWS.sub("", tag_value)
    return tags


def verify_dkim(
    message: bytes, lookup: SyncLookup, *, now: float | None = None
) -> DKIMVerification:
    """Verify every DKIM signature of ``message`` with a blocking TXT ``lookup``."""
    return run_sync(dkim_steps(message, time.time() if now is None else now), lookup)


async def verify_dkim_async(
    message: bytes, lookup: AsyncLookup, *, now: float | None = None
) -> DKIMVerification:
    """Verify every DKIM signature of ``message`` with a coroutine TXT ``lookup``."""
    return await run_async(dkim_steps(message, time.time() if now is None else now), lookup)


def dkim_steps(message: bytes, now: float) -> Step[DKIMVerification]:
    """The verification as a ``dnsio`` step (see ``run_sync`` / ``run_async``)."""
    fields, body = split_message(message)
    from_count = sum(1 for f in fields if f.name == b"from")
    body_hashes: dict[tuple[str, int | None], str] = {}
    results: list[DKIMSignatureResult] = []
    for index, field in enumerate(f for f in fields if f.name == b"dkim-signature"):
        if index >= MAX_SIGNATURES:
            results.append(DKIMSignatureResult("neutral", "too many signatures; not checked"))
            continue
        result = yield from _verify_one(field, fields, body, from_count, now, body_hashes)
        results.append(result)
    return DKIMVerification(tuple(results))


def _verify_one(
    field: HeaderField,
    fields: Sequence[HeaderField],
    body: bytes,
    from_count: int,
    now: float,
    body_hashes: dict[tuple[str, int | None], str],
) -> Step[DKIMSignatureResult]:
    info: dict[str, str | int | None] = {}

    def result(code: str, reason: str) -> DKIMSignatureResult:
        return DKIMSignatureResult(
            code,
            reason,
            domain=str(info.get("d", "")),
            selector=str(info.get("s", "")),
            algorithm=str(info.get("a", "")),
            identity=str(info.get("i", "")),
            signature_b=str(info.get("b", "")),
            key_bits=bits if isinstance(bits := info.get("bits"), int) else None,
        )

    try:
        value = field.raw.split(b":", 1)[1].decode("ascii")
    except UnicodeDecodeError:
        return result("permerror", "signature field is not ASCII")
    try:
        tags = parse_tag_list(value)
    except ValueError as exc:
        return result("permerror", f"malformed signature: {exc}")
    for key in ("d", "s", "a", "b"):
        if key in tags:
            info[key] = tags[key].lower() if key in ("d", "s", "a") else tags[key]
    try:
        sig = _check_signature_tags(tags, now)
        info["i"] = sig.identity
        if from_count != 1:
            raise _Outcome(
                "fail", f"message has {from_count} From fields; RFC 5322 allows exactly one"
            )
        try:
            answers = yield Query(f"{sig.selector}._domainkey.{sig.domain}", "TXT")
        except DNSTemporaryError as exc:
            raise _Outcome("temperror", f"key lookup failed: {exc}") from None
        public_key = _parse_key_record(answers, sig)
        if isinstance(public_key, rsa.RSAPublicKey):
            info["bits"] = public_key.key_size
            if public_key.key_size < MIN_RSA_BITS:
                raise _Outcome(
                    "policy",
                    f"{public_key.key_size}-bit RSA key; at least {MIN_RSA_BITS} bits required",
                )
        body_key = (sig.body_method, sig.length)
        if body_key not in body_hashes:
            canonical = canonical_body(body, sig.body_method)
            if sig.length is not None:
                if sig.length > len(canonical):
                    raise _Outcome("permerror", "l= is longer than the body")
                canonical = canonical[: sig.length]
            body_hashes[body_key] = base64.b64encode(hashlib.sha256(canonical).digest()).decode()
        if body_hashes[body_key] != sig.body_hash:
            raise _Outcome("fail", "body hash did not verify")
        data = b"".join(
            canonical_header(raw, sig.header_method) for raw in select_headers(fields, sig.headers)
        )
        own = canonical_header(strip_b_value(field.raw.removesuffix(b"\r\n")), sig.header_method)
        data += own.removesuffix(b"\r\n")
        _check_signature(public_key, sig.signature, data)
    except _Outcome as outcome:
        return result(outcome.result, outcome.reason)
    return result("pass", "signature verified")


@dataclass(frozen=True, slots=True)
class _Signature:
    algorithm: str
    domain: str
    selector: str
    identity: str
    headers: tuple[bytes, ...]
    header_method: str
    body_method: str
    body_hash: str
    signature: bytes
    length: int | None


def _check_signature_tags(tags: dict[str, str], now: float) -> _Signature:
    """RFC 6376 §6.1.1 checks on the signature's tags; raises ``_Outcome``."""
    for required in ("v", "a", "b", "bh", "d", "h", "s"):
        if required not in tags:
            raise _Outcome("permerror", f"signature lacks the {required}= tag")
    if tags["v"] != "1":
        raise _Outcome("permerror", f"unknown signature version v={tags['v']}")
    algorithm = tags["a"].lower()
    if algorithm == "rsa-sha1":
        raise _Outcome("policy", "rsa-sha1 is not accepted (RFC 8301)")
    if algorithm not in ("rsa-sha256", "ed25519-sha256"):
        raise _Outcome("permerror", f"unknown algorithm a={algorithm}")
    header_method, _, body_method = tags.get("c", "simple/simple").lower().partition("/")
    body_method = body_method or "simple"
    if header_method not in ("simple", "relaxed") or body_method not in ("simple", "relaxed"):
        raise _Outcome("permerror", f"unknown canonicalisation c={tags.get('c')}")
    if tags.get("q", "dns/txt").lower() != "dns/txt":
        raise _Outcome("permerror", f"unknown query method q={tags['q']}")
    domain = tags["d"].lower().rstrip(".")
    selector = tags["s"].lower()
    identity = tags.get("i", "@" + domain)
    id_domain = identity.rpartition("@")[2].lower()
    if "@" not in identity or not (id_domain == domain or id_domain.endswith("." + domain)):
        raise _Outcome("permerror", "i= is not in the d= domain")
    headers = tuple(h.strip().lower().encode("ascii") for h in tags["h"].split(":"))
    if b"from" not in headers:
        raise _Outcome("permerror", "From is not signed")
    try:
        signature = base64.b64decode(tags["b"], validate=True)
        base64.b64decode(tags["bh"], validate=True)
    except (binascii.Error, ValueError):
        raise _Outcome("permerror", "b= or bh= is not base64") from None
    length = None
    if "l" in tags:
        if not tags["l"].isdigit():
            raise _Outcome("permerror", "l= is not a number")
        length = int(tags["l"])
    if "x" in tags:
        if not tags["x"].isdigit():
            raise _Outcome("permerror", "x= is not a number")
        if "t" in tags and tags["t"].isdigit() and int(tags["x"]) < int(tags["t"]):
            raise _Outcome("permerror", "x= is before t=")
        if int(tags["x"]) < now:
            raise _Outcome("fail", "signature expired (x=)")
    if "t" in tags and tags["t"].isdigit() and int(tags["t"]) > now + CLOCK_SKEW:
        raise _Outcome("fail", "signature timestamp t= is in the future")
    return _Signature(
        algorithm, domain, selector, identity, headers, header_method, body_method,
        tags["bh"], signature, length,
    )  # fmt: skip


def _parse_key_record(
    answers: Sequence[str], sig: _Signature
) -> rsa.RSAPublicKey | ed25519.Ed25519PublicKey:
    """RFC 6376 §3.6.1 / §6.1.2: the public key for ``sig``; raises ``_Outcome``."""
    if not answers:
        raise _Outcome("permerror", "no key record for the selector")
    try:
        tags = parse_tag_list(answers[0])
    except ValueError as exc:
        raise _Outcome("permerror", f"malformed key record: {exc}") from None
    if tags.get("v", "DKIM1") != "DKIM1":
        raise _Outcome("permerror", "key record version is not DKIM1")
    if "h" in tags and "sha256" not in tags["h"].lower().split(":"):
        raise _Outcome("permerror", "key record does not allow sha256")
    if tags.get("s", "*") not in ("*", "email") and not {"*", "email"} & set(tags["s"].split(":")):
        raise _Outcome("permerror", "key record is not for email")
    if "s" in tags.get("t", "").split(":"):
        id_domain = sig.identity.rpartition("@")[2].lower()
        if id_domain != sig.domain:
            raise _Outcome("permerror", "key record forbids subdomains in i= (t=s)")
    if "p" not in tags:
        raise _Outcome("permerror", "key record has no p=")
    if not tags["p"]:
        raise _Outcome("permerror", "key revoked (empty p=)")
    try:
        data = base64.b64decode(tags["p"], validate=True)
    except (binascii.Error, ValueError):
        raise _Outcome("permerror", "key record p= is not base64") from None
    key_type = tags.get("k", "rsa").lower()
    expected = "rsa" if sig.algorithm == "rsa-sha256" else "ed25519"
    if key_type != expected:
        raise _Outcome("permerror", f"key type k={key_type} does not fit a={sig.algorithm}")
    if key_type == "ed25519":
        try:
            return ed25519.Ed25519PublicKey.from_public_bytes(data)
        except ValueError:
            raise _Outcome("permerror", "Ed25519 key is not 32 bytes") from None
    try:
        key = serialization.load_der_public_key(data)
    except ValueError:
        try:
            key = serialization.load_der_public_key(_pkcs1_to_spki(data))
        except ValueError:
            raise _Outcome("permerror", "RSA key in p= does not parse") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise _Outcome("permerror", "p= is not an RSA key")
    return key


def _pkcs1_to_spki(der: bytes) -> bytes:
    """Wrap a bare RSAPublicKey (RFC 3447) in a SubjectPublicKeyInfo; a few publishers use
    the bare form, which RFC 6376 §3.6.1 allows."""
    algorithm = bytes.fromhex("300d06092a864886f70d0101010500")
    bit_string = b"\x03" + _der_length(len(der) + 1) + b"\x00" + der
    inner = algorithm + bit_string
    return b"\x30" + _der_length(len(inner)) + inner


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _check_signature(
    key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey, signature: bytes, data: bytes
) -> None:
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            key.verify(signature, hashlib.sha256(data).digest())
    except InvalidSignature:
        raise _Outcome("fail", "signature did not verify") from None
