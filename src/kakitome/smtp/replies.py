"""SMTP replies as values: code, enhanced status code (RFC 3463) and text."""

from __future__ import annotations

import re
from dataclasses import dataclass

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply. ``text`` joins multi-line replies with newlines, without codes."""

    code: int
    enhanced: str | None
    text: str

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        parts = [str(self.code)]
        if self.enhanced:
            parts.append(self.enhanced)
        if self.text:
            parts.append(self.text)
        return " ".join(parts)

    @classmethod
    def parse(cls, code: int, lines: list[str]) -> Reply:
        """Build a reply from its code and text lines, lifting the enhanced code if present."""
        enhanced: str | None = None
        cleaned: list[str] = []
        for line in lines:
            match = _ENHANCED.match(line)
            if match and str(code)[0] == match.group(1):
                enhanced = enhanced or match.group(0)
                line = line[match.end() :].lstrip()
            cleaned.append(line)
        return cls(code, enhanced, "\n".join(cleaned))

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "enhanced": self.enhanced, "text": self.text}


def local_reply(code: int, enhanced: str, text: str) -> Reply:
    """A reply we make up ourselves (network error, policy failure), shaped like a server's."""
    return Reply(code, enhanced, text)


class ReplySyntaxError(ValueError):
    """A line that is not part of a valid SMTP reply (RFC 5321 §4.2)."""


def parse_reply_line(line: bytes) -> tuple[int, bool, str]:
    """Split one reply line into (code, is_last, text).

    Accepts ``250-text``, ``250 text`` and a bare ``250``; the line may end in CRLF or LF.
    """
    line = line.rstrip(b"\r\n")
    if len(line) < 3 or not line[:3].isdigit() or line[0] not in b"2345":
        raise ReplySyntaxError(f"not an SMTP reply line: {line[:80]!r}")
    sep = line[3:4]
    if sep not in (b"", b" ", b"-"):
        raise ReplySyntaxError(f"bad separator in reply line: {line[:80]!r}")
    text = line[4:].decode("utf-8", errors="replace")
    return int(line[:3]), sep != b"-", text


def parse_reply(lines: list[bytes]) -> Reply:
    """Build a Reply from all its raw lines; every line must carry the same code."""
    if not lines:
        raise ReplySyntaxError("empty reply")
    code: int | None = None
    texts: list[str] = []
    for i, raw in enumerate(lines):
        line_code, last, text = parse_reply_line(raw)
        if code is None:
            code = line_code
        elif line_code != code:
            raise ReplySyntaxError(f"reply code changed from {code} to {line_code}")
        if last != (i == len(lines) - 1):
            raise ReplySyntaxError("continuation marker out of place")
        texts.append(text)
    assert code is not None
    return Reply.parse(code, texts)
