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
import multiprocessing
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

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
    """One connection, one message: EHLO, STARTTLS, EHLO, then MAIL, RCPT and DATA in one
    write (both receivers advertise PIPELINING), the message, QUIT."""
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
    writer.write(b"EHLO client.test\r\n")
    await reply()
    writer.write(
        b"MAIL FROM:<sender@source.test>\r\n"
        + f"RCPT TO:<user@{DOMAIN}>\r\n".encode()
        + b"DATA\r\n"
    )
    for _ in range(3):
        await reply()
    writer.write(body + b".\r\n")
    await reply()
    writer.write(b"QUIT\r\n")
    await reply()
    writer.close()


def _body(size: int) -> bytes:
    line = b"x" * 76 + b"\r\n"
    body = b"From: sender@source.test\r\nTo: user@bench.test\r\nSubject: bench\r\n\r\n"
    return body + line * max(1, (size - len(body)) // len(line))


async def _tls_worker_process(port: int, messages: int, sessions: int, size: int) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    body = _body(size)
    left = messages

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await _tls_session(port, body, ctx)

    await asyncio.gather(*(worker() for _ in range(sessions)))


def _tls_child(port: int, messages: int, sessions: int, size: int, go: Any) -> None:
    go.wait()
    import uvloop

    uvloop.run(_tls_worker_process(port, messages, sessions, size))


def tls_load(port: int, messages: int, sessions: int, size: int, processes: int) -> float:
    """Messages per second accepted over STARTTLS (TLS 1.3, a full handshake per message),
    from ``processes`` OS processes with ``sessions`` connections at once in all."""
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    children = []
    for i in range(processes):
        share = messages // processes + (1 if i < messages % processes else 0)
        conns = sessions // processes + (1 if i < sessions % processes else 0)
        child = ctx.Process(target=_tls_child, args=(port, share, max(1, conns), size, go))
        child.start()
        children.append(child)
    time.sleep(0.5)  # all children imported and waiting
    started = time.monotonic()
    go.set()
    for child in children:
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"load generator process failed ({child.exitcode})")
    return messages / (time.monotonic() - started)


def kakitome_env(work: Path, port: int, cert_file: Path, key_file: Path) -> dict[str, str]:
    return {
        **os.environ,
        "KAKITOME_DATABASE__URL": os.environ.get("BENCH_DATABASE_URL")
        or f"sqlite:///{work / 'k.db'}",
        "KAKITOME_PATHS__DATA_DIR": str(work / "data"),
        "KAKITOME_LOG__LEVEL": "warning",
        "KAKITOME_INBOUND__BIND_HOST": "127.0.0.1",
        "KAKITOME_INBOUND__MX_PORT": str(port),
        "KAKITOME_INBOUND__SUBMISSION_PORT": "0",
        "KAKITOME_INBOUND__SUBMISSIONS_PORT": "0",
        "KAKITOME_INBOUND__CERT_FILE": str(cert_file),
        "KAKITOME_INBOUND__KEY_FILE": str(key_file),
        "KAKITOME_INBOUND__DOMAINS": DOMAIN,
        "KAKITOME_INBOUND__CHECK_AUTHENTICATION": "false",
        "KAKITOME_INBOUND__MAX_CONNECTIONS_PER_IP": "1000",
    }


def tree_cpu_seconds(*roots: int) -> float:
    """CPU seconds (user + system, reaped children included) of ``roots`` and every process
    below them (0.0 for those gone)."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        stats[int(entry)] = (int(fields[1]), sum(int(v) for v in fields[11:15]))
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, stack = 0, list(roots)
    while stack:
        pid = stack.pop()
        total += stats.get(pid, (0, 0))[1]
        stack.extend(children.get(pid, ()))
    return total / ticks


def _measure(
    port: int,
    args: argparse.Namespace,
    prefix: str,
    cpu: Callable[[], float],
    results: dict[str, list[float]],
) -> None:
    """One run of each load against one receiver: msg/s, and the receiver's CPU
    milliseconds per message (robust on a shared machine, where wall time is not)."""
    loads = ("plain", "starttls") if args.load == "both" else (args.load,)
    for load in loads:
        before = cpu()
        if load == "plain":
            rate = smtp_source(port, args.messages, args.sessions, args.size)
        else:
            rate = tls_load(port, args.messages, args.sessions, args.size, args.processes)
        used = cpu() - before
        results.setdefault(f"{prefix}_{load}", []).append(rate)
        results.setdefault(f"{prefix}_{load}_cpu_ms", []).append(1000 * used / args.messages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument(
        "--processes", type=int, default=2, help="OS processes of the STARTTLS load generator"
    )
    parser.add_argument("--runs", type=int, default=1, help="alternate the receivers N times")
    parser.add_argument("--load", choices=("both", "plain", "starttls"), default="both")
    parser.add_argument("--target", choices=("both", "postfix", "kakitome"), default="both")
    parser.add_argument(
        "--port", type=int, default=0, help="a Kakitome MX already running (for profiling)"
    )
    parser.add_argument("--pid", type=int, default=0, help="its process id (for the CPU time)")
    parser.add_argument(
        "--mx-processes",
        type=int,
        default=1,
        help="`serve --role smtp` processes sharing the MX port (SO_REUSEPORT)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kakitome-bench-inbound-"))
    ca = TestCA(work / "ca")
    cert = ca.issue(["mx.bench.test"])
    results: dict[str, list[float]] = {}
    postfix = pf_root = None
    procs: list[subprocess.Popen[bytes]] = []
    pf_port = k_port = 0
    try:
        if args.target in ("both", "postfix"):
            # Postfix smtpd, STARTTLS offered, mail discarded after the queue file is written.
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
        if args.target in ("both", "kakitome"):
            k_port = args.port
            if not k_port:
                k_port = free_port()
                env = kakitome_env(work, k_port, cert.cert_file, cert.key_file)
                for n in range(args.mx_processes):
                    # The first migrates the database; the others share the port.
                    procs.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "kakitome", "serve", "--role", "smtp"],
                            env=env,
                            cwd=work,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                    )
                    if n == 0:
                        wait_port(k_port)
                time.sleep(3 if args.mx_processes > 1 else 0)
            wait_port(k_port)
        for _ in range(args.runs):
            if postfix is not None:
                _measure(pf_port, args, "postfix", postfix.cpu_seconds, results)
                postfix.wait_queue_empty()
            if k_port:
                pids = [p.pid for p in procs] or [args.pid]
                _measure(k_port, args, "kakitome", partial(tree_cpu_seconds, *pids), results)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        if postfix is not None:
            postfix.stop()
        if pf_root is not None:
            shutil.rmtree(pf_root, ignore_errors=True)
    report: dict[str, Any] = {k: [round(r, 2) for r in v] for k, v in results.items()}
    for load in ("plain", "starttls"):
        k, p = results.get(f"kakitome_{load}"), results.get(f"postfix_{load}")
        if k and p:
            report[f"ratio_{load}_median"] = round(statistics.median(k) / statistics.median(p), 2)
        k, p = results.get(f"kakitome_{load}_cpu_ms"), results.get(f"postfix_{load}_cpu_ms")
        if k and p:
            # Above 1: Kakitome spends less CPU per message than Postfix.
            report[f"cpu_ratio_{load}_median"] = round(
                statistics.median(p) / statistics.median(k), 2
            )
    print(json.dumps(report | vars(args), indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
