"""CSV for subscribers: encoding detection, streaming rows with line numbers, column
mapping, and export cells that spreadsheets cannot run as formulas.

What it trusts: nothing in the file. Files come from spreadsheets: Excel in Japan writes
CSV in CP932 (Shift_JIS with Microsoft's extensions) or, as "CSV UTF-8", in UTF-8 with a
byte-order mark. Detection: a UTF-8 BOM means ``utf-8-sig``; a UTF-16 BOM is refused with
advice; otherwise the first MiB is tried as UTF-8, and CP932 is assumed when it is not.
``shift_jis`` given by hand is read as CP932 (a superset: ①, ㈱, 髙 and the like). A line
that does not decode rejects only the row it belongs to.

Limits: a cell may hold at most ``MAX_CELL`` characters (the csv module's field limit),
a row at most ``MAX_COLUMNS`` cells, so one bad file cannot take the memory.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

from kakitome.errors import InputError

__all__ = [
    "FORMULA_PREFIXES",
    "ColumnPlan",
    "CsvRow",
    "detect_encoding",
    "neutralise",
    "normalise_encoding",
    "plan_columns",
    "read_rows",
]

MAX_CELL = 64 * 1024
MAX_COLUMNS = 500
_SNIFF_BYTES = 1024 * 1024

# Cells starting with these are formulas (or DDE) to Excel, LibreOffice and Google Sheets;
# full-width forms too, which Japanese spreadsheets also accept.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "＝", "＋", "－", "＠")

EMAIL_HEADERS = frozenset(
    {
        "email",
        "e-mail",
        "email address",
        "e-mail address",
        "mail",
        "address",
        "メールアドレス",
        "メール",
        "アドレス",
        "eメール",
        "ｅメール",
        "電子メール",
        "メールアドレス（必須）",
    }
)
NAME_HEADERS = frozenset({"name", "full name", "名前", "氏名", "お名前", "なまえ", "宛名"})

csv.field_size_limit(MAX_CELL)


def normalise_encoding(name: str) -> str:
    """The codec we read a given encoding name with (Shift_JIS as CP932); InputError for
    an unknown name."""
    try:
        canonical = codecs.lookup(name.strip()).name
    except LookupError:
        raise InputError(
            f"unknown encoding {name!r}; use utf-8, utf-8-sig, shift_jis or cp932"
        ) from None
    if canonical in ("shift_jis", "cp932", "ms932", "mskanji", "sjis"):
        return "cp932"
    if canonical.startswith("utf-16") or canonical.startswith("utf-32"):
        raise InputError("UTF-16 files are not read: save the file as CSV UTF-8 or CSV (Shift_JIS)")
    return canonical


def detect_encoding(head: bytes) -> str:
    """Guess the encoding from the first bytes of a file (see the module docstring)."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InputError(
            "this file is UTF-16 (Excel's 'Unicode text'): save it as CSV UTF-8 instead"
        )
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(head, final=False)  # a character cut at the end is fine
    except UnicodeDecodeError:
        return "cp932"
    return "utf-8"


@dataclass(slots=True)  # not frozen: one per CSV record, frozen __init__ costs twice
class CsvRow:
    """One record: its first physical line number (the header is line 1), its cells,
    and a reason when it cannot be used as it is (a line that does not decode)."""

    line: int
    cells: list[str]
    error: str | None = None


def read_rows(source: IO[bytes], encoding: str | None) -> tuple[str, Iterator[CsvRow]]:
    """The encoding used and an iterator of records (header first), streaming."""
    head = source.read(_SNIFF_BYTES)
    chosen = normalise_encoding(encoding) if encoding else detect_encoding(head)
    if chosen == "utf-8" and head.startswith(codecs.BOM_UTF8):
        chosen = "utf-8-sig"
    return chosen, _records(_chain(head, source), chosen)


def _chain(head: bytes, rest: IO[bytes]) -> Iterator[bytes]:
    """Physical lines (with their endings) of head + rest, without reading all at once."""
    stream = io.BufferedReader(_Prefixed(head, rest), buffer_size=1 << 20)
    yield from stream


class _Prefixed(io.RawIOBase):
    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _records(lines: Iterable[bytes], encoding: str) -> Iterator[CsvRow]:
    bad: dict[int, str] = {}
    number = 0
    first = True
    codec = "utf-8" if encoding == "utf-8-sig" else encoding

    def decoded() -> Iterator[str]:
        nonlocal number, first
        for raw in lines:
            number += 1
            if first:
                first = False
                if raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8) :]
            try:
                yield raw.decode(codec)
            except UnicodeDecodeError as exc:
                bad[number] = f"line {number} is not valid {encoding} (byte {exc.start + 1})"
                yield raw.decode(codec, errors="replace")

    reader = csv.reader(decoded(), strict=False)
    previous = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            start = previous + 1
            previous = reader.line_num
            yield CsvRow(start, [], f"the CSV does not parse here: {exc}")
            continue
        start, previous = previous + 1, reader.line_num
        error = None
        if bad:  # only after a line that did not decode
            error = next((bad.pop(n) for n in range(start, previous + 1) if n in bad), None)
            for n in range(start, previous + 1):
                bad.pop(n, None)
        if not cells:
            continue  # an empty line
        if len(cells) > MAX_COLUMNS:
            error = error or f"more than {MAX_COLUMNS} cells"
        yield CsvRow(start, cells, error)


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    """Where each column goes: ``email`` and ``name`` column indexes and attribute keys
    by column index (None: skipped)."""

    email: int
    name: int | None
    attributes: tuple[tuple[int, str], ...]
    width: int


def plan_columns(header: list[str], mapping: Mapping[str, str] | None) -> ColumnPlan:
    """Decide the columns from the header and a mapping (header → ``email``, ``name``,
    ``attr.<key>`` or ``-``). Unmapped columns: recognised email/name headers, the rest
    become attributes named after the header. InputError when no column holds addresses
    or the mapping names a missing column."""
    cleaned = [cell.strip() for cell in header]
    mapping = dict(mapping or {})
    known = set(cleaned)
    for column, target in mapping.items():
        if column not in known:
            raise InputError(
                f"the mapping names a column {column!r} that the header does not have "
                f"(columns: {', '.join(repr(c) for c in cleaned)})"
            )
        if target not in ("email", "name", "-") and not (
            target.startswith("attr.") and len(target) > 5
        ):
            raise InputError(
                f"the mapping of {column!r} must be email, name, attr.<key> or - (skip), "
                f"not {target!r}"
            )
    email: int | None = None
    name: int | None = None
    attributes: list[tuple[int, str]] = []
    for index, column in enumerate(cleaned):
        given = mapping.get(column)
        if given is not None:
            target = given
        else:
            lowered = column.lower()
            if email is None and "email" not in mapping.values() and lowered in EMAIL_HEADERS:
                target = "email"
            elif name is None and "name" not in mapping.values() and lowered in NAME_HEADERS:
                target = "name"
            elif column:
                target = f"attr.{column}"
            else:
                target = "-"
        if target == "email":
            if email is not None:
                raise InputError(f"two columns are mapped to email: {column!r} and another")
            email = index
        elif target == "name":
            name = index
        elif target.startswith("attr."):
            attributes.append((index, target[5:]))
    if email is None:
        raise InputError(
            "no column holds the addresses: name one 'email' or 'メールアドレス', or map it "
            "(e.g. --map 'E-Mail=email')"
        )
    return ColumnPlan(email, name, tuple(attributes), len(cleaned))


def neutralise(value: Any) -> str:
    """A cell a spreadsheet shows as text: a leading apostrophe before anything that
    would start a formula (OWASP's advice for CSV injection)."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def write_row(writer: Any, cells: Iterable[Any]) -> None:
    """Write one row with every cell neutralised."""
    writer.writerow([neutralise(cell) for cell in cells])
