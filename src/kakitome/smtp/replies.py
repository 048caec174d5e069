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
