"""Campaigns on both databases with an injected clock: validation before sending,
batches with checkpoints (a crash between batches resumes without duplicates), quiet
hours, pause/resume/cancel, statistics."""

from __future__ import annotations

import email
import email.policy
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select

from kakitome.campaigns.templates import TemplateError
from kakitome.errors import InputError
from kakitome.store.schema import deliveries, messages

from .conftest import Kit, add_people, make_list


async def _queued(kit: Kit) -> list[tuple[str, bytes]]:
    async with kit.store.engine.connect() as conn:
        rows = await conn.execute(
            select(deliveries.c.recipient, messages.c.content).join(
                messages, messages.c.id == deliveries.c.message_id
            )
        )
        return [(str(r[0]), bytes(r[1])) for r in rows]


async def _people(kit: Kit, count: int, list_name: str = "news") -> None:
    await add_people(
        kit.lists,
        list_name,
        [(f"user{i}@example.net", f"利用者{i}" if i % 3 else "") for i in range(count)],
    )


@pytest.mark.parametrize(
    ("body", "what"),
    [
        ("<p>{{ nickname }}</p>", "unknown name 'nickname'"),
        ("<p>{% if name %}</p>", "syntax error"),
        ("<p>{{ ''.__class__.__mro__ }}</p>", "not allowed"),
        ("<p>{{ name|attr('__class__') }}</p>", "not allowed"),
    ],
)
async def test_template_errors_are_refused_before_anything_is_sent(
    kit: Kit, body: str, what: str
) -> None:
    """Unknown names, syntax errors and sandbox escapes fail at create time; nothing is queued."""
    await make_list(kit.lists)
    await _people(kit, 3)
    with pytest.raises(TemplateError, match=what):
        await kit.campaigns.create("bad", "news", subject="件名", body=body)
    assert await _queued(kit) == []


async def test_attribute_missing_for_first_member_is_refused_at_send(kit: Kit) -> None:
    """An attribute the audience lacks is found by the trial render before sending."""
    await make_list(kit.lists)
    await _people(kit, 2)
    row = await kit.campaigns.create("c", "news", subject="x", body="<p>{{ attributes.plan }}</p>")
    with pytest.raises(TemplateError, match="plan"):
        await kit.campaigns.send_now(row.id)
    assert (await kit.campaigns.get(row.id)).status == "draft"
    assert await _queued(kit) == []


async def test_list_without_postal_address_is_refused(kit: Kit) -> None:
    """特定電子メール法: no sender address in the footer, no campaign."""
    await make_list(kit.lists, sender_postal_address="")
    with pytest.raises(InputError, match="postal address"):
        await kit.campaigns.create("c", "news", subject="x", body="<p>hi</p>")


async def test_campaign_sends_one_personalised_message_each(kit: Kit) -> None:
    """Everyone gets one message with their name (or the fallback) and RFC 8058 headers."""
    await make_list(kit.lists)
    await _people(kit, 250)
    row = await kit.campaigns.create(
        "march", "news",
        subject="{{ name | honorific }}へ 春のお知らせ",
        body="# {{ honorific(name) }}\n\n[新商品](https://shop.example.jp/new?a=1&b=2)",
        body_format="markdown",
    )  # fmt: skip
    await kit.campaigns.send_now(row.id)
    report = await kit.campaigns.run_due()
    assert report.queued == 250 and report.finished == [row.id]
    queued = await _queued(kit)
    assert Counter(r for r, _ in queued) == Counter(f"user{i}@example.net" for i in range(250))
    for recipient, content in queued:
        msg = email.message_from_bytes(content, policy=email.policy.default)
        index = int(recipient[4:].split("@")[0])
        expected = f"利用者{index}様" if index % 3 else "お客様"
        assert msg["Subject"] == f"{expected}へ 春のお知らせ"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        links = [p.strip() for p in str(msg["List-Unsubscribe"]).split(",")]
        assert links[0].startswith("<https://news.example.jp/unsubscribe/")
        assert links[1].startswith("<mailto:news+u-")
        assert msg["List-Id"].endswith("<news.lists.example.jp>")
        assert msg["Feedback-ID"].startswith(f"c{row.id}:l")
        assert msg["Precedence"] is None
        html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        assert "https://news.example.jp/t/c/" in html and "/t/o/" in html
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "https://shop.example.jp/new?a=1&b=2" in text
        assert "書留商店株式会社" in text and "東京都千代田区千代田1-1" in text
    stats = await kit.campaigns.stats(row.id)
    assert (stats.sent, stats.queued, stats.delivered) == (250, 250, 0)


async def test_crash_between_batches_resumes_without_duplicates(kit: Kit) -> None:
    """A runner stopped after two batches leaves a checkpoint; a new one sends the rest once."""
    await make_list(kit.lists)
    await _people(kit, 450)
    row = await kit.campaigns.create("c", "news", subject="件名", body="<p>{{ name }}</p>")
    await kit.campaigns.send_now(row.id)
    first = await kit.campaigns.run_due(max_batches=2)  # then the process "dies"
    assert first.queued == 200
    assert (await kit.campaigns.get(row.id)).status == "sending"
    restarted = kit.fresh_service()
    second = await restarted.run_due()
    assert second.queued == 250 and second.finished == [row.id]
    counts = Counter(r for r, _ in await _queued(kit))
    assert len(counts) == 450 and set(counts.values()) == {1}


async def test_a_stale_runner_cannot_send_a_batch_twice(kit: Kit) -> None:
    """A batch committed against an old checkpoint is refused and writes nothing."""
    await make_list(kit.lists)
    await _people(kit, 150)
    row = await kit.campaigns.create("c", "news", subject="件名", body="<p>x</p>")
    await kit.campaigns.send_now(row.id)
    await kit.campaigns.run_due(max_batches=1)
    lost = await kit.campaigns.db.commit_campaign_batch(
        row.id, old_checkpoint=0, new_checkpoint=100, outgoing=[], now=kit.clock(), lifetime=60
    )
    assert lost is False
    await kit.campaigns.run_due()
    assert len(await _queued(kit)) == 150


async def test_quiet_hours_pause_and_resume(kit: Kit) -> None:
    """Inside the list's quiet hours nothing goes out; at their end the campaign continues."""
    # START is 02:46 in Tokyo: inside 21:00-08:00.
    await make_list(kit.lists, quiet_start="21:00", quiet_end="08:00")
    await _people(kit, 120)
    row = await kit.campaigns.create("c", "news", subject="件名", body="<p>x</p>")
    await kit.campaigns.send_now(row.id)
    report = await kit.campaigns.run_due()
    assert report.queued == 0 and report.held_for_quiet_hours == [row.id]
    held = await kit.campaigns.get(row.id)
    assert held.status == "sending" and held.next_run_at is not None
    kit.clock.advance(3600)
    assert (await kit.campaigns.run_due()).queued == 0  # not due yet: nobody even looks
    kit.clock.now = held.next_run_at
    report = await kit.campaigns.run_due()
    assert report.queued == 120 and report.finished == [row.id]


async def test_schedule_pause_resume_cancel(kit: Kit) -> None:
    """配信予約 waits for its time; pause stops, resume continues, cancel ends for good."""
    await make_list(kit.lists)
    await _people(kit, 250)
    row = await kit.campaigns.create("c", "news", subject="件名", body="<p>x</p>")
    await kit.campaigns.schedule(row.id, kit.clock() + 600)
    assert (await kit.campaigns.run_due()).queued == 0
    kit.clock.advance(601)
    assert (await kit.campaigns.run_due(max_batches=1)).queued == 100
    await kit.campaigns.pause(row.id)
    assert (await kit.campaigns.run_due()).queued == 0
    await kit.campaigns.resume(row.id)
    assert (await kit.campaigns.run_due(max_batches=1)).queued == 100
    await kit.campaigns.cancel(row.id)
    assert (await kit.campaigns.run_due()).queued == 0
    assert len(await _queued(kit)) == 200
    with pytest.raises(InputError):
        await kit.campaigns.resume(row.id)


async def test_preview_and_test_send(kit: Kit) -> None:
    """Preview renders for one subscriber; a test send goes only to the given address."""
    await make_list(kit.lists)
    await _people(kit, 2)
    row = await kit.campaigns.create(
        "c", "news", subject="{{ name|honorific }}", body="<p>{{ email }}</p>"
    )
    preview = await kit.campaigns.preview(row.id, "user1@example.net")
    assert preview.subject == "利用者1様"
    assert "user1@example.net" in (preview.html or "")
    blank = await kit.campaigns.preview(row.id)
    assert blank.subject == "お客様"
    ids = await kit.campaigns.test_send(row.id, ["editor@example.org"])
    queued = await _queued(kit)
    assert len(ids) == 1 and [r for r, _ in queued] == ["editor@example.org"]
    assert b"[TEST]" in queued[0][1] or "[TEST]" in str(
        email.message_from_bytes(queued[0][1], policy=email.policy.default)["Subject"]
    )


async def test_iso_2022_jp_list_round_trip(kit: Kit) -> None:
    """An ISO-2022-JP list gets 7-bit mail whose subject and body decode to the original."""
    await make_list(kit.lists, encoding="iso-2022-jp")
    await add_people(kit.lists, "news", [("taro@example.net", "山田太郎")])
    long_line = "ご愛顧いただき誠にありがとうございます。" * 30
    row = await kit.campaigns.create(
        "c", "news", subject="【重要】{{ name|honorific }}へのご案内〜",
        body=f"{{{{ honorific(name) }}}}\n\n{long_line}\n", body_format="text",
    )  # fmt: skip
    await kit.campaigns.send_now(row.id)
    await kit.campaigns.run_due()
    [(_, content)] = await _queued(kit)
    assert content.isascii()
    assert max(len(line) for line in content.split(b"\r\n")) <= 998
    msg = email.message_from_bytes(content, policy=email.policy.default)
    assert msg["Subject"] == "【重要】山田太郎様へのご案内〜"
    assert msg.get_content_charset() == "iso-2022-jp"
    body: Any = msg.get_content().replace("\r\n", "\n")
    assert body.startswith("山田太郎様\n")
    assert body.replace("\n", "").count("ご愛顧いただき誠にありがとうございます。") == 30
    assert all(len(line.encode("iso-2022-jp")) <= 998 for line in body.split("\n"))
