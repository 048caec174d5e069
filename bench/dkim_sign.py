"""DKIM signing throughput: Kakitome's signer against dkimpy, both signatures per message.

Each message (about 5 KB: Japanese text, quoted-printable, a realistic newsletter header
with List-Unsubscribe) is signed with rsa-sha256 (RSA-2048) and ed25519-sha256, relaxed/
relaxed, by both signers; the process is pinned to one CPU. Prints messages/s for each and
the ratio. Usage::

    .venv/bin/python bench/dkim_sign.py [--seconds 5] [--json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import date
from email.message import EmailMessage
from email.policy import SMTP

import cryptography
import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from kakitome.auth.dkim_keys import generate_key_pair
from kakitome.auth.dkim_sign import DKIMSigner

DOMAIN = "example.com"
TARGET_SIZE = 5 * 1024
TEXT = (
    "山田太郎様\n\nいつも「カキトメ通信」をご愛読いただき、ありがとうございます。\n"
    "今月の特集は、暗号化された配信と送信ドメイン認証についてです。\n"
    "Every message is signed twice: RSA-2048 and Ed25519.\n\n"
)


def make_messages(count: int) -> list[bytes]:
    """``count`` distinct messages of about 5 KB each, CRLF line endings."""
    repeat = 1
    while len(_message(0, repeat)) < TARGET_SIZE:
        repeat += 1
    return [_message(i, repeat) for i in range(count)]


def _message(i: int, repeat: int) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "カキトメ通信 <news@example.com>"
    msg["To"] = f"subscriber{i}@example.jp"
    msg["Subject"] = f"【カキトメ通信】第{i}号：暗号化とドメイン認証の話"
    msg["Date"] = "Fri, 27 Nov 2026 09:00:00 +0900"
    msg["Message-ID"] = f"<{i}.bench@example.com>"
    msg["List-Unsubscribe"] = f"<https://example.com/u/{i:08d}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Feedback-ID"] = "bench:newsletter:kakitome"
    msg.set_content(TEXT * repeat + f"\n{i}\n", charset="utf-8", cte="quoted-printable")
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def rate(sign: Callable[[bytes], object], messages: list[bytes], seconds: float) -> float:
    """Messages signed per second over at least ``seconds`` (after one warm-up)."""
    sign(messages[0])
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for message in messages:
            sign(message)
        done += len(messages)
    return done / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    when = date.today()
    rsa_pair = generate_key_pair("rsa", when)
    ed_pair = generate_key_pair("ed25519", when)
    ours = DKIMSigner(DOMAIN, [rsa_pair, ed_pair])

    rsa_pem = rsa_pair.private_pem()
    assert isinstance(ed_pair.private_key, ed25519.Ed25519PrivateKey)
    ed_seed = base64.b64encode(
        ed_pair.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
    )
    headers = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version",
               b"content-type", b"content-transfer-encoding", b"list-unsubscribe",
               b"list-unsubscribe-post", b"feedback-id"]  # fmt: skip

    def dkimpy_both(message: bytes) -> bytes:
        canon = (b"relaxed", b"relaxed")
        rsa_sig = dkim.sign(message, rsa_pair.selector.encode(), DOMAIN.encode(), rsa_pem,
                            canonicalize=canon, include_headers=headers)  # fmt: skip
        ed_sig = dkim.sign(message, ed_pair.selector.encode(), DOMAIN.encode(), ed_seed,
                           canonicalize=canon, include_headers=headers,
                           signature_algorithm=b"ed25519-sha256")  # fmt: skip
        return bytes(rsa_sig) + bytes(ed_sig) + message

    messages = make_messages(50)
    size = sum(map(len, messages)) // len(messages)
    ours_rate = rate(ours.sign, messages, args.seconds)
    dkimpy_rate = rate(dkimpy_both, messages[:10], args.seconds)
    result = {
        "message_bytes": size,
        "signatures_per_message": 2,
        "kakitome_msgs_per_s": round(ours_rate, 1),
        "dkimpy_msgs_per_s": round(dkimpy_rate, 1),
        "ratio": round(ours_rate / dkimpy_rate, 1),
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "dkimpy": getattr(dkim, "__version__", "1.1"),
        "cpu": platform.processor() or platform.machine(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"messages: {size} bytes, rsa-sha256 (2048) + ed25519-sha256, one core")
        print(f"kakitome DKIMSigner: {ours_rate:8.1f} messages/s")
        print(f"dkimpy:              {dkimpy_rate:8.1f} messages/s")
        print(f"ratio:               {ours_rate / dkimpy_rate:8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
