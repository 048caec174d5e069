"""Message ids: 26 lower-case characters, sortable by creation time, hard to guess.

The layout is ULID's: 48 bits of Unix time in milliseconds, then 80 random bits, written
in Crockford's base32 with lower-case letters (``0-9a-z`` without ``i l o u``), so the
string order is the time order. Within one millisecond in one process the random part is
incremented instead of redrawn, so ids made in a row sort in the order they were made.
Limits: ids made in the same millisecond by different processes sort arbitrarily among
themselves; the clock is the wall clock (an id is not a timestamp to trust).
"""

from __future__ import annotations

import secrets
import threading
import time

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
LENGTH = 26
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1

_lock = threading.Lock()
_last_ms = -1
_last_random = 0


def encode(value: int) -> str:
    """The 26-character base32 form of a 128-bit number."""
    chars = []
    for _ in range(LENGTH):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_message_id(now_ms: int | None = None) -> str:
    """A fresh id; ``now_ms`` overrides the clock (tests)."""
    global _last_ms, _last_random
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        if ms <= _last_ms and _last_random < _RANDOM_MAX:
            # Same (or a stepped-back) millisecond: keep the order we hand ids out in.
            ms = _last_ms
            rand = _last_random + 1
        else:
            rand = secrets.randbits(_RANDOM_BITS)
        _last_ms, _last_random = ms, rand
    return encode(((ms & ((1 << 48) - 1)) << _RANDOM_BITS) | rand)


def new_message_ids(count: int) -> list[str]:
    """``count`` fresh ids in increasing order."""
    return [new_message_id() for _ in range(count)]


def is_message_id(value: str) -> bool:
    return len(value) == LENGTH and all(c in ALPHABET for c in value)
