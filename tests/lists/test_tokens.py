"""Unsubscribe and confirmation tokens: valid, expired, tampered, swapped."""

from __future__ import annotations

import pytest

from kakitome.lists import TokenError, TokenSigner

SIGNER = TokenSigner(b"0123456789abcdef0123456789abcdef")


def test_unsubscribe_token_round_trips() -> None:
    """A token names its list and subscriber."""
    token = SIGNER.unsubscribe_token(7, 123_456)
    assert SIGNER.verify_unsubscribe_token(token) == (7, 123_456)


def test_unsubscribe_token_survives_upper_case() -> None:
    """An MTA that upper-cases a local part does not break the token."""
    token = SIGNER.unsubscribe_token(7, 99)
    assert SIGNER.verify_unsubscribe_token(token.upper()) == (7, 99)


def test_unsubscribe_token_changed_subscriber_is_refused() -> None:
    """Changing the subscriber id breaks the signature."""
    list_part, _, mac = SIGNER.unsubscribe_token(7, 99).split("-")
    with pytest.raises(TokenError) as caught:
        SIGNER.verify_unsubscribe_token(f"{list_part}-2s-{mac}")
    assert caught.value.reason == "bad_signature"


@pytest.mark.parametrize("token", ["", "abc", "1-2", "1-2-3-4", "1-2-" + "a" * 200, "é-1-x"])
def test_malformed_tokens_are_refused(token: str) -> None:
    """Malformed tokens raise TokenError, never anything else."""
    with pytest.raises(TokenError):
        SIGNER.verify_unsubscribe_token(token)


def test_confirmation_token_valid_until_expiry() -> None:
    """A confirmation token works before its expiry and not after."""
    token = SIGNER.confirmation_token(3, 4, expires_at=1000)
    assert SIGNER.verify_confirmation_token(token, now=999) == (3, 4)
    with pytest.raises(TokenError) as caught:
        SIGNER.verify_confirmation_token(token, now=1001)
    assert caught.value.reason == "expired"


def test_confirmation_token_with_forged_expiry_is_tampered() -> None:
    """Extending the expiry by hand breaks the signature."""
    parts = SIGNER.confirmation_token(3, 4, expires_at=1000).split("-")
    parts[2] = "zzzzzz"
    with pytest.raises(TokenError) as caught:
        SIGNER.verify_confirmation_token("-".join(parts), now=0)
    assert caught.value.reason == "bad_signature"


def test_token_kinds_are_not_interchangeable() -> None:
    """An unsubscribe token is not a confirmation token, nor the reverse."""
    confirm = SIGNER.confirmation_token(1, 2, expires_at=10**10)
    with pytest.raises(TokenError):
        SIGNER.verify_unsubscribe_token(confirm)
    other = TokenSigner(b"another secret of enough length!")
    with pytest.raises(TokenError):
        other.verify_unsubscribe_token(SIGNER.unsubscribe_token(1, 2))
