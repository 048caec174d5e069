"""The ``Kakitome-Signature`` header: how requests are signed, and how to check one.

Each POST carries ``Kakitome-Signature: t=<unix seconds>,v1=<hex>`` where ``v1`` is
HMAC-SHA256 under the endpoint's secret over the bytes ``<t>.<raw body>``. A receiver:

1. splits the header at ``,`` and each part at the first ``=``;
2. computes ``hmac_sha256(secret, f"{t}.".encode() + raw_body).hexdigest()``;
3. compares it with ``v1`` in constant time (``hmac.compare_digest``);
4. refuses a ``t`` more than 5 minutes from its own clock (a replayed request).

``verify`` below does exactly that, for receivers written in Python (and for our tests).
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "Kakitome-Signature"
TOLERANCE = 300.0


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The header value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(
    secret: str, header: str, body: bytes, *, now: float, tolerance: float = TOLERANCE
) -> bool:
    """True when ``header`` is a valid signature of ``body`` made within ``tolerance``."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).partition(",v1=")[2]
    return any(hmac.compare_digest(expected, given) for given in parts.get("v1", []))
