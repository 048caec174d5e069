"""Tests: reply parsing (multi-line, enhanced status codes, malformed input)."""

from __future__ import annotations

import pytest

from kakitome.smtp.replies import ReplySyntaxError, parse_reply, parse_reply_line


def test_multiline_reply_joins_text_and_lifts_enhanced_code() -> None:
    """A multi-line 250 keeps every line's text and the first enhanced code."""
    reply = parse_reply(
        [b"250-2.0.0 mx.example Hello\r\n", b"250-PIPELINING\r\n", b"250 SIZE 10\r\n"]
    )
    assert reply.code == 250
    assert reply.enhanced == "2.0.0"
    assert reply.text.split("\n") == ["mx.example Hello", "PIPELINING", "SIZE 10"]


def test_bare_code_line_is_a_complete_reply() -> None:
    """A line with only the three digits is a final line with empty text."""
    assert parse_reply_line(b"354\r\n") == (354, True, "")


def test_enhanced_code_class_must_match_reply_class() -> None:
    """An enhanced code of another class is text, not a status."""
    reply = parse_reply([b"550 4.1.1 odd\r\n"])
    assert reply.enhanced is None and reply.text == "4.1.1 odd"


@pytest.mark.parametrize(
    "lines",
    [
        [b"hello\r\n"],
        [b"250x\r\n"],
        [b"250-a\r\n", b"251 b\r\n"],
        [b"250 a\r\n", b"250 b\r\n"],
        [b"650 no\r\n"],
        [],
    ],
)
def test_malformed_replies_are_refused(lines: list[bytes]) -> None:
    """Garbage, changing codes or misplaced continuations are syntax errors."""
    with pytest.raises(ReplySyntaxError):
        parse_reply(lines)
