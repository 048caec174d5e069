"""The exceptions Kakitome raises, in one tree so callers can catch at the right level.

    KakitomeError
    ├── ConfigError            settings that do not parse or make no sense
    ├── InputError             bad input from a user or client (maps to HTTP 4xx / CLI exit 2)
    │   ├── AddressError       an address that is not a valid mailbox
    │   ├── MessageError       a message that cannot be built or accepted (size, encoding, headers)
    │   │   └── MessageTooLarge            (message.py; HTTP 413, SMTP 552)
    │   └── DKIMKeyError       a DKIM key that cannot be read or is too weak (auth/dkim_keys.py)
    ├── DNSTemporaryError      a DNS lookup that timed out or failed (auth/dnsio.py)
    ├── NotFound               an id that names nothing
    ├── StorageError           the database is unavailable or refused a write (HTTP 503, SMTP 451)
    └── DeliveryError          raised inside delivery agents, never past them
        ├── TemporaryFailure   try again later (4xx, network, TLS policy, DNS SERVFAIL)
        └── PermanentFailure   give up (5xx, null MX, NXDOMAIN)

Temporary and permanent failures carry an SMTP-style reply (code, enhanced status, text)
so that receipts and DSNs report them without guessing.
"""

from __future__ import annotations

from kakitome.smtp.replies import Reply


class KakitomeError(Exception):
    """Base of every error Kakitome raises on purpose."""


class ConfigError(KakitomeError):
    """Settings that do not parse or contradict each other."""


class InputError(KakitomeError):
    """Input from a user or client that we refuse; the message says why in plain words."""


class AddressError(InputError):
    """Not a valid mailbox address."""


class MessageError(InputError):
    """A message that cannot be built or accepted."""


class NotFound(KakitomeError):
    """An id that names nothing."""


class StorageError(KakitomeError):
    """The database did not commit; nothing may be acknowledged."""


class DeliveryError(KakitomeError):
    """A delivery attempt failed; carries the reply that describes the failure."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


class TemporaryFailure(DeliveryError):
    """Try again later."""


class PermanentFailure(DeliveryError):
    """Do not try again."""
