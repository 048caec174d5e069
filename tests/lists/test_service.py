"""The list service on both databases: audience streaming, segments, opt-in, bounces,
blank mail."""

from __future__ import annotations

import pytest

from kakitome.errors import InputError
from kakitome.lists import ListService, OptIn, SegmentError
from tests.lists.conftest import Clock, SentMail, make_list


async def _people(service: ListService, list_id: int) -> None:
    for i, (plan, age) in enumerate([("gold", 30), ("free", 17), ("gold", "abc"), (None, 40)]):
        attrs = {"age": age} | ({"plan": plan} if plan else {})
        await service.add_subscriber(
            list_id, f"p{i}@example.jp", name=f"人{i}", attributes=attrs, optin=OptIn("cli")
        )


async def test_iter_audience_resumes_after_a_checkpoint(service: ListService) -> None:
    """Batches come in id order; resuming after the last id yields the rest exactly once."""
    lst = await make_list(service)
    for i in range(7):
        await service.add_subscriber(lst.id, f"u{i}@example.jp", optin=OptIn("cli"))
    first = [b async for b in service.iter_audience(lst.id, batch_size=3)]
    assert [len(b) for b in first] == [3, 3, 1]
    ids = [m.subscriber_id for b in first for m in b]
    assert ids == sorted(ids)
    rest = [
        m
        async for b in service.iter_audience(lst.id, batch_size=3, after_subscriber_id=ids[2])
        for m in b
    ]
    assert [m.subscriber_id for m in rest] == ids[3:]
    assert rest[0].fields()["email"] == "u3@example.jp"


async def test_audience_leaves_out_unsubscribed_and_bounced(service: ListService) -> None:
    """Only subscribed, not-bounced members are in the audience."""
    lst = await make_list(service)
    await _people(service, lst.id)
    p0 = await service.get_subscriber("p0@example.jp")
    await service.unsubscribe(lst.id, p0.id, method="link")
    await service.record_bounce("p1@example.jp", permanent=True)
    assert await service.count_audience(lst.id) == 2


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('attr.plan = "gold"', {"p0", "p2"}),
        ('not attr.plan = "gold"', {"p1", "p3"}),
        ('attr.plan != "gold"', {"p1", "p3"}),
        ("attr.age >= 18", {"p0", "p3"}),
        ('attr.age = "abc"', {"p2"}),
        ('attr.plan in ["gold", "free"] and attr.age < 35', {"p0", "p1"}),
        ("has(attr.plan)", {"p0", "p1", "p2"}),
        ("attr.plan is null", {"p3"}),
        ('name contains "1"', {"p1"}),
        ('domain = "EXAMPLE.jp"', {"p0", "p1", "p2", "p3"}),
        ('email startswith "p3"', {"p3"}),
        ('status = "subscribed"', {"p0", "p1", "p2", "p3"}),
        ("not activity.bounced(30d)", {"p0", "p1", "p2", "p3"}),
        ({"or": [{"field": "attr.age", "op": "<", "value": 18}, {"has": "attr.missing"}]}, {"p1"}),
    ],
)
async def test_segment_expressions_select_the_right_people(
    service: ListService, expression: object, expected: set[str]
) -> None:
    """Segment expressions compile to SQL that selects the same people on both engines."""
    lst = await make_list(service)
    await _people(service, lst.id)
    found = {
        m.address.split("@")[0]
        async for batch in service.iter_audience(lst.id, expression=expression)  # type: ignore[arg-type]
        for m in batch
    }
    assert found == expected


async def test_injection_in_values_is_just_data(service: ListService) -> None:
    """SQL in a value is compared as text, not run."""
    lst = await make_list(service)
    await _people(service, lst.id)
    count = await service.count_audience(lst.id, expression="name = \"x' OR '1'='1\"")
    assert count == 0
    assert await service.count_audience(lst.id) == 4


async def test_saved_segment_and_member_condition(service: ListService) -> None:
    """A saved segment can refer to another list; unknown lists are clear errors."""
    lst = await make_list(service)
    vip = await make_list(service, "vip")
    await _people(service, lst.id)
    await service.add_subscriber(vip.id, "p2@example.jp", optin=OptIn("cli"))
    saved = await service.save_segment("vips", 'member("vip")', list_ref="news")
    assert saved.expression == 'member("vip")'
    audience = [m async for b in service.iter_audience("news", segment="vips") for m in b]
    assert [m.address for m in audience] == ["p2@example.jp"]
    with pytest.raises(SegmentError, match="no such list"):
        await service.save_segment("bad", 'member("nope")')
    with pytest.raises(SegmentError, match="not available"):
        await service.count_audience(lst.id, expression="activity.opened(7d)")


async def test_double_opt_in_sends_a_confirmation_and_confirms(
    service: ListService, sent: SentMail, clock: Clock
) -> None:
    """Double opt-in: unconfirmed until the token is used; the mail carries the link."""
    lst = await make_list(service, opt_in="double")
    member = await service.add_subscriber(
        lst.id, "new@example.jp", name="新井", optin=OptIn("form", ip="192.0.2.1")
    )
    assert member.status == "unconfirmed" and member.optin_ip == "192.0.2.1"
    assert await service.count_audience(lst.id) == 0
    (mail,) = sent.calls
    assert "新井 様" in mail["text"] and "登録確認" in mail["subject"]
    url = next(w for w in mail["text"].split() if "/confirm/" in w)
    token = url.rsplit("/", 1)[1]
    confirmed = await service.confirm(token, ip="192.0.2.2")
    assert confirmed.status == "subscribed" and confirmed.confirmed_at == clock.now
    assert (await service.confirm(token)).status == "subscribed"  # twice is harmless


async def test_expired_confirmation_is_refused(service: ListService, clock: Clock) -> None:
    """A confirmation link older than its lifetime does not confirm."""
    lst = await make_list(service, opt_in="double")
    member = await service.add_subscriber(lst.id, "late@example.jp", optin=OptIn("form"))
    token = service.confirmation_url(lst.id, member.subscriber.id).rsplit("/", 1)[1]
    clock.now += 8 * 86_400
    with pytest.raises(InputError, match="expired"):
        await service.confirm(token)


async def test_one_permanent_bounce_cleans_every_list(service: ListService) -> None:
    """One permanent failure marks the subscriber bounced on all lists, history kept."""
    a, b = await make_list(service), await make_list(service, "b")
    for lst in (a, b):
        await service.add_subscriber(lst.id, "dead@example.jp", optin=OptIn("cli"))
    verdict = await service.record_bounce("dead@example.jp", permanent=True, detail="5.1.1")
    assert verdict.cleaned and verdict.lists == 2
    assert (await service.membership("b", "dead@example.jp")).status == "bounced"
    kinds = [e["kind"] for e in await service.history("dead@example.jp")]
    assert "bounce_permanent" in kinds and kinds.count("bounced") == 2


async def test_three_temporary_bounces_within_the_window(
    service: ListService, clock: Clock
) -> None:
    """Temporary failures clean at the third within the window, not before."""
    lst = await make_list(service)
    await service.add_subscriber(lst.id, "slow@example.jp", optin=OptIn("cli"))
    assert not (await service.record_bounce("slow@example.jp", permanent=False)).cleaned
    clock.now += 40 * 86_400  # the first falls out of the 30-day window
    assert not (await service.record_bounce("slow@example.jp", permanent=False)).cleaned
    assert not (await service.record_bounce("slow@example.jp", permanent=False)).cleaned
    verdict = await service.record_bounce("slow@example.jp", permanent=False)
    assert verdict.cleaned and verdict.temporary == 3
    assert await service.count_audience(lst.id) == 0


async def test_bounced_address_cannot_be_added_without_confirmation(service: ListService) -> None:
    """A bounced address comes back only through double opt-in."""
    lst = await make_list(service)
    await service.add_subscriber(lst.id, "dead@example.jp", optin=OptIn("cli"))
    await service.record_bounce("dead@example.jp", permanent=True)
    with pytest.raises(InputError, match="bounced"):
        await service.add_subscriber(lst.id, "dead@example.jp", optin=OptIn("cli"))


async def test_history_is_kept_for_the_retention(service: ListService, clock: Clock) -> None:
    """Purging keeps at least 90 days of history."""
    lst = await make_list(service)
    await service.add_subscriber(lst.id, "h@example.jp", optin=OptIn("cli"))
    await service.record_bounce("h@example.jp", permanent=False)
    clock.now += 91 * 86_400
    assert await service.purge_history() == 0
    clock.now += 100 * 86_400
    assert await service.purge_history() == 2


async def test_blank_mail_signs_up_the_sender(service: ListService, sent: SentMail) -> None:
    """A blank mail to the list address subscribes (single) or sends a confirmation (double)."""
    single = await make_list(service)
    result = await service.handle_list_mail(
        "news", "lists.example.jp", "kara@example.jp", client_ip="198.51.100.7"
    )
    assert result is not None and result.action == "subscribed"
    member = await service.membership(single.id, "kara@example.jp")
    assert member.optin_method == "blank_mail" and member.optin_source == "kara@example.jp"
    again = await service.handle_list_mail("NEWS", "Lists.Example.JP", "kara@example.jp")
    assert again is not None and again.action == "already_subscribed"
    await make_list(service, "dbl", opt_in="double")
    result = await service.handle_list_mail("dbl+subscribe", "lists.example.jp", "k2@example.jp")
    assert result is not None and result.action == "confirmation_sent" and len(sent.calls) == 1
    assert await service.handle_list_mail("other", "lists.example.jp", "k@example.jp") is None
    refused = await service.handle_list_mail("news", "lists.example.jp", "")
    assert refused is not None and refused.action == "refused"


async def test_mailto_unsubscribe(service: ListService) -> None:
    """The List-Unsubscribe mailto address unsubscribes the token's subscriber."""
    lst = await make_list(service)
    member = await service.add_subscriber(lst.id, "m@example.jp", optin=OptIn("cli"))
    headers = service.list_unsubscribe_headers(lst, member.subscriber.id)
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    mailto = headers["List-Unsubscribe"].split("<mailto:")[1].split("?")[0]
    local, domain = mailto.split("@")
    assert len(local) <= 64
    assert await service.is_list_address(local, domain)
    result = await service.handle_list_mail(local, domain, "anyone@example.net")
    assert result is not None and result.action == "unsubscribed"
    assert (await service.membership(lst.id, "m@example.jp")).status == "unsubscribed"
    bad = await service.handle_list_mail(local[:-2] + "zz", domain, "anyone@example.net")
    assert bad is not None and bad.action == "refused"


async def test_list_fields_are_checked(service: ListService) -> None:
    """Bad list names, time zones and quiet hours are refused with reasons."""
    with pytest.raises(InputError, match="list name"):
        await make_list(service, "Bad Name")
    with pytest.raises(InputError, match="time zone"):
        await make_list(service, "x", time_zone="Mars/Base")
    with pytest.raises(InputError, match="HH:MM"):
        await make_list(service, "y", quiet_start="25:00", quiet_end="07:00")
    ok = await make_list(
        service, "z", quiet_start="21:00", quiet_end="08:00", encoding="iso-2022-jp"
    )
    assert (ok.quiet_start, ok.encoding) == ("21:00", "iso-2022-jp")
