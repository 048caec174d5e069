"""``LocalInternet``: a whole loopback internet for tests and demos.

One background thread runs one asyncio event loop that serves the authoritative DNS
server (``127.0.0.1:<dns port>``, UDP and TCP) and every MX peer (``127.0.0.10`` and up,
or ``::1``, all on the same SMTP port), so synchronous tests, async tests on any loop, and
subprocesses of the service under test can all use it. A test CA signs the peers'
certificates; ``env()`` gives the ``KAKITOME_*`` variables that point the service at
this world and at nothing else (``ca_file_only``: the system trust store is not used).

Usage::

    with LocalInternet() as world:
        peer = world.add_peer(behaviour=PeerBehaviour(cert=CertKind.EXPIRED))
        world.add_domain("d1.test", mx=[(10, peer)])   # MX mx1.d1.test -> 127.0.0.10
        subprocess.run([...], env={**os.environ, **world.env()})
        assert peer.wait_for_messages(1)[0].rcpt_tos == ("bob@d1.test",)

Every method is thread-safe. It binds only loopback addresses (127.0.0.0/8 and ::1),
refuses any other, sends nothing anywhere (it only answers), and picks its ports by
binding them, skipping addresses something else already uses.
"""

from __future__ import annotations

import ipaddress
import itertools
import secrets
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kakitome.config import Settings, load_settings
from kakitome.testing._loop import LoopThread
from kakitome.testing.ca import TestCA
from kakitome.testing.dns_server import DNSServer
from kakitome.testing.mx import Peer, PeerBehaviour

if TYPE_CHECKING:
    from kakitome.testing.https import HTTPSServer

__all__ = ["Domain", "LocalInternet"]

FIRST_PEER_IP = "127.0.0.10"
# Addresses tried for one peer before giving up (others in use by other worlds).
MAX_IP_PROBES = 200


@dataclass(frozen=True, slots=True)
class Domain:
    """A mail domain as written into the world's DNS."""

    name: str
    # (preference, MX host name) as published; ("", 0) entries never appear.
    mx: tuple[tuple[int, str], ...]
    peers: tuple[Peer, ...]
    null_mx: bool = False
    implicit: bool = False


def _check_loopback(ip: str) -> str:
    address = ipaddress.ip_address(ip)
    if not address.is_loopback:
        raise ValueError(f"{ip} is not a loopback address; the local internet stays local")
    return str(address)


def _can_bind(ip: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ip, port))
        except OSError:
            return False
    return True


class LocalInternet:
    """DNS, a CA and MX peers on loopback, served from one background thread."""

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        smtp_port: int = 0,
        dns_port: int = 0,
        ad: bool = False,
    ) -> None:
        self.ca = TestCA(directory)
        self.dns = DNSServer("127.0.0.1", dns_port, ad=ad)
        self.port = smtp_port
        self._lock = threading.Lock()
        self._peers: dict[str, Peer] = {}
        self._next_ip = int(ipaddress.IPv4Address(FIRST_PEER_IP))
        self._domain_ids = itertools.count(1)
        self._token = secrets.token_hex(3)
        self.loop_thread: LoopThread | None = None

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> LocalInternet:
        if self.loop_thread is not None:
            return self
        if not self.port:
            self.port = self._pick_port()
        self.loop_thread = LoopThread("kakitome-local-internet")
        self.dns.start(self.loop_thread)
        return self

    def _pick_port(self) -> int:
        for _ in range(100):
            with socket.socket() as sock:
                sock.bind((FIRST_PEER_IP, 0))
                port: int = sock.getsockname()[1]
            if all(_can_bind(ip, port) for ip in ("127.0.0.11", "127.0.0.12", "127.0.0.13")):
                return port
        raise OSError("no free SMTP port on 127.0.0.10-13")

    def close(self) -> None:
        """Stop every server and the loop; remove the CA's temporary files."""
        if self.loop_thread is not None:
            for peer in self.peers():
                peer.stop()
            self.dns.stop()
            self.loop_thread.stop()
            self.loop_thread = None
        self.ca.close()

    def __enter__(self) -> LocalInternet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _loop(self) -> LoopThread:
        if self.loop_thread is None:
            raise RuntimeError("LocalInternet is not started")
        return self.loop_thread

    # -- the service's view ---------------------------------------------------------------

    @property
    def nameserver(self) -> str:
        return self.dns.nameserver

    def env(self) -> dict[str, str]:
        """The ``KAKITOME_*`` variables that make the service use this world."""
        self._loop()
        return {
            "KAKITOME_DNS__NAMESERVERS": self.dns.nameserver,
            # The world's DNS is on loopback and sets AD only where a test asks it to.
            "KAKITOME_DNS__TRUST_AD": "true",
            "KAKITOME_DELIVERY__SMTP_PORT": str(self.port),
            "KAKITOME_TLS__CA_FILE": str(self.ca.ca_file),
            "KAKITOME_TLS__CA_FILE_ONLY": "true",
        }

    def settings(self, extra_env: dict[str, str] | None = None) -> Settings:
        """Settings for an in-process service: defaults, this world's env, ``extra_env``."""
        return load_settings(environ={**self.env(), **(extra_env or {})})

    # -- peers ------------------------------------------------------------------------------

    def _allocate_ip(self) -> str:
        with self._lock:
            while True:
                ip = str(ipaddress.IPv4Address(self._next_ip))
                self._next_ip += 1
                if not ip.endswith((".0", ".255")) and ip not in self._peers:
                    return ip

    def add_peer(
        self,
        ip: str | None = None,
        behaviour: PeerBehaviour | None = None,
        *,
        hostname: str | None = None,
    ) -> Peer:
        """Start an MX peer on ``ip`` (default: the next free 127.0.0.x from .10).

        The peer's certificate names ``hostname`` (default ``mx-127-0-0-10.peers.test``),
        which gets an A/AAAA record; ``add_domain`` adds its MX names to the certificate.
        """
        loop = self._loop()
        behaviour = behaviour or PeerBehaviour()
        if ip is not None:
            ip = _check_loopback(ip)
            with self._lock:
                if ip in self._peers:
                    raise ValueError(f"{ip} already has a peer")
        else:
            for _ in range(MAX_IP_PROBES):
                ip = self._allocate_ip()
                if _can_bind(ip, self.port):
                    break
            else:
                raise OSError(f"no free loopback address for port {self.port}")
        assert ip is not None
        peer = Peer(ip, self.port, self.ca, behaviour, hostname)
        with self._lock:
            self._peers[ip] = peer
        try:
            peer.start(loop)
        except BaseException:
            with self._lock:
                del self._peers[ip]
            raise
        self.dns.add_address(peer.hostname, ip)
        return peer

    def remove_peer(self, peer: Peer) -> None:
        """Stop a peer (its address becomes free; DNS records stay until changed)."""
        peer.stop()
        with self._lock:
            self._peers.pop(peer.ip, None)

    def peers(self) -> list[Peer]:
        with self._lock:
            return list(self._peers.values())

    def https_server(self) -> HTTPSServer:
        """The world's HTTPS server (MTA-STS policy hosts, TLS-RPT receivers), started on
        first use on the next free 127.0.0.x; its port goes to
        ``KAKITOME_MTA_STS__HTTPS_PORT``. Stops with the world's loop."""
        from kakitome.testing.https import HTTPSServer

        with self._lock:
            server: HTTPSServer | None = getattr(self, "_https", None)
        if server is None:
            server = HTTPSServer(self._allocate_ip(), 0, self.ca).start(self._loop())
            with self._lock:
                self._https = server
        return server

    # -- domains ----------------------------------------------------------------------------

    def unique_domain(self, prefix: str = "d") -> str:
        """A domain name no other caller of this world gets, such as ``d7-3fa2c1.test``."""
        return f"{prefix}{next(self._domain_ids)}-{self._token}.test"

    def add_domain(
        self,
        name: str,
        *,
        mx: Sequence[tuple[int, Peer | str]] = (),
        a: Sequence[str] = (),
        null_mx: bool = False,
        implicit: Peer | None = None,
        ad: bool | None = None,
    ) -> Domain:
        """Publish a mail domain.

        - ``mx=[(10, peer), (20, "mx.elsewhere.test")]``: MX records; a peer entry gets the
          host name ``mx<i>.<name>`` (i counts from 1), an A/AAAA record to the peer's IP,
          and that name on the peer's certificate; a string is published as it is.
        - ``a``: A/AAAA records for the domain itself.
        - ``null_mx``: ``MX 0 .`` (RFC 7505).
        - ``implicit=peer``: no MX; the domain's own A/AAAA points at the peer (RFC 5321
          §5.1) and the domain name goes on the peer's certificate.
        - ``ad``: set (True) or clear (False) the AD bit on answers for the domain and its
          MX host names; None leaves the server-wide setting.
        """
        name = name.lower().rstrip(".")
        published: list[tuple[int, str]] = []
        peers: list[Peer] = []
        for index, (preference, target) in enumerate(mx, start=1):
            if isinstance(target, Peer):
                host = f"mx{index}.{name}"
                self.dns.add_address(host, target.ip)
                target.add_names(host)
                peers.append(target)
            else:
                host = target.lower().rstrip(".")
            self.dns.add_mx(name, preference, host)
            published.append((preference, host))
        if null_mx:
            self.dns.add_null_mx(name)
        if implicit is not None:
            self.dns.add_address(name, implicit.ip)
            implicit.add_names(name)
            peers.append(implicit)
        if a:
            self.dns.add_address(name, *a)
        if ad is not None:
            self.dns.set_ad(name, ad)
            for _, host in published:
                self.dns.set_ad(host, ad)
        return Domain(
            name=name,
            mx=tuple(published),
            peers=tuple(peers),
            null_mx=null_mx,
            implicit=implicit is not None,
        )

    def remove_domain(self, name: str) -> None:
        """Remove the domain and every name below it (its MX hosts) from DNS."""
        self.dns.remove_tree(name)
