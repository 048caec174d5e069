"""The segment language: parsing, canonical forms, clear errors, injection attempts."""

from __future__ import annotations

import pytest

from kakitome.lists import SegmentError
from kakitome.lists.segments import (
    Activity,
    And,
    Compare,
    Member,
    Not,
    Or,
    from_json,
    parse,
    parse_any,
    to_json,
    to_text,
)


def test_parse_example_from_the_issue() -> None:
    """`attr.plan = "gold" and not activity.opened(30d)` parses to the expected tree."""
    node = parse('attr.plan = "gold" and not activity.opened(30d)')
    assert node == And(
        (Compare("attr.plan", "=", "gold"), Not(Activity("opened", "30d", 30 * 86_400)))
    )


def test_precedence_and_parentheses() -> None:
    """`and` binds tighter than `or`; parentheses override it."""
    assert isinstance(parse('name = "a" or name = "b" and name = "c"'), Or)
    assert isinstance(parse('(name = "a" or name = "b") and name = "c"'), And)


def test_japanese_attribute_names_and_values() -> None:
    """Attribute names and values may be Japanese."""
    node = parse('attr.会員種別 = "ゴールド" and attr.年齢 >= 20')
    assert node == And((Compare("attr.会員種別", "=", "ゴールド"), Compare("attr.年齢", ">=", 20)))


@pytest.mark.parametrize(
    "text",
    [
        'attr.plan = "gold" and not activity.opened(30d)',
        'domain in ["docomo.ne.jp", "ezweb.ne.jp"] or attr.age >= 20.5',
        'member("news") and status = "subscribed"',
        "not (attr.vip = true or has(attr.coupon))",
        'attr.note is not null and email endswith "@example.jp"',
    ],
)
def test_text_and_json_forms_round_trip(text: str) -> None:
    """Canonical text and JSON parse back to the same tree."""
    node = parse(text)
    assert parse(to_text(node)) == node
    assert from_json(to_json(node)) == node
    assert parse_any(to_json(node)) == node


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("attr.plan = ", "expected a value"),
        ('attr.plan "gold"', "expected an operator"),
        ('plan = "gold"', "unknown field 'plan'"),
        ("activity.opened(30)", "duration"),
        ("activity.sent(3d)", "unknown activity"),
        ('status = "active"', "unknown status"),
        ('(name = "a"', "expected ')'"),
        ('name = "a" name = "b"', "unexpected"),
        ('attr.plan ~ "x"', "unexpected character"),
        ("", "empty"),
    ],
)
def test_invalid_expressions_have_clear_errors(text: str, message: str) -> None:
    """Each mistake gets a message that names it (and where it is)."""
    with pytest.raises(SegmentError) as caught:
        parse(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        'attr.plan = "x"; DROP TABLE subscribers; --',
        "attr.plan = 'x' OR 1=1 --'",
        'attr.x") = 1 or ("a = "b"',
        'email = "a" union select * from api_keys',
        'attr.$.a = "x"',
    ],
)
def test_injection_attempts_do_not_parse(text: str) -> None:
    """SQL and JSON-path injection attempts are refused by the parser."""
    with pytest.raises(SegmentError):
        parse(text)


def test_limits_on_size_and_depth() -> None:
    """Long or deeply nested expressions are refused."""
    with pytest.raises(SegmentError, match="longer"):
        parse('name = "' + "a" * 5000 + '"')
    with pytest.raises(SegmentError, match="deeper"):
        parse("not " * 40 + 'name = "a"')


@pytest.mark.parametrize(
    "data",
    [
        {"field": "attr.plan", "op": "=", "value": {"$ne": 1}},
        {"field": "attr.plan", "op": "like", "value": "x"},
        {"and": []},
        {"sql": "1=1"},
        [1, 2],
    ],
)
def test_bad_json_is_refused(data: object) -> None:
    """JSON that is not a known condition is refused."""
    with pytest.raises(SegmentError):
        from_json(data)


def test_member_condition() -> None:
    """member("name") names a list."""
    assert parse('member("vip-list")') == Member("vip-list")
