"""The DKIM signer on the sending hot path: rsa-sha256 and ed25519-sha256 (RFC 8463) at once.

Why our own: dkimpy's RSA is pure Python (about 90 signatures/s) and re-parses the PEM on
every call. Here keys are parsed once, the body is canonicalised and hashed once for all
signatures, the canonical header block is built once, and the signatures themselves are
OpenSSL's (``cryptography``). dkimpy, OpenDKIM and Mail::DKIM verify our output in the
tests; ``bench/dkim_sign.py`` measures the difference.

What we sign (T32, T33, T38): relaxed/relaxed, SHA-256 only (never rsa-sha1), no ``l=``
(a body-length limit lets anyone append content), ``t=`` and an optional ``x=``. ``h=``
covers every present field of ``SIGNED_HEADERS``; the fields of ``OVERSIGNED_HEADERS`` are
listed once more than they occur, so a field added in transit (a second From, a second
Subject, a List-Unsubscribe) breaks the signature instead of riding on it. From is always
over-signed. RSA keys under 1024 bits are refused when the signer is built.

Input: one RFC 5322 message with CRLF line endings and exactly one From field
(``MessageError`` otherwise). Output: the same bytes with the DKIM-Signature fields
prepended, each folded to lines of at most 78 characters.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from kakitome.auth.dkim_canon import relaxed_body, relaxed_header, split_message
from kakitome.auth.dkim_keys import (
    DKIMKeyError,
    DKIMKeyPair,
    KeyType,
    ascii_domain,
    check_rsa_size,
    load_private_key,
)
from kakitome.errors import MessageError

__all__ = [
    "LINE_WIDTH",
    "OVERSIGNED_HEADERS",
    "SIGNED_HEADERS",
    "DKIMSigner",
    "SignerTable",
]

# RFC 5322 §2.1.1: lines SHOULD be at most 78 characters.
LINE_WIDTH = 78

# In the order they appear in h=. Trace and transport fields (Received, Return-Path) are left
# out: they change in transit by design.
SIGNED_HEADERS: tuple[str, ...] = (
    "From", "Sender", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID",
    "In-Reply-To", "References", "MIME-Version", "Content-Type",
    "Content-Transfer-Encoding", "Content-Language", "Content-Disposition", "List-Id",
    "List-Unsubscribe", "List-Unsubscribe-Post", "List-Help", "List-Subscribe", "List-Post",
    "List-Owner", "List-Archive", "Feedback-ID", "Auto-Submitted", "Precedence",
)  # fmt: skip

# Fields whose addition by someone else would change what the reader sees or what an
# unsubscribe click does.
OVERSIGNED_HEADERS: frozenset[str] = frozenset(
    name.lower()
    for name in (
        "From", "Sender", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID",
        "MIME-Version", "Content-Type", "Content-Transfer-Encoding", "List-Unsubscribe",
        "List-Unsubscribe-Post", "Feedback-ID",
    )
)  # fmt: skip

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_SELECTOR_LABELS = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_RSA_PADDING = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


class _Key:
    """One signing key with the parts of its field that never change."""

    __slots__ = ("ed25519", "rsa", "tags")

    def __init__(self, pair: DKIMKeyPair, domain: str) -> None:
        if not _SELECTOR_LABELS.fullmatch(pair.selector):
            raise DKIMKeyError(f"{pair.selector!r} is not a valid DKIM selector")
        key = pair.private_key
        self.rsa: rsa.RSAPrivateKey | None = None
        self.ed25519: ed25519.Ed25519PrivateKey | None = None
        if isinstance(key, rsa.RSAPrivateKey):
            check_rsa_size(key.key_size, f"the key for selector {pair.selector}")
            self.rsa = key
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            self.ed25519 = key
        else:
            raise DKIMKeyError(f"selector {pair.selector}: DKIM keys are RSA or Ed25519")
        algorithm = pair.key_type.algorithm
        self.tags = [
            "v=1;", f"a={algorithm};", "c=relaxed/relaxed;", f"d={domain};",
            f"s={pair.selector};",
        ]  # fmt: skip

    def sign(self, data: bytes) -> bytes:
        if self.rsa is not None:
            return self.rsa.sign(data, _RSA_PADDING, _SHA256)
        assert self.ed25519 is not None
        # RFC 8463 §3: Ed25519 (PureEdDSA) signs the SHA-256 hash of the data.
        return self.ed25519.sign(hashlib.sha256(data).digest())


class DKIMSigner:
    """Signs messages for one domain with one or more keys (normally RSA and Ed25519).

    Build it once per domain and keep it: the keys are parsed and checked here, not per
    message. ``clock`` returns the Unix time for ``t=`` (injected so tests control it).
    """

    def __init__(
        self,
        domain: str,
        keys: Sequence[DKIMKeyPair],
        *,
        expire_after: int | None = None,
        signed_headers: Iterable[str] = SIGNED_HEADERS,
        oversigned_headers: Collection[str] = OVERSIGNED_HEADERS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys:
            raise DKIMKeyError("a DKIM signer needs at least one key")
        selectors = [pair.selector for pair in keys]
        if len(set(selectors)) != len(selectors):
            raise DKIMKeyError(f"duplicate DKIM selectors: {selectors}")
        if expire_after is not None and expire_after <= 0:
            raise ValueError("expire_after is a number of seconds > 0")
        self.domain = ascii_domain(domain)
        self.selectors = tuple(selectors)
        self._keys = [_Key(pair, self.domain) for pair in keys]
        self._expire_after = expire_after
        self._clock = clock
        names = [name.lower().encode("ascii") for name in signed_headers]
        if b"from" not in names:
            raise ValueError("From must be among the signed headers (RFC 6376 §5.4)")
        over = {name.lower().encode("ascii") for name in oversigned_headers} | {b"from"}
        self._signed = tuple((name, name in over) for name in names)

    @classmethod
    def from_pem(
        cls,
        domain: str,
        keys: Mapping[str, bytes],
        passphrase: bytes | None = None,
        **options: object,
    ) -> DKIMSigner:
        """A signer from ``{selector: PEM}``; see ``load_private_key`` for the errors."""
        pairs = [
            DKIMKeyPair(selector, load_private_key(pem, passphrase, source=f"key {selector}"))
            for selector, pem in keys.items()
        ]
        return cls(domain, pairs, **options)  # type: ignore[arg-type]

    @property
    def key_types(self) -> tuple[KeyType, ...]:
        return tuple(KeyType.RSA if k.rsa is not None else KeyType.ED25519 for k in self._keys)

    def sign(self, message: bytes) -> bytes:
        """``message`` with one DKIM-Signature field per key prepended (first key on top)."""
        return b"".join(self.signature_fields(message)) + message

    def signature_fields(self, message: bytes) -> list[bytes]:
        """The DKIM-Signature fields for ``message``, each ending in CRLF."""
        fields, body = split_message(message)
        by_name: dict[bytes, list[bytes]] = {}
        for field in fields:
            by_name.setdefault(field.name, []).append(field.raw)
        from_count = len(by_name.get(b"from", ()))
        if from_count != 1:
            raise MessageError(
                "a message to sign must have exactly one From field "
                f"(RFC 5322 §3.6), this one has {from_count}"
            )
        h_names: list[bytes] = []
        for name, oversign in self._signed:
            count = len(by_name.get(name, ()))
            if count:
                h_names.extend([name] * (count + oversign))
        # Each h= entry takes the next instance from the bottom (RFC 6376 §5.4.2); the
        # over-signed extra entry finds none and adds nothing to the hash.
        canonical = bytearray()
        for name in h_names:
            instances = by_name[name]
            if instances:
                canonical += relaxed_header(instances.pop())
        header_block = bytes(canonical)

        body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode()
        now = int(self._clock())
        time_tags = [f"t={now};"]
        if self._expire_after is not None:
            time_tags.append(f"x={now + self._expire_after};")
        h_tokens = [name.decode("ascii") + ":" for name in h_names]
        h_tokens[0] = "h=" + h_tokens[0]
        h_tokens[-1] = h_tokens[-1][:-1] + ";"

        out: list[bytes] = []
        for key in self._keys:
            unsigned = _fold(key.tags + time_tags, h_tokens, f"bh={body_hash};")
            data = header_block + relaxed_header(unsigned.encode("ascii"))[:-2]
            signature = base64.b64encode(key.sign(data)).decode("ascii")
            out.append((unsigned + _fold_b(signature) + "\r\n").encode("ascii"))
        return out


def _fold(tags: list[str], h_tokens: list[str], bh: str) -> str:
    """The field up to and including ``b=`` (empty), folded at tag and ``h=`` boundaries."""
    lines: list[str] = []
    line = "DKIM-Signature:"
    for token in tags:
        if len(line) + 1 + len(token) > LINE_WIDTH:
            lines.append(line)
            line = ""
        line += " " + token
    lines.append(line)
    line = ""
    for token in h_tokens:
        if line and len(line) + len(token) > LINE_WIDTH:
            lines.append(line)
            line = ""
        line += token if line else " " + token
    lines.append(line)
    lines.append(" " + bh)
    lines.append(" b=")
    return "\r\n".join(lines)


def _fold_b(signature: str) -> str:
    """The ``b=`` value cut so that no line is longer than ``LINE_WIDTH``."""
    first = LINE_WIDTH - len(" b=")
    rest = LINE_WIDTH - 1
    chunks = [signature[:first]]
    chunks.extend(signature[i : i + rest] for i in range(first, len(signature), rest))
    return "\r\n ".join(chunks)


class SignerTable:
    """The injection service's signer: ``table(content, from_domain) -> signed content``.

    Looks up the signer for the From domain (case-insensitive, IDN in either form). A
    domain without a signer is refused with a ``MessageError`` unless ``allow_unsigned``.
    """

    def __init__(self, signers: Iterable[DKIMSigner], *, allow_unsigned: bool = False) -> None:
        self._signers = {signer.domain: signer for signer in signers}
        self._allow_unsigned = allow_unsigned

    def __call__(self, content: bytes, from_domain: str) -> bytes:
        signer = self._signers.get(ascii_domain(from_domain))
        if signer is not None:
            return signer.sign(content)
        if self._allow_unsigned:
            return content
        raise MessageError(
            f"{from_domain} is not a configured sending domain; add it (kakitome domain add) "
            "so that its mail is DKIM-signed"
        )
