"""Tests: smtp.wire — line endings, dot-stuffing and command lines (T10)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kakitome.smtp import wire


def test_bare_lf_and_bare_cr_become_crlf() -> None:
    """T10: outbound content has every line ending normalised to CRLF."""
    assert wire.normalise_line_endings(b"a\nb\rc\r\nd") == b"a\r\nb\r\nc\r\nd"


def test_leading_dots_are_doubled() -> None:
    """T10: a line starting with a dot is dot-stuffed, including the first line."""
    assert wire.dot_stuff(b".a\r\n.\r\nb\r\n..c") == b"..a\r\n..\r\nb\r\n...c"


def test_encode_data_terminates_once() -> None:
    """T10: DATA ends with exactly one CRLF.CRLF, adding the last CRLF when missing."""
    assert wire.encode_data(b"hi") == b"hi\r\n.\r\n"
    assert wire.encode_data(b"hi\r\n") == b"hi\r\n.\r\n"
    assert wire.encode_data(b"") == b".\r\n"


def test_smuggling_sequence_is_neutralised() -> None:
    """T10: a bare-LF end-of-data inside content cannot end the message early."""
    body = b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<evil@x>\r\n"
    encoded = wire.encode_data(body)
    assert encoded.count(b"\r\n.\r\n") == 1
    assert encoded.endswith(b"\r\n.\r\n")
    assert b"\r\n..\r\n" in encoded


@given(st.binary(max_size=2000))
def test_encoded_data_round_trips_and_has_one_terminator(content: bytes) -> None:
    """T10: for any bytes, the encoding has only CRLF line ends and one terminator."""
    encoded = wire.encode_data(content)
    body = encoded[: -len(wire.END_OF_DATA)]
    assert (b"\r\n" + body).count(b"\r\n.\r\n") == 0
    stripped = body.replace(b"\r\n", b"")
    assert b"\r" not in stripped and b"\n" not in stripped
    decoded = wire.decode_data(encoded)
    normalised = wire.normalise_line_endings(content)
    if normalised and not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    assert decoded == normalised


@given(st.binary(max_size=500))
def test_normalisation_is_idempotent(content: bytes) -> None:
    """T10: normalising twice changes nothing the first pass did not."""
    once = wire.normalise_line_endings(content)
    assert wire.normalise_line_endings(once) == once


@pytest.mark.parametrize("arg", ["<a@b>\r\nRCPT TO:<x@y>", "a\nb", "nul\0"])
def test_command_refuses_line_breaks(arg: str) -> None:
    """T10: an argument cannot smuggle a second command."""
    with pytest.raises(ValueError):
        wire.command("MAIL FROM:", arg)


def test_xtext_encodes_plus_equals_and_controls() -> None:
    """RFC 3461 xtext: '+', '=' and non-printables are hex-escaped."""
    assert wire.xtext("rfc822;a+b=c@x") == "rfc822;a+2Bb+3Dc@x"
    assert wire.xtext("é") == "+C3+A9"
