"""Step mail (ステップメール) with an injected clock, on both databases: steps fall due N
days after a subscriber confirms, at the given hour in the list's time zone; people who
join later start at step 1; editing a sequence never resends a step; quiet hours hold
due mail until they end. Nothing sleeps: the clock is moved by hand."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from kakitome.campaigns.store import NewStep
from kakitome.lists import OptIn
from kakitome.store.schema import deliveries, messages

from .conftest import START, Kit, make_list

TOKYO = ZoneInfo("Asia/Tokyo")
DAY = 86_400.0


async def _sent(kit: Kit) -> Counter[tuple[str, str]]:
    """(recipient, subject) of every queued message."""
    async with kit.store.engine.connect() as conn:
        rows = await conn.execute(
            select(deliveries.c.recipient, messages.c.subject).join(
                messages, messages.c.id == deliveries.c.message_id
            )
        )
        return Counter((str(r[0]), str(r[1])) for r in rows)


async def _steps_sent(kit: Kit, prefix: str = "step") -> list[tuple[str, str]]:
    return sorted(
        k for k, n in (await _sent(kit)).items() for _ in range(n) if k[1].startswith(prefix)
    )


async def _join(kit: Kit, address: str, name: str = "") -> None:
    await kit.lists.add_subscriber("news", address, name=name, optin=OptIn("form"), confirmed=True)


def _local(ts: float, tz: ZoneInfo = TOKYO) -> datetime:
    return datetime.fromtimestamp(ts, tz)


async def _sequence(kit: Kit, *steps: tuple[int, int | None, str]) -> list[int]:
    """A sequence ``welcome`` on ``news`` with steps (delay_days, send_hour, subject)."""
    sequence = await kit.campaigns.create_sequence("welcome", "news")
    ids = []
    for delay, hour, subject in steps:
        row = await kit.campaigns.add_step(
            sequence.id,
            NewStep(delay_days=delay, send_hour=hour, subject=subject,
                    body="<p>{{ honorific(name) }} {{ email }}</p>"),
        )  # fmt: skip
        ids.append(row.id)
    return ids


async def test_confirmed_subscriber_gets_step_one_after_n_days_at_the_hour(kit: Kit) -> None:
    """Double opt-in: the step is due delay_days after the confirmation, at send_hour in
    the list's zone (Asia/Tokyo), not a second earlier; only those who confirmed get it."""
    await make_list(kit.lists, opt_in="double", time_zone="Asia/Tokyo")
    await _sequence(kit, (2, 9, "step 1"))
    kit.clock.advance(600)  # 2030-03-18 02:56:40 JST
    member = await kit.lists.add_subscriber("news", "taro@example.net", name="山田太郎",
                                            optin=OptIn("form"))  # fmt: skip
    await kit.lists.add_subscriber("news", "never@example.net", optin=OptIn("form"))
    token = kit.lists.confirmation_url(member.list_id, member.subscriber.id).rsplit("/", 1)[1]
    kit.clock.advance(3600)  # confirms at 03:56:40 JST on 03-18
    confirmed = await kit.lists.confirm(token)
    assert confirmed.status == "subscribed"
    # Due: two days later, at 09:00 Tokyo time = 2030-03-20 00:00 UTC.
    due = datetime(2030, 3, 20, 9, 0, tzinfo=TOKYO).timestamp()
    assert await kit.campaigns.run_sequences() == 0
    kit.clock.now = due - 1
    assert await kit.campaigns.run_sequences() == 0
    assert await _steps_sent(kit) == []
    kit.clock.now = due
    assert await kit.campaigns.run_sequences() == 1
    assert await _steps_sent(kit) == [("taro@example.net", "step 1")]
    assert _local(kit.clock()).hour == 9
    # Later passes send nothing more; the unconfirmed address never gets step mail.
    kit.clock.advance(5 * DAY)
    assert await kit.campaigns.run_sequences() == 0
    assert await _steps_sent(kit) == [("taro@example.net", "step 1")]


async def test_send_hour_is_in_the_lists_time_zone(kit: Kit) -> None:
    """The same step on a New York list falls due at 09:00 New York time."""
    await make_list(kit.lists, time_zone="America/New_York")
    await _sequence(kit, (1, 9, "step 1"))
    kit.clock.advance(60)
    await _join(kit, "ny@example.net")
    joined = _local(kit.clock(), ZoneInfo("America/New_York"))
    expected = datetime.combine(
        joined.date() + timedelta(days=1), datetime.min.time().replace(hour=9),
        tzinfo=ZoneInfo("America/New_York"),
    )  # fmt: skip
    if expected < joined + timedelta(days=1):
        expected += timedelta(days=1)
    kit.clock.now = expected.timestamp() - 60
    assert await kit.campaigns.run_sequences() == 0
    kit.clock.now = expected.timestamp()
    assert await kit.campaigns.run_sequences() == 1


async def test_later_joiners_start_at_step_one(kit: Kit) -> None:
    """Someone confirming while others are at step 2 starts at step 1 and goes through
    the steps at their own pace; members from before the sequence are left alone."""
    await make_list(kit.lists)
    await _join(kit, "before@example.net")  # confirmed before the sequence existed
    kit.clock.advance(10)
    await _sequence(kit, (0, None, "step 1"), (3, None, "step 2"), (7, None, "step 3"))
    kit.clock.advance(10)
    await _join(kit, "early@example.net")
    assert await kit.campaigns.run_sequences() == 1  # day 0, no hour: at once
    kit.clock.advance(3 * DAY)
    assert await kit.campaigns.run_sequences() == 1  # early: step 2
    await _join(kit, "late@example.net")
    assert await kit.campaigns.run_sequences() == 1  # late: step 1, not step 2
    assert await _steps_sent(kit) == [
        ("early@example.net", "step 1"),
        ("early@example.net", "step 2"),
        ("late@example.net", "step 1"),
    ]
    kit.clock.advance(3 * DAY)
    assert await kit.campaigns.run_sequences() == 1  # late: step 2
    kit.clock.advance(DAY)
    assert await kit.campaigns.run_sequences() == 1  # early: step 3 (day 7)
    kit.clock.advance(3 * DAY)
    assert await kit.campaigns.run_sequences() == 1  # late: step 3
    sent = await _steps_sent(kit)
    assert Counter(r for r, _ in sent) == {"early@example.net": 3, "late@example.net": 3}
    assert len(set(sent)) == len(sent)
    assert not [r for r, _ in sent if r == "before@example.net"]


async def test_editing_a_sequence_does_not_resend_steps(kit: Kit) -> None:
    """Changing a sent step's subject, body, day or hour, and moving it, sends it to
    nobody who had it; a new joiner gets the edited version; a restarted service too."""
    await make_list(kit.lists)
    [first, second] = await _sequence(kit, (0, None, "step 1"), (2, None, "step 2"))
    kit.clock.advance(10)
    await _join(kit, "a@example.net")
    await _join(kit, "b@example.net")
    assert await kit.campaigns.run_sequences() == 2
    await kit.campaigns.update_step(first, subject="step 1 (edited)", body="<p>新しい本文</p>")
    await kit.campaigns.update_step(first, delay_days=1, send_hour=None)
    kit.clock.advance(DAY)
    assert await kit.campaigns.run_sequences() == 0
    assert await kit.fresh_service().run_sequences() == 0  # another process: same answer
    await kit.campaigns.update_step(second, position=0)  # reordered: still not resent
    kit.clock.advance(DAY)
    assert await kit.campaigns.run_sequences() == 2  # step 2 for a and b, once
    await _join(kit, "c@example.net")
    kit.clock.advance(DAY)
    assert await kit.campaigns.run_sequences() == 1  # c: the edited step 1, a day later
    kit.clock.advance(10 * DAY)
    await kit.campaigns.run_sequences()
    sent = await _sent(kit)
    assert set(sent.values()) == {1}
    assert sorted(sent) == [
        ("a@example.net", "step 1"),
        ("a@example.net", "step 2"),
        ("b@example.net", "step 1"),
        ("b@example.net", "step 2"),
        ("c@example.net", "step 1 (edited)"),
        ("c@example.net", "step 2"),
    ]


async def test_removed_step_is_not_sent(kit: Kit) -> None:
    """A removed step reaches nobody from then on; the others continue."""
    await make_list(kit.lists)
    [_, second, _] = await _sequence(
        kit, (0, None, "step 1"), (1, None, "step 2"), (2, None, "step 3")
    )
    kit.clock.advance(10)
    await _join(kit, "a@example.net")
    await kit.campaigns.run_sequences()
    assert await kit.campaigns.remove_step(second)
    kit.clock.advance(3 * DAY)
    await kit.campaigns.run_sequences()
    assert await _steps_sent(kit) == [("a@example.net", "step 1"), ("a@example.net", "step 3")]


async def test_quiet_hours_hold_step_mail_until_they_end(kit: Kit) -> None:
    """START is 02:46 in Tokyo, inside the list's 21:00-08:00: a due step waits for 08:00
    and then goes out once; a step due at 23:00 goes out at 08:00 the next morning."""
    await make_list(kit.lists, quiet_start="21:00", quiet_end="08:00", time_zone="Asia/Tokyo")
    await _sequence(kit, (0, None, "step 1"), (1, 23, "step 2"))
    kit.clock.advance(10)
    await _join(kit, "night@example.net")
    assert _local(kit.clock()).hour == 2
    assert await kit.campaigns.run_sequences() == 0
    morning = datetime(2030, 3, 18, 8, 0, tzinfo=TOKYO).timestamp()
    kit.clock.now = morning - 1
    assert await kit.campaigns.run_sequences() == 0
    kit.clock.now = morning
    assert await kit.campaigns.run_sequences() == 1
    assert await _steps_sent(kit) == [("night@example.net", "step 1")]
    # Step 2: day 1 at 23:00 (2030-03-19 23:00 JST) is inside the quiet hours.
    kit.clock.now = datetime(2030, 3, 19, 23, 0, tzinfo=TOKYO).timestamp()
    assert await kit.campaigns.run_sequences() == 0
    kit.clock.now = datetime(2030, 3, 20, 7, 59, tzinfo=TOKYO).timestamp()
    assert await kit.campaigns.run_sequences() == 0
    kit.clock.now = datetime(2030, 3, 20, 8, 0, tzinfo=TOKYO).timestamp()
    assert await kit.campaigns.run_sequences() == 1
    kit.clock.advance(3600)
    assert await kit.campaigns.run_sequences() == 0
    assert await _steps_sent(kit) == [
        ("night@example.net", "step 1"),
        ("night@example.net", "step 2"),
    ]
    assert morning > START
