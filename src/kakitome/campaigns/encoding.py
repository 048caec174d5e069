"""Japanese text on the wire: ISO-2022-JP, RFC 2047 encoded words, line wrapping.

- ``jis_safe(text)``: text ISO-2022-JP can carry. The characters Windows (CP932) users
  type that JIS X 0208 spells differently are mapped to the JIS ones (FULLWIDTH TILDE →
  WAVE DASH, …); what is still missing gets its compatibility form (① → 1, ㈱ → (株),
  half-width ｶﾀｶﾅ → full-width); what remains becomes 〓 (the geta mark, as Japanese
  mail software has always done), and the caller is told which characters were replaced.
- ``encoded_words(text, charset)``: RFC 2047 "B" words of at most 75 characters, each a
  complete string in its charset (an ISO-2022-JP word ends in ASCII: ``ESC ( B``), never
  splitting a character, a surrogate pair or a combining sequence.
- ``header_field(name, value, charset)``: a whole field, folded, ASCII only.
- ``wrap_text(text, width)``: lines longer than ``width`` display columns (full-width
  characters count two) are broken between characters, never inside an ASCII word or a
  URL, following the basic kinsoku rules (no line starts with 、。」ー or a small kana, none
  ends with 「（); and whatever the width, no line is longer than ``MAX_LINE_OCTETS`` once
  encoded.
- ``body_part(text, subtype, charset)``: one MIME part: UTF-8 in 7bit (ASCII text),
  quoted-printable or base64, whichever is shorter; ISO-2022-JP text in 7bit (as old
  clients expect; every line ends in ASCII mode), ISO-2022-JP HTML in base64.
"""

from __future__ import annotations

import base64
import functools
import quopri
import re
import unicodedata
from collections.abc import Callable

__all__ = [
    "CHARSETS",
    "MAX_LINE_OCTETS",
    "body_part",
    "codec_of",
    "encoded_words",
    "header_field",
    "jis_safe",
    "phrase",
    "wrap_text",
]

CHARSETS = ("utf-8", "iso-2022-jp")
# RFC 5322 §2.1.1.
MAX_LINE_OCTETS = 998
# RFC 2047 §2: an encoded word is at most 75 characters; header lines should stay near 78.
MAX_WORD = 75
_FOLD_AT = 76

GETA = "〓"
# CP932 (Windows) code points whose JIS X 0208 counterparts differ.
_CP932_TO_JIS = str.maketrans(
    {
        "\uff5e": "\u301c",  # FULLWIDTH TILDE → WAVE DASH
        "\u2225": "\u2016",  # PARALLEL TO → DOUBLE VERTICAL LINE
        "\uff0d": "\u2212",  # FULLWIDTH HYPHEN-MINUS → MINUS SIGN
        "\uffe0": "\u00a2",  # FULLWIDTH CENT SIGN
        "\uffe1": "\u00a3",  # FULLWIDTH POUND SIGN
        "\uffe2": "\u00ac",  # FULLWIDTH NOT SIGN
        "\u2014": "\u2015",  # EM DASH → HORIZONTAL BAR
    }
)

# Kinsoku: characters that may not start a line, and that may not end one.
_NO_START = frozenset(
    "、。，．,.)）]］｝〕〉》」』】〙〗〟’”｠»ゝゞーァィゥェォッャュョヮヵヶぁぃぅぇぉっゃゅょゎゕゖ"
    "ㇰㇱㇲㇳㇴㇵㇶㇷㇸㇹㇺㇻㇼㇽㇾㇿ々〻‐゠–〜～？！?!‼⁇⁈⁉・:;：；/／…‥"
)
_NO_END = frozenset("(（[［｛〔〈《「『【〘〖〝‘“｟«")


def codec_of(charset: str) -> str:
    charset = charset.lower()
    if charset not in CHARSETS:
        raise ValueError(f"unsupported charset {charset!r} (utf-8 or iso-2022-jp)")
    return charset


def jis_safe(text: str) -> tuple[str, list[str]]:
    """``text`` made encodable in ISO-2022-JP, and the characters that had to be replaced
    by 〓 (mapped and compatibility forms are not reported: they keep their meaning)."""
    text = text.translate(_CP932_TO_JIS)
    try:
        text.encode("iso-2022-jp")
        return text, []
    except UnicodeEncodeError:
        pass
    out: list[str] = []
    lost: list[str] = []
    for char in text:
        if _jis_ok(char):
            out.append(char)
            continue
        compat = unicodedata.normalize("NFKC", char).translate(_CP932_TO_JIS)
        if compat != char and all(_jis_ok(c) for c in compat):
            out.append(compat)
        else:
            out.append(GETA)
            lost.append(char)
    return "".join(out), lost


def _jis_ok(char: str) -> bool:
    try:
        char.encode("iso-2022-jp")
    except UnicodeEncodeError:
        return False
    return True


def _joins_previous(char: str) -> bool:
    """A character that must stay with the one before it (combining, ZWJ, selectors)."""
    return (
        unicodedata.combining(char) != 0
        or unicodedata.category(char) in ("Mn", "Me")
        or char in ("\u200d", "\ufe0e", "\ufe0f")
        or "\U000e0100" <= char <= "\U000e01ef"
        or "\U0001f3fb" <= char <= "\U0001f3ff"  # skin tone modifiers
    )


def _clusters(text: str) -> list[str]:
    out: list[str] = []
    for char in text:
        if out and (_joins_previous(char) or out[-1].endswith("\u200d")):
            out[-1] += char
        else:
            out.append(char)
    return out


def _word(chunk: str, charset: str) -> str:
    data = chunk.encode(charset)
    return f"=?{charset.upper()}?B?{base64.b64encode(data).decode('ascii')}?="


def encoded_words(text: str, charset: str = "utf-8", first_budget: int = MAX_WORD) -> list[str]:
    """RFC 2047 B-encoded words for ``text``; the first fits ``first_budget`` characters
    when it can, every one fits 75. ISO-2022-JP text must already be ``jis_safe``."""
    charset = codec_of(charset)
    words: list[str] = []
    budget = min(first_budget, MAX_WORD)
    chunk = ""
    for cluster in _clusters(text):
        candidate = chunk + cluster
        if chunk and len(_word(candidate, charset)) > budget:
            words.append(_word(chunk, charset))
            chunk = cluster
            budget = MAX_WORD
        else:
            chunk = candidate
    if chunk or not words:
        words.append(_word(chunk, charset))
    return words


def needs_encoding(value: str) -> bool:
    return not value.isascii() or "=?" in value or bool(re.search(r"[\x00-\x1f\x7f]", value))


def header_field(name: str, value: str, charset: str = "utf-8") -> str:
    """``Name: value`` folded with CRLF SP, ASCII only: encoded words when the value
    needs them, else folded at spaces. No trailing CRLF."""
    if not needs_encoding(value):
        return _fold_ascii(f"{name}: {value}")
    words = encoded_words(value, charset, first_budget=_FOLD_AT - len(name) - 2)
    return f"{name}: " + "\r\n ".join(words)


def phrase(display: str, charset: str = "utf-8") -> str:
    """A display name for an address field: atoms as they are, a quoted string for ASCII
    with specials, encoded words otherwise."""
    if not display:
        return ""
    if needs_encoding(display):
        return " ".join(encoded_words(display, charset))
    if re.fullmatch(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+", display):
        return display
    escaped = display.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _fold_ascii(line: str) -> str:
    if len(line) <= _FOLD_AT:
        return line
    parts: list[str] = []
    current = ""
    for piece in re.split(r"(?<=\S)(?= )", line):
        if current and len(current) + len(piece) > _FOLD_AT:
            parts.append(current)
            current = piece
        else:
            current += piece
    parts.append(current)
    return "\r\n".join(parts)


@functools.lru_cache(maxsize=8192)
def _width(char: str) -> int:
    return 2 if unicodedata.east_asian_width(char[0]) in ("W", "F") else 1


def _columns(text: str) -> int:
    """Display columns of ``text`` (full-width characters count two)."""
    if text.isascii():
        return len(text)
    return sum(_width(c) for c in text)


def _tokens(line: str) -> list[str]:
    """Atoms of a line: runs of non-space ASCII (words, URLs), runs of spaces, and
    single other characters (clusters)."""
    out: list[str] = []
    for match in re.finditer(r"[!-~]+| +|.", line):
        token = match.group(0)
        if out and len(token) == 1 and _joins_previous(token):
            out[-1] += token
        else:
            out.append(token)
    return out


def wrap_text(
    text: str,
    width: int = 76,
    *,
    max_octets: int = MAX_LINE_OCTETS,
    measure: Callable[[str], int] | None = None,
) -> str:
    """Wrap lines longer than ``width`` columns (0: only the octet limit); ``measure``
    gives a line's encoded size (default UTF-8)."""
    size = measure or (lambda s: len(s.encode("utf-8")))
    out: list[str] = []
    for line in text.split("\n"):
        out.extend(_wrap_line(line, width, max_octets, size))
    return "\n".join(out)


def _wrap_line(line: str, width: int, max_octets: int, size: Callable[[str], int]) -> list[str]:
    columns = _columns(line)
    if (width <= 0 or columns <= width) and size(line) <= max_octets:
        return [line]
    lines: list[list[str]] = [[]]
    used = 0
    for token in _tokens(line):
        token_width = _columns(token)
        current = lines[-1]
        too_wide = width > 0 and used + token_width > width
        too_long = size("".join(current) + token) > max_octets
        if current and (too_wide or too_long):
            if token.isspace():
                continue  # a break at a space swallows it
            if token[0] in _NO_START and not too_long:
                current.append(token)  # hang it on this line (burasage)
                used += token_width
                continue
            carried: list[str] = []
            while current and current[-1][-1] in _NO_END and len(current) > 1:
                carried.insert(0, current.pop())
            while current and current[-1].isspace():
                current.pop()
            lines.append(carried)
            current = lines[-1]
            used = sum(_columns(t) for t in carried)
        if size(token) > max_octets:
            # One atom too long for any line (a huge URL): cut it between characters.
            piece = ""
            for char in token:
                if size(piece + char) > max_octets:
                    current.append(piece)
                    lines.append([])
                    current = lines[-1]
                    piece = ""
                piece += char
            token = piece
            token_width = _columns(token)
            used = 0
        current.append(token)
        used += token_width
    return ["".join(tokens).rstrip(" ") for tokens in lines]


def body_part(text: str, subtype: str, charset: str = "utf-8") -> bytes:
    """One MIME part (header and body, CRLF) for ``text`` (newlines as LF)."""
    charset = codec_of(charset)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if charset == "iso-2022-jp":
        if subtype == "plain":
            lines = [line.encode("iso-2022-jp") for line in text.split("\n")]
            body = b"\r\n".join(lines)
            cte = "7bit"
        else:
            body = _base64(text.encode("iso-2022-jp"))
            cte = "base64"
    else:
        data = text.encode("utf-8")
        if data.isascii() and all(len(line) <= MAX_LINE_OCTETS for line in data.split(b"\n")):
            body, cte = data.replace(b"\n", b"\r\n"), "7bit"
        else:
            qp = quopri.encodestring(data, quotetabs=False).replace(b"\n", b"\r\n")
            b64 = _base64(data)
            body, cte = (qp, "quoted-printable") if len(qp) <= len(b64) else (b64, "base64")
    head = (
        f'Content-Type: text/{subtype}; charset="{charset.upper()}"\r\n'
        f"Content-Transfer-Encoding: {cte}\r\n\r\n"
    ).encode("ascii")
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return head + body


def _base64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")
