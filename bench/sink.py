"""The delivery benchmark's sink, in a process of its own, and a client that measures it.

``serve``: a ``kakitome.testing.LocalInternet`` (authoritative DNS on 127.0.0.1, a test
CA, and ``--peers`` MX peers on 127.0.0.10 and up, all on one event loop) that publishes
``d1.bench.test`` ... ``d<N>.bench.test``, each with one MX on the peers in turn. The peers
accept everything with STARTTLS (valid certificates from the test CA) and keep no message
bodies and no transcripts. They run on uvloop when it is installed (``--no-uvloop``: the
standard asyncio loop; the JSON hello says which). It prints one
JSON line (the ``KAKITOME_*`` environment for the service, the peers' ``ip:port``, the CA
file, its pid) and then answers commands read from stdin, one a line, with one JSON line
each: ``stats`` (per-peer counters: connections, TLS handshakes, messages, ...) and
``quit`` (EOF also quits).

``blast``: a raw SMTP client (uvloop when installed) that pipelines MAIL/RCPT/DATA (two
round trips per message) over ``--connections`` STARTTLS connections for ``--seconds`` and
prints messages/second: the sink's own ceiling, so that the sink is not mistaken for the
sender. With ``--new-connection-each`` it opens a new connection and TLS handshake for
every message instead (the pattern of Postfix's defaults).

Run apart from the service and from the harness so that the sink does not share a GIL with
either. Talks to nothing beyond 127.0.0.0/8; the sink only answers.

    python -m bench.sink serve --domains 20 --peers 2
    python -m bench.sink blast 127.0.0.10:PORT --ca-file CA --server-name mx1.d1.bench.test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

BENCH_SENDER = "sender@bench.test"


def bench_domain(number: int) -> str:
    """The ``number``-th destination domain (from 1), the same names as Postfix's side."""
    return f"d{number}.bench.test"


def cpu_seconds(pid: int) -> float:
    """utime + stime (with reaped children) of ``pid`` from /proc, in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rpartition(")")[2].split()
    # After the command name: state is field 3, utime 14 ... cstime 17 (1-based).
    ticks = sum(int(value) for value in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _install_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


# -- serve ---------------------------------------------------------------------------------


def serve(domains: int, peers: int, *, use_uvloop: bool = True) -> int:
    """Run the sink until ``quit`` or EOF on stdin. The world's loop thread makes its loop
    with ``asyncio.new_event_loop()``, so the policy set here decides which loop it is."""
    from kakitome.testing import LocalInternet, PeerBehaviour

    uvloop_used = use_uvloop and _install_uvloop()

    behaviour = PeerBehaviour(keep_data=False, transcript=False)
    with LocalInternet() as world:
        started = [world.add_peer(behaviour=behaviour) for _ in range(peers)]
        for number in range(1, domains + 1):
            world.add_domain(bench_domain(number), mx=[(10, started[(number - 1) % peers])])
        hello = {
            "pid": os.getpid(),
            "env": world.env(),
            "peers": [peer.address for peer in started],
            "mx_names": {peer.address: peer.hostname for peer in started},
            "ca_file": str(world.ca.ca_file),
            "loop": "uvloop" if uvloop_used else "asyncio",
        }
        print(json.dumps(hello), flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "stats":
                stats = {peer.address: asdict(peer.stats()) for peer in started}
                print(json.dumps({"peers": stats, "cpu_seconds": cpu_seconds(os.getpid())}),
                      flush=True)
            elif command == "quit":
                break
            else:
                print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)
    return 0


# -- blast ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlastResult:
    target: str
    connections: int
    new_connection_each: bool
    message_size: int
    seconds: float
    messages: int
    messages_per_second: float
    tls_handshakes: int
    client_cpu_seconds: float


async def _reply(reader: asyncio.StreamReader) -> bytes:
    """Read one (possibly multi-line) reply; return its last line."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("the sink closed the connection")
        if line[3:4] != b"-":
            return line


async def _expect(reader: asyncio.StreamReader, code: bytes) -> None:
    line = await _reply(reader)
    if not line.startswith(code):
        raise RuntimeError(f"expected {code.decode()}, got {line!r}")


async def _open(
    host: str, port: int, context: ssl.SSLContext, server_name: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    await _expect(reader, b"220")
    writer.write(b"EHLO blast.bench.test\r\n")
    await _expect(reader, b"250")
    writer.write(b"STARTTLS\r\n")
    await _expect(reader, b"220")
    await writer.start_tls(context, server_hostname=server_name)
    writer.write(b"EHLO blast.bench.test\r\n")
    await _expect(reader, b"250")
    return reader, writer


async def _send_one(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rcpt: str, body: bytes
) -> None:
    writer.write(f"MAIL FROM:<{BENCH_SENDER}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
    await _expect(reader, b"250")
    await _expect(reader, b"250")
    await _expect(reader, b"354")
    writer.write(body)
    await _expect(reader, b"250")


async def _quit(writer: asyncio.StreamWriter) -> None:
    writer.write(b"QUIT\r\n")
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await writer.wait_closed()


def _body(size: int) -> bytes:
    line = b"The quick brown fox jumps over the lazy dog; 0123456789 abcdefghij.\r\n"
    head = b"From: <sender@bench.test>\r\nTo: <rcpt@d1.bench.test>\r\nSubject: blast\r\n\r\n"
    text = (line * (size // len(line) + 1))[: max(0, size - len(head))]
    return head + text + b"\r\n.\r\n"


async def blast(
    host: str,
    port: int,
    *,
    ca_file: str,
    server_name: str,
    connections: int = 4,
    seconds: float = 5.0,
    size: int = 3500,
    new_connection_each: bool = False,
    rcpt_domain: str = "d1.bench.test",
) -> BlastResult:
    """Send to the sink as fast as it takes it for ``seconds``; count what it accepted."""
    context = ssl.create_default_context(cafile=ca_file)
    body = _body(size)
    sent = 0
    handshakes = 0
    cpu_before = time.process_time()
    started = time.monotonic()
    deadline = started + seconds

    async def one_connection(number: int) -> None:
        nonlocal sent, handshakes
        rcpt = f"user{number}@{rcpt_domain}"
        if new_connection_each:
            while time.monotonic() < deadline:
                reader, writer = await _open(host, port, context, server_name)
                handshakes += 1
                await _send_one(reader, writer, rcpt, body)
                sent += 1
                await _quit(writer)
            return
        reader, writer = await _open(host, port, context, server_name)
        handshakes += 1
        while time.monotonic() < deadline:
            await _send_one(reader, writer, rcpt, body)
            sent += 1
        await _quit(writer)

    await asyncio.gather(*(one_connection(n) for n in range(connections)))
    elapsed = time.monotonic() - started
    return BlastResult(
        target=f"{host}:{port}",
        connections=connections,
        new_connection_each=new_connection_each,
        message_size=len(body) - 5,
        seconds=round(elapsed, 3),
        messages=sent,
        messages_per_second=round(sent / elapsed, 1),
        tls_handshakes=handshakes,
        client_cpu_seconds=round(time.process_time() - cpu_before, 2),
    )


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_args = commands.add_parser("serve", help="run the sink (DNS, CA, MX peers)")
    serve_args.add_argument("--domains", type=int, default=20)
    serve_args.add_argument("--peers", type=int, default=2, help="MX peers on one event loop")
    serve_args.add_argument("--no-uvloop", action="store_true", help="the standard asyncio loop")
    blast_args = commands.add_parser("blast", help="measure a sink's ceiling")
    blast_args.add_argument("target", type=_address, metavar="HOST:PORT")
    blast_args.add_argument("--ca-file", required=True)
    blast_args.add_argument("--server-name", required=True, help="name on the certificate")
    blast_args.add_argument("--rcpt-domain", default="d1.bench.test")
    blast_args.add_argument("--connections", type=int, default=4)
    blast_args.add_argument("--seconds", type=float, default=5.0)
    blast_args.add_argument("--size", type=int, default=3500)
    blast_args.add_argument("--new-connection-each", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.domains, args.peers, use_uvloop=not args.no_uvloop)
    _install_uvloop()
    host, port = args.target
    result = asyncio.run(
        blast(
            host,
            port,
            ca_file=args.ca_file,
            server_name=args.server_name,
            connections=args.connections,
            seconds=args.seconds,
            size=args.size,
            new_connection_each=args.new_connection_each,
            rcpt_domain=args.rcpt_domain,
        )
    )
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
