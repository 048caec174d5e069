"""Authentication-Results (RFC 8601): write ours, remove forged ones (T35).

Inbound mail gets one ``Authentication-Results`` field with our authserv-id (a host or
domain name we control, from the settings) that reports DKIM, SPF and DMARC. Any field
already in the message that claims our authserv-id was written by someone else — a sender
trying to make their mail look checked — and is removed before ours is added
(RFC 8601 §5). Fields with other authserv-ids are left alone; they are not ours to judge.

Values from the message (domains, selectors, reasons) are quoted or dropped so that no
input can break out of a property value or add a line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kakitome.auth.dkim_canon import split_message
from kakitome.auth.dkim_verify import DKIMVerification
from kakitome.auth.dmarc import DMARCOutcome
from kakitome.auth.spf import SPFOutcome

__all__ = [
    "AuthResult",
    "add_authentication_results",
    "authentication_results_field",
    "authserv_id_of",
    "dkim_auth_results",
    "dmarc_auth_result",
    "remove_forged_results",
    "spf_auth_result",
]

# RFC 2045 token: printable ASCII except SPACE and tspecials.
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_ADDRESS_FORM = re.compile(r"(?:[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]*@)?[A-Za-z0-9](?:[A-Za-z0-9.-]*)")
_ID = re.compile(r'\s*(?:\((?:[^()\\]|\\.)*\)\s*)*("(?:[^"\\]|\\.)*"|[^\s;()]+)', re.S)
HEADER_B_CHARS = 8  # RFC 6008: enough of b= to tell signatures apart


@dataclass(frozen=True, slots=True)
class AuthResult:
    """One ``method=result`` clause with its reason and properties."""

    method: str
    result: str
    reason: str | None = None
    properties: tuple[tuple[str, str], ...] = ()

    def render(self) -> str:
        parts = [f"{self.method}={self.result}"]
        if self.reason:
            parts.append(f"reason={_quoted(self.reason)}")
        for name, value in self.properties:
            parts.append(f"{name}={_pvalue(value)}")
        return " ".join(parts)


def authentication_results_field(authserv_id: str, results: Sequence[AuthResult]) -> bytes:
    """The whole field, CRLF-terminated; ``none`` when nothing was checked (RFC 8601 §2.2)."""
    if not _TOKEN.fullmatch(authserv_id):
        raise ValueError(f"authserv-id {authserv_id!r} must be a plain host or domain name")
    if not results:
        return f"Authentication-Results: {authserv_id}; none\r\n".encode("ascii")
    body = ";\r\n\t".join(result.render() for result in results)
    return f"Authentication-Results: {authserv_id};\r\n\t{body}\r\n".encode("ascii")


def dkim_auth_results(verification: DKIMVerification) -> list[AuthResult]:
    """One ``dkim=`` clause per signature (``dkim=none`` for an unsigned message)."""
    if not verification.signatures:
        return [AuthResult("dkim", "none")]
    results = []
    for sig in verification.signatures:
        props: list[tuple[str, str]] = []
        if sig.domain:
            props.append(("header.d", sig.domain))
        if sig.identity:
            props.append(("header.i", sig.identity))
        if sig.algorithm:
            props.append(("header.a", sig.algorithm))
        if sig.selector:
            props.append(("header.s", sig.selector))
        if sig.signature_b:
            props.append(("header.b", sig.signature_b[:HEADER_B_CHARS]))
        reason = None if sig.result == "pass" else sig.reason
        results.append(AuthResult("dkim", sig.result, reason, tuple(props)))
    return results


def spf_auth_result(outcome: SPFOutcome, *, mail_from: str, helo: str) -> AuthResult:
    """``spf=`` with ``smtp.mailfrom`` (or ``smtp.helo`` for a null sender)."""
    prop = ("smtp.mailfrom", mail_from) if mail_from else ("smtp.helo", helo)
    reason = outcome.reason if outcome.result.value in ("permerror", "temperror") else None
    return AuthResult("spf", outcome.result.value, reason, (prop,))


def dmarc_auth_result(outcome: DMARCOutcome) -> AuthResult:
    """``dmarc=`` with ``header.from`` and the policy that applied (``policy.dmarc``)."""
    props: list[tuple[str, str]] = [("header.from", outcome.author_domain)]
    if outcome.policy_domain is not None:
        props.append(("policy.dmarc", outcome.disposition))
    reason = None if outcome.result == "pass" else outcome.reason or None
    return AuthResult("dmarc", outcome.result, reason, tuple(props))


def authserv_id_of(raw_field: bytes) -> str | None:
    """The authserv-id of an Authentication-Results field (lower-case), comments skipped."""
    value = raw_field.split(b":", 1)[1].decode("utf-8", "replace").replace("\r\n", "")
    match = _ID.match(value)
    if match is None:
        return None
    token = match.group(1)
    if token.startswith('"'):
        token = re.sub(r"\\(.)", r"\1", token[1:-1])
    return token.lower().rstrip(".")


def remove_forged_results(message: bytes, authserv_ids: str | Iterable[str]) -> bytes:
    """``message`` without the Authentication-Results fields that carry one of our ids."""
    ours = {authserv_ids} if isinstance(authserv_ids, str) else set(authserv_ids)
    ours = {i.lower().rstrip(".") for i in ours}
    fields, body = split_message(message)
    forged = [
        f for f in fields if f.name == b"authentication-results" and authserv_id_of(f.raw) in ours
    ]
    if not forged:
        return message
    kept = b"".join(f.raw for f in fields if f not in forged)
    return kept + b"\r\n" + body


def add_authentication_results(
    message: bytes, authserv_id: str, results: Sequence[AuthResult]
) -> bytes:
    """Remove forged fields with our id, then prepend ours."""
    return authentication_results_field(authserv_id, results) + remove_forged_results(
        message, authserv_id
    )


def _quoted(text: str) -> str:
    clean = "".join(ch if " " <= ch <= "~" else " " for ch in text)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pvalue(value: str) -> str:
    if _TOKEN.fullmatch(value) or _ADDRESS_FORM.fullmatch(value):
        return value
    return _quoted(value)
