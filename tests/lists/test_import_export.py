"""CSV import (encodings, mapping, broken and duplicate rows, upsert) and export."""

from __future__ import annotations

import codecs
import io

import pytest

from kakitome.errors import InputError
from kakitome.lists import ListService, OptIn
from tests.lists.conftest import make_list

SJIS_CSV = (
    "メールアドレス,氏名,会員種別\n"
    "yamada@example.jp,山田 太郎,ゴールド\n"
    "sato@example.jp,髙橋 ①,一般\n"
)


async def test_shift_jis_file_is_detected(service: ListService) -> None:
    """A CP932 file as Excel writes it imports with the names intact."""
    lst = await make_list(service)
    report = await service.import_csv(lst.id, io.BytesIO(SJIS_CSV.encode("cp932")))
    assert report.encoding == "cp932" and report.inserted == 2 and not report.rejected
    person = await service.get_subscriber("sato@example.jp")
    assert person.name == "髙橋 ①" and person.attributes == {"会員種別": "一般"}


async def test_explicit_shift_jis_encoding(service: ListService) -> None:
    """--encoding shift_jis is read as CP932 (so ① and 髙 work)."""
    lst = await make_list(service)
    report = await service.import_csv(
        lst.id, io.BytesIO(SJIS_CSV.encode("cp932")), encoding="shift_jis"
    )
    assert report.inserted == 2 and report.encoding == "cp932"


async def test_utf8_with_bom(service: ListService) -> None:
    """A UTF-8 file with a BOM: the BOM does not end up in the first header."""
    lst = await make_list(service)
    data = codecs.BOM_UTF8 + "email,name\na@example.jp,あ\n".encode()
    report = await service.import_csv(lst.id, io.BytesIO(data))
    assert report.encoding == "utf-8-sig" and report.inserted == 1
    assert (await service.get_subscriber("a@example.jp")).name == "あ"


async def test_column_mapping(service: ListService) -> None:
    """Any column can be mapped to email, name, an attribute, or skipped."""
    lst = await make_list(service)
    data = "連絡先,呼び名,種別,メモ\nm@example.jp,太郎,gold,secret\n".encode()
    report = await service.import_csv(
        lst.id,
        io.BytesIO(data),
        mapping={"連絡先": "email", "呼び名": "name", "種別": "attr.plan", "メモ": "-"},
    )
    assert report.inserted == 1
    person = await service.get_subscriber("m@example.jp")
    assert person.name == "太郎" and person.attributes == {"plan": "gold"}


async def test_broken_and_duplicate_rows_are_reported(service: ListService) -> None:
    """Every refused row is reported with its line number and reason; good rows go in."""
    lst = await make_list(service)
    lines = [
        "email,name",
        "ok1@example.jp,a",
        "not-an-address,b",
        ",c",
        "OK1@EXAMPLE.JP,dup",
        '"multi@example.jp","line one',
        'line two"',
        "x@example.jp,a,extra",
        "ok2@example.jp,d",
    ]
    data = ("\n".join(lines) + "\n").encode("utf-8") + b"bad\xff@example.jp,e\n"
    report = await service.import_csv(lst.id, io.BytesIO(data), encoding="utf-8")
    rejected = {r.line: r.reason for r in report.rejected}
    assert set(rejected) == {3, 4, 5, 8, 10}
    assert "no '@'" in rejected[3]
    assert "no address" in rejected[4]
    assert "duplicate" in rejected[5]
    assert "cells" in rejected[8]
    assert "not valid utf-8" in rejected[10]
    assert report.inserted == 3 and report.duplicates == 1 and report.rows == 8
    assert (await service.get_subscriber("multi@example.jp")).name == "line one\nline two"


async def test_reimport_upserts_without_duplicates(service: ListService) -> None:
    """Importing twice updates and never duplicates subscribers or memberships."""
    lst = await make_list(service)
    await service.import_csv(lst.id, io.BytesIO(b"email,plan\na@example.jp,free\n"))
    report = await service.import_csv(
        lst.id, io.BytesIO(b"email,plan\nA@Example.jp,gold\nb@example.jp,free\n")
    )
    assert report.inserted == 1 and report.updated == 1
    assert await service.count_members(lst.id) == {"subscribed": 2}
    assert (await service.get_subscriber("a@example.jp")).attributes == {"plan": "gold"}


async def test_import_keeps_unsubscribed_people_out(service: ListService) -> None:
    """An import never re-subscribes someone who unsubscribed."""
    lst = await make_list(service)
    member = await service.add_subscriber(lst.id, "gone@example.jp", optin=OptIn("cli"))
    await service.unsubscribe(lst.id, member.subscriber.id, method="link")
    await service.import_csv(lst.id, io.BytesIO(b"email\ngone@example.jp\n"))
    assert (await service.membership(lst.id, "gone@example.jp")).status == "unsubscribed"


async def test_missing_email_column_is_a_clear_error(service: ListService) -> None:
    """A file without an address column is refused before anything is imported."""
    lst = await make_list(service)
    with pytest.raises(InputError, match="no column holds the addresses"):
        await service.import_csv(lst.id, io.BytesIO(b"name,plan\na,b\n"))


async def test_export_neutralises_formulas(service: ListService) -> None:
    """Cells starting with = + - @ tab or CR are exported with a leading apostrophe."""
    lst = await make_list(service)
    await service.add_subscriber(
        lst.id,
        "=cmd@example.jp",
        name="=cmd|' /C calc'!A0",
        attributes={"a": "+1", "b": "-2", "c": "@SUM(1)", "d": "\tx", "e": "\ry", "f": "ok"},
        optin=OptIn("cli"),
    )
    out = io.BytesIO()
    assert await service.export_csv(lst.id, out) == 1
    text = out.getvalue().decode("utf-8-sig")
    row = text.splitlines()[1]
    assert row.startswith("'=cmd@example.jp,'=cmd|' /C calc'!A0,")
    for cell in ("'+1", "'-2", "'@SUM(1)", "'\tx", "ok"):
        assert cell in text
    assert "'\ry" in text


async def test_export_round_trips_through_import(service: ListService) -> None:
    """An exported file imports again into another list with the same people."""
    lst = await make_list(service)
    other = await make_list(service, "other")
    await service.import_csv(lst.id, io.BytesIO(SJIS_CSV.encode("cp932")))
    out = io.BytesIO()
    await service.export_csv(lst.id, out, encoding="cp932")
    report = await service.import_csv(other.id, io.BytesIO(out.getvalue()))
    assert report.inserted == 0 and not report.rejected
    assert await service.count_members(other.id) == {"subscribed": 2}
