"""Bytes on the SMTP wire: line endings, dot-stuffing, command lines (checklist item T10).

Outbound message content is normalised so that every line ends in CRLF (a bare CR or bare
LF becomes CRLF: the ambiguity SMTP smuggling exploits never leaves us) and dot-stuffed
(RFC 5321 §4.5.2), then terminated with ``CRLF . CRLF``. Command arguments are refused if
they contain CR, LF or NUL, so an address can never inject a command.
"""

from __future__ import annotations

# RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF; extensions
# (SIZE, DSN's ORCPT) lengthen MAIL and RCPT, so we allow what RFC 1869 implies.
MAX_COMMAND_LINE = 2048
# RFC 5321 §4.5.3.1.5: reply lines are at most 512 octets; real servers send longer
# banners, so we accept up to 8 KiB per line and 64 KiB per reply.
MAX_REPLY_LINE = 8192
MAX_REPLY_BYTES = 65536
MAX_REPLY_LINES = 200

END_OF_DATA = b".\r\n"


def normalise_line_endings(content: bytes) -> bytes:
    """Every line ends with CRLF: bare LF and bare CR become CRLF, CRLF stays."""
    lf = content.count(b"\n")
    if content.count(b"\r\n") == lf and content.count(b"\r") == lf:
        return content  # the usual case (queued mail is stored so): three scans, no copy
    if b"\r" not in content:
        return content.replace(b"\n", b"\r\n")
    return content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def dot_stuff(content: bytes) -> bytes:
    """Double a leading dot on every line (content must already use CRLF)."""
    stuffed = content.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed


def encode_data(content: bytes) -> bytes:
    """The bytes to send after a 354: normalised, dot-stuffed, ending in CRLF.CRLF."""
    body = dot_stuff(normalise_line_endings(content))
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + END_OF_DATA


def decode_data(wire: bytes) -> bytes:
    """The inverse of ``encode_data`` for a well-formed DATA body (tests and sinks use it)."""
    if not wire.endswith(b"\r\n.\r\n") and wire != END_OF_DATA:
        raise ValueError("DATA body does not end with CRLF.CRLF")
    body = wire[: -len(END_OF_DATA)]
    if body.startswith(b".."):
        body = body[1:]
    return body.replace(b"\r\n..", b"\r\n.")


def command(verb: str, *args: str) -> bytes:
    """One command line, CRLF-terminated; refuses CR, LF and NUL in any argument."""
    line = " ".join((verb, *args)) if args else verb
    if any(ch in line for ch in "\r\n\0"):
        raise ValueError(f"refusing a command with CR, LF or NUL: {line!r}")
    encoded = line.encode("utf-8") + b"\r\n"
    if len(encoded) > MAX_COMMAND_LINE:
        raise ValueError(f"command longer than {MAX_COMMAND_LINE} octets")
    return encoded


def xtext(value: str) -> str:
    """RFC 3461 xtext encoding for ENVID and ORCPT values."""
    out = []
    for ch in value:
        code = ord(ch)
        if 33 <= code <= 126 and ch not in "+=":
            out.append(ch)
        else:
            out.extend(f"+{byte:02X}" for byte in ch.encode("utf-8"))
    return "".join(out)
