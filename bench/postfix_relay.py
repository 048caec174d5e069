"""The Postfix side of the delivery benchmark: relay N messages to loopback sinks, timed.

Follows ``shared/bench/postfix-relay.md``: a private Postfix instance (kakitome.testing.
postfix.relay_instance) relays mail for ``d<i>.bench.test`` to sinks on 127.0.0.x through
``transport_maps``, with ``smtp_tls_security_level = may``. ``smtp-source`` (shipped with
Postfix) injects the messages, one process per destination domain; the clock runs from the
first injection until the queue is empty. CPU seconds are those of every Postfix process
(master and its children, from /proc), not of smtp-source or the sinks.

What it talks to: Postfix programs and sinks on 127.0.0.0/8 only. The sinks are either
given (``--sink HOST:PORT``, for example the STARTTLS sink the Kakitome side uses) or
started here: Postfix's plaintext ``smtp-sink`` (``--smtp-sinks N``) or private receiving
Postfix instances with STARTTLS and a throw-away test CA that discard what they get
(``--tls-sinks N``; they cost CPU on the same machine, so they are a functional check more
than a fair ceiling). Limits: needs root (Postfix refuses to start otherwise).

Use as a function (``run_postfix_relay``) from the combined benchmark, or as a command:

    python -m bench.postfix_relay --tls-sinks 1 --messages 2000 --reuse
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from kakitome.testing.postfix import (
    PostfixError,
    PostfixInstance,
    find_program,
    make_instance_root,
    receiving_instance,
    relay_instance,
)

RELAY_LISTEN = ("127.0.0.9", 25)
MEMORY_SAMPLE = 0.2  # seconds between samples of Postfix's resident memory
SINK_FIRST_HOST = 20  # sinks started here listen on 127.0.0.20, .21, ...
SENDER = "sender@bench.test"


@dataclass(frozen=True)
class RelayResult:
    """What one relay run measured."""

    messages: int
    message_size: int
    domains: int
    injectors: int
    sessions_per_injector: int
    connection_reuse: bool
    sinks: list[str]
    seconds: float
    messages_per_second: float
    cpu_seconds: float
    cpu_ms_per_message: float
    # New TLS handshakes made by the smtp client (tlsproxy's own record of the same
    # handshake is not counted twice), and deliveries over an already-open TLS connection.
    tls_handshakes: int
    tls_reused: int
    delivered: int
    deferred_or_bounced: int
    # The largest sum of the resident memory of Postfix's processes seen during the run
    # (sampled every MEMORY_SAMPLE seconds: its processes come and go).
    peak_memory_mb: float = 0.0


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def bench_domains(count: int) -> list[str]:
    return [f"d{number}.bench.test" for number in range(1, count + 1)]


def run_postfix_relay(
    sinks: Sequence[tuple[str, int]],
    *,
    messages: int = 20_000,
    message_size: int = 2048,
    domains: int = 20,
    sessions: int = 8,
    connection_reuse: bool = False,
    ca_file: Path | None = None,
    listen: tuple[str, int] = RELAY_LISTEN,
    root: Path | None = None,
    timeout: float = 3600.0,
    keep: bool = False,
) -> RelayResult:
    """Relay ``messages`` through a fresh private Postfix to ``sinks``; measure it.

    Domain ``d<i>.bench.test`` goes to ``sinks[i % len(sinks)]``. ``sessions`` is the total
    number of concurrent injection sessions, shared among the per-domain smtp-source
    processes (at least one each). The instance directory is removed afterwards unless
    ``keep`` (its maillog is then at ``<root>/relay/maillog``).
    """
    if not sinks:
        raise ValueError("at least one sink is needed")
    if domains < 1 or messages < domains:
        raise ValueError("need at least one domain and one message per domain")
    smtp_source = find_program("smtp-source")
    if smtp_source is None:
        raise PostfixError("smtp-source not found (apt-get install postfix)")
    names = bench_domains(domains)
    routes = {name: sinks[index % len(sinks)] for index, name in enumerate(names)}
    own_root = root is None
    base = make_instance_root("kakitome-bench-") if root is None else root
    relay = relay_instance(
        base / "relay",
        listen=listen,
        routes=routes,
        ca_file=ca_file,
        connection_reuse=connection_reuse,
    )
    quotient, remainder = divmod(messages, domains)
    per_domain = [quotient + (1 if i < remainder else 0) for i in range(domains)]
    sessions_each = max(1, sessions // domains)
    relay.start()
    sampling = threading.Event()
    peak = [relay.resident_mb()]

    def sample() -> None:
        while not sampling.wait(MEMORY_SAMPLE):
            peak[0] = max(peak[0], relay.resident_mb())

    sampler = threading.Thread(target=sample, name="postfix-memory", daemon=True)
    sampler.start()
    try:
        cpu_before = relay.cpu_seconds()
        started = time.monotonic()
        injectors = [
            subprocess.Popen(
                [
                    smtp_source,
                    "-s", str(sessions_each),
                    "-l", str(message_size),
                    "-m", str(count),
                    "-f", SENDER,
                    "-t", f"rcpt@{name}",
                    f"{listen[0]}:{listen[1]}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name, count in zip(names, per_domain, strict=True)
        ]
        for injector in injectors:
            _, errors = injector.communicate(timeout=timeout)
            if injector.returncode != 0:
                raise PostfixError(f"smtp-source exited {injector.returncode}: {errors}")
        finished = relay.wait_queue_empty(timeout=timeout, fail_on_deferred=True)
        cpu = relay.cpu_seconds() - cpu_before
    finally:
        sampling.set()
        sampler.join()
        relay.stop()
    seconds = finished - started
    delivered = relay.count_log(r" status=sent ")
    result = RelayResult(
        messages=messages,
        message_size=message_size,
        domains=domains,
        injectors=domains,
        sessions_per_injector=sessions_each,
        connection_reuse=connection_reuse,
        sinks=[f"{host}:{port}" for host, port in sinks],
        seconds=round(seconds, 3),
        messages_per_second=round(messages / seconds, 1),
        cpu_seconds=round(cpu, 2),
        cpu_ms_per_message=round(cpu * 1000 / messages, 3),
        tls_handshakes=sum(
            1 for session in relay.tls_sessions(direction="to") if session.service != "tlsproxy"
        ),
        tls_reused=relay.count_log(r"/smtp\[\d+\]: \w+ TLS connection reused to "),
        delivered=delivered,
        deferred_or_bounced=relay.count_log(r" status=(deferred|bounced) "),
        peak_memory_mb=round(peak[0], 1),
    )
    if own_root and not keep:
        shutil.rmtree(base, ignore_errors=True)
    return result


@contextlib.contextmanager
def smtp_sinks(count: int) -> Iterator[list[tuple[str, int]]]:
    """Start ``count`` Postfix ``smtp-sink`` processes (plaintext) on 127.0.0.20+."""
    program = find_program("smtp-sink")
    if program is None:
        raise PostfixError("smtp-sink not found (apt-get install postfix)")
    addresses = []
    processes = []
    try:
        for number in range(count):
            host = f"127.0.0.{SINK_FIRST_HOST + number}"
            address = (host, free_port(host))
            # -u: smtp-sink refuses to keep root privileges after binding.
            processes.append(
                subprocess.Popen(
                    [program, "-u", "postfix", f"{host}:{address[1]}", "1024"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            addresses.append(address)
        for address in addresses:
            _wait_listening(address)
        yield addresses
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)


@contextlib.contextmanager
def tls_sinks(count: int, domains: int) -> Iterator[tuple[list[tuple[str, int]], Path]]:
    """Start ``count`` receiving Postfix instances with STARTTLS that discard; yield their
    addresses and the CA file that verifies them."""
    import trustme  # a test dependency: only this sink kind needs it

    ca = trustme.CA()
    base = make_instance_root("kakitome-bench-sinks-")
    ca_file = base / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    instances: list[PostfixInstance] = []
    try:
        for number in range(count):
            host = f"127.0.0.{SINK_FIRST_HOST + number}"
            cert = ca.issue_cert(f"sink{number}.bench.test", host)
            cert_file, key_file = base / f"sink{number}.crt", base / f"sink{number}.key"
            cert.cert_chain_pems[0].write_to_path(str(cert_file))
            cert.private_key_pem.write_to_path(str(key_file))
            instance = receiving_instance(
                base / f"sink{number}",
                listen=(host, free_port(host)),
                cert_file=cert_file,
                key_file=key_file,
                domains=bench_domains(domains),
                hostname=f"sink{number}.bench.test",
            )
            instance.start()
            instances.append(instance)
        yield [instance.listen for instance in instances], ca_file
    finally:
        for instance in instances:
            instance.stop()
        shutil.rmtree(base, ignore_errors=True)


def _wait_listening(address: tuple[str, int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(address, timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sink_kind = parser.add_mutually_exclusive_group()
    sink_kind.add_argument("--sink", action="append", type=_address, metavar="HOST:PORT",
                           help="an existing sink on 127.0.0.0/8 (repeatable)")
    sink_kind.add_argument("--smtp-sinks", type=int, metavar="N",
                           help="start N Postfix smtp-sink processes (plaintext)")
    sink_kind.add_argument("--tls-sinks", type=int, metavar="N",
                           help="start N receiving Postfix instances with STARTTLS")
    parser.add_argument("--ca-file", type=Path, help="CA file for verifying --sink certificates")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=2048, help="message size in bytes")
    parser.add_argument("--domains", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=20,
                        help="concurrent injection sessions in all")
    parser.add_argument("--reuse", action="store_true", help="smtp_tls_connection_reuse = yes")
    parser.add_argument("--listen", type=_address, default=RELAY_LISTEN, metavar="HOST:PORT")
    parser.add_argument("--keep", action="store_true", help="keep the instance and its maillog")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    # A plain kill must still stop the Postfix instances (the finally blocks do that).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    run = functools.partial(
        run_postfix_relay,
        messages=args.messages,
        message_size=args.size,
        domains=args.domains,
        sessions=args.sessions,
        connection_reuse=args.reuse,
        listen=args.listen,
        keep=args.keep,
    )
    if args.sink:
        result = run(args.sink, ca_file=args.ca_file)
    elif args.smtp_sinks:
        with smtp_sinks(args.smtp_sinks) as addresses:
            result = run(addresses)
    else:
        with tls_sinks(args.tls_sinks or 1, args.domains) as (addresses, ca_file):
            result = run(addresses, ca_file=ca_file)

    if args.json:
        print(json.dumps(asdict(result)))
    else:
        reuse = "on" if result.connection_reuse else "off"
        print(
            f"Postfix relay: {result.messages} x {result.message_size} B to {result.domains} "
            f"domains via {', '.join(result.sinks)} (TLS connection reuse {reuse})\n"
            f"  {result.seconds:.2f} s, {result.messages_per_second:.1f} messages/s, "
            f"{result.cpu_seconds:.2f} CPU s ({result.cpu_ms_per_message:.2f} ms/message)\n"
            f"  TLS handshakes: {result.tls_handshakes}; deliveries over a reused TLS "
            f"connection: {result.tls_reused}; delivered {result.delivered}, "
            f"deferred or bounced {result.deferred_or_bounced}"
        )
    return 0 if result.delivered >= result.messages else 1


if __name__ == "__main__":
    sys.exit(main())
