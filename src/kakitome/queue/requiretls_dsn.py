"""Redacted DSNs for REQUIRETLS messages (RFC 8689 §5; checklist T29).

A message sent with REQUIRETLS asked never to travel unencrypted, but the bounce about it
goes back along whatever path leads to the sender. So the DSN of a REQUIRETLS message:

- returns no body, whatever RET said (as if ``RET=HDRS``, RFC 8689 §5);
- returns a redacted header section: only ``Message-ID``, ``Date`` and ``From``, which
  let the sender identify the message; Subject, recipients' headers and everything else
  are left out;
- is itself queued with REQUIRETLS by the worker, so it is delivered only along a secure
  path (or not at all: a DSN is never bounced back, it comes from the null sender).

Everything else (fields, status codes, the human-readable part) is ``queue.dsn``'s.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from kakitome.queue.dsn import build_dsn
from kakitome.queue.types import Bounce

KEPT_HEADERS = ("message-id", "date", "from")
_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.ASCII)


def redact_header(original: bytes) -> bytes:
    """The header section of ``original`` reduced to ``KEPT_HEADERS`` (folding kept)."""
    head = re.sub(rb"\r\n|\r|\n", b"\r\n", original).split(b"\r\n\r\n", 1)[0]
    kept: list[bytes] = []
    keep = False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if keep:
                kept.append(line)
            continue
        match = _FIELD.match(line)
        keep = match is not None and match.group(1).decode("ascii").lower() in KEPT_HEADERS
        if keep:
            kept.append(line)
    return b"\r\n".join(kept) + b"\r\n"


def build_requiretls_dsn(
    bounces: Sequence[Bounce],
    original: bytes,
    *,
    reporting_mta: str,
    now: float,
    arrival_date: float | None = None,
) -> bytes:
    """The DSN for bounced recipients of a REQUIRETLS message: headers only, redacted."""
    redacted = redact_header(original) if original.strip() else b""
    return build_dsn(
        [replace(b, ret="HDRS") for b in bounces],
        redacted + b"\r\n" if redacted else b"",
        reporting_mta=reporting_mta,
        now=now,
        arrival_date=arrival_date,
    )


__all__ = ["KEPT_HEADERS", "build_requiretls_dsn", "redact_header"]
