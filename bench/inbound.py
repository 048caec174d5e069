"""Inbound acceptance benchmark: Kakitome's MX against Postfix's smtpd on this machine.

Both receivers get the same messages (same size, one recipient, one message per
connection) at the same concurrency, and both commit before they answer 250: Postfix's
cleanup writes and fsyncs a queue file (its mail is then discarded by the ``discard``
transport), Kakitome stores the message in SQLite (WAL, ``synchronous=FULL``, group
commits) before its 250.

Two load generators:

- ``smtp-source`` (Postfix's own) — it speaks plaintext SMTP only, so this run measures the
  SMTP and storage path without TLS;
- a small asyncio client in this file that does STARTTLS (TLS 1.3) on every connection, the
  same code against both receivers — the run the issue asks for ("over STARTTLS").

Kakitome runs as ``python -m kakitome serve --role smtp`` in its own process (uvloop), with
SPF/DKIM/DMARC checks off (there is no DNS here; with them on each message costs a few
DNS round trips to the resolver). Talks to 127.0.0.0/8 only. Needs root (Postfix).

    python -m bench.inbound --messages 2000 --sessions 20 --size 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kakitome.testing.ca import TestCA
from kakitome.testing.postfix import find_program, make_instance_root, receiving_instance

DOMAIN = "bench.test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(100).startswith(b"220"):
                    sock.sendall(b"QUIT\r\n")
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answers on port {port}")


def smtp_source(port: int, messages: int, sessions: int, size: int) -> float:
    """Messages per second that smtp-source got accepted (plaintext)."""
    program = find_program("smtp-source")
    assert program is not None
    args = [
        program,
        "-s",
        str(sessions),
        "-m",
        str(messages),
        "-l",
        str(size),
        "-f",
        "sender@source.test",
        "-t",
        f"user@{DOMAIN}",
        "-M",
        "client.test",
        f"127.0.0.1:{port}",
    ]
    started = time.monotonic()
    subprocess.run(args, check=True, capture_output=True, timeout=600)
    return messages / (time.monotonic() - started)


async def _tls_session(port: int, body: bytes, ctx: ssl.SSLContext) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if line[3:4] != b"-":
                if not line.startswith((b"2", b"3")):
                    raise RuntimeError(f"refused: {line!r}")
                return line

    await reply()
    writer.write(b"EHLO client.test\r\n")
    await reply()
    writer.write(b"STARTTLS\r\n")
    await reply()
    await writer.start_tls(ctx)
    for command in (
        b"EHLO client.test",
        b"MAIL FROM:<sender@source.test>",
        f"RCPT TO:<user@{DOMAIN}>".encode(),
        b"DATA",
    ):
        writer.write(command + b"\r\n")
        await reply()
    writer.write(body + b".\r\n")
    await reply()
    writer.write(b"QUIT\r\n")
    await reply()
    writer.close()


async def _tls_load(port: int, messages: int, sessions: int, size: int) -> float:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    line = b"x" * 76 + b"\r\n"
    body = b"From: sender@source.test\r\nTo: user@bench.test\r\nSubject: bench\r\n\r\n"
    body += line * max(1, (size - len(body)) // len(line))
    left = messages
    started = time.monotonic()

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await _tls_session(port, body, ctx)

    await asyncio.gather(*(worker() for _ in range(sessions)))
    return messages / (time.monotonic() - started)


def tls_load(port: int, messages: int, sessions: int, size: int) -> float:
    """Messages per second accepted over STARTTLS by the asyncio client."""
    try:
        import uvloop

        return uvloop.run(_tls_load(port, messages, sessions, size))
    except ImportError:
        return asyncio.run(_tls_load(port, messages, sessions, size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kakitome-bench-inbound-"))
    ca = TestCA(work / "ca")
    cert = ca.issue(["mx.bench.test"])
    results: dict[str, float] = {}

    # Postfix smtpd with STARTTLS offered, mail discarded after the queue file is written.
    pf_root = make_instance_root()
    pf_port = free_port()
    postfix = receiving_instance(
        pf_root,
        listen=("127.0.0.1", pf_port),
        cert_file=cert.cert_file,
        key_file=cert.key_file,
        domains=[DOMAIN],
    )
    postfix.write_config()
    postfix.start()
    try:
        results["postfix_plain"] = smtp_source(pf_port, args.messages, args.sessions, args.size)
        postfix.wait_queue_empty()
        results["postfix_starttls"] = tls_load(pf_port, args.messages, args.sessions, args.size)
        postfix.wait_queue_empty()
    finally:
        postfix.stop()
        shutil.rmtree(pf_root, ignore_errors=True)

    k_port = free_port()
    env = {
        **os.environ,
        "KAKITOME_DATABASE__URL": f"sqlite:///{work / 'k.db'}",
        "KAKITOME_PATHS__DATA_DIR": str(work / "data"),
        "KAKITOME_LOG__LEVEL": "warning",
        "KAKITOME_INBOUND__BIND_HOST": "127.0.0.1",
        "KAKITOME_INBOUND__MX_PORT": str(k_port),
        "KAKITOME_INBOUND__SUBMISSION_PORT": "0",
        "KAKITOME_INBOUND__SUBMISSIONS_PORT": "0",
        "KAKITOME_INBOUND__CERT_FILE": str(cert.cert_file),
        "KAKITOME_INBOUND__KEY_FILE": str(cert.key_file),
        "KAKITOME_INBOUND__DOMAINS": DOMAIN,
        "KAKITOME_INBOUND__CHECK_AUTHENTICATION": "false",
        "KAKITOME_INBOUND__MAX_CONNECTIONS_PER_IP": "1000",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "kakitome", "serve", "--role", "smtp"],
        env=env,
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(k_port)
        results["kakitome_plain"] = smtp_source(k_port, args.messages, args.sessions, args.size)
        results["kakitome_starttls"] = tls_load(k_port, args.messages, args.sessions, args.size)
    finally:
        proc.terminate()
        proc.wait(30)
    results["ratio_plain"] = results["kakitome_plain"] / results["postfix_plain"]
    results["ratio_starttls"] = results["kakitome_starttls"] / results["postfix_starttls"]
    print(json.dumps({k: round(v, 2) for k, v in results.items()} | vars(args), indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
