"""A private, validating unbound (Debian's ``unbound`` package) for DNSSEC tests.

``Unbound`` writes its own ``unbound.conf`` in a temporary directory and runs
``unbound -d -c <conf>`` in the foreground as a child process, listening on one loopback
address and port (UDP and TCP). It resolves only the zones it is given as stub zones
(``stub-zone`` + ``stub-addr``: the test's authoritative servers on 127.0.0.0/8), validates
them against the trust anchors it is given (``trust-anchor:``, DS or DNSKEY lines) and
nothing else:

- ``do-not-query-localhost: no`` so that it may ask servers on loopback;
- ``local-zone: "<zone>." nodefault`` (and for the zone's top-level label, such as
  ``test.``, which unbound otherwise answers itself, RFC 6761);
- the root ``.`` is a stub zone pointing at the first stub server too, so a name outside
  the test's zones is answered REFUSED/SERVFAIL from loopback and no query ever leaves
  127.0.0.0/8: no root hints, no priming of the real root;
- ``module-config: "validator iterator"``, ``qname-minimisation: no``, no prefetch, no
  aggressive NSEC, ``val-log-level: 2`` so a bogus answer's reason is in the log.

What it trusts: only the configured trust anchors; zones without one are insecure (no AD).
It needs no privileges beyond binding its port (``username: ""``, no chroot), so it runs
as root or as any user. Limits: one thread, small caches, ``start()`` waits at most
``START_TIMEOUT`` seconds for the first answer; ``stop()`` terminates it (SIGTERM, then
SIGKILL after 5 s) and removes the directory. ``log()`` returns what unbound wrote.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

__all__ = ["Unbound", "find_unbound", "rcode_text", "unbound_unavailable_reason"]

START_TIMEOUT = 15.0
# Top-level labels unbound serves itself unless told "nodefault" (RFC 6761 and friends).
_DEFAULT_LOCAL_TLDS = ("test", "invalid", "localhost", "onion", "local", "example")


def find_unbound() -> str | None:
    """Path of the ``unbound`` daemon (PATH, then /usr/sbin and /usr/local/sbin)."""
    found = shutil.which("unbound")
    if found:
        return found
    for directory in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = Path(directory) / "unbound"
        if candidate.is_file():
            return str(candidate)
    return None


def unbound_unavailable_reason() -> str | None:
    """None when unbound can be run here, else why not."""
    if find_unbound() is None:
        return "unbound not found (apt-get install unbound)"
    return None


def _free_port(host: str) -> int:
    """A port free for both UDP and TCP on ``host`` (unbound binds both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
        return port
    raise OSError(f"no port free for UDP and TCP on {host}")


def _quote(text: str) -> str:
    if '"' in text or "\n" in text:
        raise ValueError(f"unsafe value for unbound.conf: {text!r}")
    return f'"{text}"'


def _zone(name: str) -> str:
    return name.lower().rstrip(".") + "."


def _stub_addr(server: str) -> str:
    """``"127.0.0.1:5353"`` -> ``"127.0.0.1@5353"`` (unbound's syntax)."""
    host, _, port = server.rpartition(":")
    if not host:
        return server
    return f"{host.strip('[]')}@{port}"


class Unbound:
    """One private unbound process (see the module docstring)."""

    def __init__(
        self,
        stubs: Mapping[str, Sequence[str]],
        trust_anchors: Iterable[str] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        directory: str | Path | None = None,
        binary: str | None = None,
        extra: Iterable[str] = (),
    ) -> None:
        """``stubs``: zone -> ["127.0.0.1:5353", ...]; ``trust_anchors``: lines such as
        ``"signed.test. DS 12345 13 2 ab..."``; ``extra``: more ``server:`` lines."""
        if not stubs:
            raise ValueError("unbound needs at least one stub zone")
        if not host.startswith("127."):
            raise ValueError(f"{host} is not on 127.0.0.0/8; the test resolver stays local")
        self.stubs = {_zone(z): list(servers) for z, servers in stubs.items()}
        self.trust_anchors = list(trust_anchors)
        self.host = host
        self.port = port
        self.binary = binary or find_unbound()
        self.extra = list(extra)
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="kakitome-unbound-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def nameserver(self) -> str:
        """``host:port``, as ``KAKITOME_DNS__NAMESERVERS`` takes it."""
        return f"{self.host}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.directory / "unbound.conf"

    @property
    def log_file(self) -> Path:
        return self.directory / "unbound.log"

    def config(self) -> str:
        """The text of ``unbound.conf``."""
        lines = [
            "server:",
            "  verbosity: 1",
            "  val-log-level: 2",
            "  use-syslog: no",
            '  logfile: ""',
            '  username: ""',
            '  chroot: ""',
            f"  directory: {_quote(str(self.directory))}",
            f"  pidfile: {_quote(str(self.directory / 'unbound.pid'))}",
            f"  interface: {self.host}@{self.port}",
            "  interface-automatic: no",
            f"  outgoing-interface: {self.host}",
            "  do-ip4: yes",
            "  do-ip6: no",
            "  do-udp: yes",
            "  do-tcp: yes",
            "  num-threads: 1",
            "  so-reuseport: no",
            "  outgoing-range: 64",
            "  num-queries-per-thread: 32",
            "  access-control: 127.0.0.0/8 allow",
            "  do-not-query-localhost: no",
            '  module-config: "validator iterator"',
            "  qname-minimisation: no",
            "  prefetch: no",
            "  prefetch-key: no",
            "  aggressive-nsec: no",
            "  harden-glue: yes",
            "  harden-dnssec-stripped: yes",
            "  harden-below-nxdomain: yes",
            "  harden-referral-path: no",
            "  harden-algo-downgrade: no",
            "  trust-anchor-signaling: no",
            "  root-key-sentinel: no",
            '  target-fetch-policy: "0 0 0 0 0"',
            "  cache-max-ttl: 60",
            "  cache-max-negative-ttl: 5",
            "  val-bogus-ttl: 5",
            "  infra-host-ttl: 5",
            "  minimal-responses: yes",
        ]
        nodefault = {"."}
        for zone in self.stubs:
            if zone == ".":
                continue
            nodefault.add(zone)
            tld = zone.rstrip(".").rsplit(".", 1)[-1] + "."
            if tld.rstrip(".") in _DEFAULT_LOCAL_TLDS:
                nodefault.add(tld)
        for zone in sorted(nodefault - {"."}):
            lines.append(f"  local-zone: {_quote(zone)} nodefault")
        for anchor in self.trust_anchors:
            lines.append(f"  trust-anchor: {_quote(anchor)}")
        lines.extend(f"  {line}" for line in self.extra)
        stubs = dict(self.stubs)
        if "." not in stubs:
            # Nothing may leave loopback: the root is a stub on the first test server.
            stubs["."] = [next(iter(self.stubs.values()))[0]]
        for zone, servers in stubs.items():
            lines.append("stub-zone:")
            lines.append(f"  name: {_quote(zone)}")
            lines.extend(f"  stub-addr: {_stub_addr(s)}" for s in servers)
            lines.append("  stub-prime: no")
        lines.append("remote-control:")
        lines.append("  control-enable: no")
        return "\n".join(lines) + "\n"

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> Unbound:
        if self._process is not None:
            return self
        if self.binary is None:
            raise FileNotFoundError(unbound_unavailable_reason())
        if not self.port:
            self.port = _free_port(self.host)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.config())
        checkconf = Path(self.binary).with_name("unbound-checkconf")
        if checkconf.is_file():
            check = subprocess.run(
                [str(checkconf), str(self.config_file)], capture_output=True, check=False
            )
            if check.returncode != 0:
                raise RuntimeError(
                    "unbound-checkconf refused the configuration: "
                    + (check.stderr or check.stdout).decode(errors="replace")
                )
        with self.log_file.open("wb") as log:
            self._process = subprocess.Popen(
                [self.binary, "-d", "-c", str(self.config_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        zone = next(iter(self.stubs))
        query = dns.message.make_query(zone, dns.rdatatype.SOA, want_dnssec=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"unbound exited ({self._process.returncode}): {self.log()}")
            with contextlib.suppress(dns.exception.DNSException, OSError):
                dns.query.udp(query, self.host, port=self.port, timeout=0.5)
                return
            time.sleep(0.1)
        raise TimeoutError(f"unbound did not answer within {START_TIMEOUT} s: {self.log()}")

    def query(
        self, name: str, rdtype: str, *, dnssec: bool = True, timeout: float = 5.0
    ) -> dns.message.Message:
        """Ask this unbound one question (RD, AD, and DO when ``dnssec``), over UDP."""
        query = dns.message.make_query(name, rdtype, want_dnssec=dnssec)
        query.flags |= dns.flags.AD
        return dns.query.udp(query, self.host, port=self.port, timeout=timeout)

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Unbound:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def rcode_text(message: dns.message.Message) -> str:
    """``"NOERROR"``, ``"SERVFAIL"``, ... of a response."""
    return dns.rcode.to_text(message.rcode())
