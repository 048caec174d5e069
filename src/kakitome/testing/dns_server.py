"""An authoritative DNS server for the local internet, with a zone tests can change.

``DNSServer`` answers UDP and TCP queries on ``127.0.0.1:<port>`` (or another loopback
address) from an in-memory zone. dnslib encodes and decodes the wire format; the server
itself is a pair of asyncio protocols on a ``LoopThread`` (its own, or the one of the
``LocalInternet`` it belongs to). Every method is thread-safe.

What it does, as a real server on the internet would:

- A, AAAA, MX (including the null MX ``0 .`` of RFC 7505), TXT (text longer than 255
  bytes is split into 255-byte character-strings), CNAME (followed inside the zone, at most
  8 links), TLSA, PTR, and any other type given in zone-file syntax (``add_zone_text``);
- NXDOMAIN when the name does not exist, NODATA (NOERROR, empty answer) when the name
  exists, or has names below it, but not with that type;
- on UDP, an answer larger than 512 bytes (no EDNS) or the client's EDNS buffer size
  comes back empty with the TC bit set, so the client retries over TCP;
- per name: a forced rcode (SERVFAIL, NXDOMAIN, REFUSED, ...) or "hang" (no reply at all,
  so the client times out; on both transports or on one of them); truncation of every UDP
  answer, however small (``set_truncate``); and the AD bit, for all answers or per name, to play a
  validating resolver (it never signs anything: the AD bit is the whole simulation).

It talks only to whoever sends it queries on the bound loopback address, answers only
from its zone (no recursion, no forwarding), and drops TCP messages over 65535 bytes by
construction of the length prefix. A query log (bounded to ``QUERY_LOG_SIZE`` entries)
lets tests see what was asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from dnslib import (
    AAAA,
    CNAME,
    EDNS0,
    MX,
    PTR,
    QTYPE,
    RCODE,
    RR,
    TLSA,
    TXT,
    A,
    DNSHeader,
    DNSRecord,
)

from kakitome.testing._loop import LoopThread

__all__ = ["DNSServer", "Query"]

# RFC 1035 §2.3.4: UDP answers without EDNS are at most 512 bytes.
CLASSIC_UDP_LIMIT = 512
# Longest CNAME chain followed inside the zone before giving up (SERVFAIL).
MAX_CNAME_CHAIN = 8
QUERY_LOG_SIZE = 10_000
_RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5}


def _norm(name: str) -> str:
    return name.lower().rstrip(".")


def _rcode(value: str | int) -> int:
    if isinstance(value, int):
        return value
    return _RCODES[value.upper()]


@dataclass(frozen=True, slots=True)
class Query:
    """One query as received: name (lower case, no trailing dot), type name, transport."""

    name: str
    qtype: str
    transport: str  # "udp" or "tcp"
    edns: bool


class _Record:
    __slots__ = ("rdata", "rtype", "ttl")

    def __init__(self, rtype: int, rdata: Any, ttl: int) -> None:
        self.rtype = rtype
        self.rdata = rdata
        self.ttl = ttl


class DNSServer:
    """An authoritative server for whatever names its zone holds."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, ad: bool = False, ttl: int = 60
    ) -> None:
        self.host = host
        self.port = port
        # Set the AD bit on every answer (a "validating resolver"); per-name overrides win.
        self.ad = ad
        self.ttl = ttl
        self._lock = threading.RLock()
        self._names: dict[str, list[_Record]] = {}
        self._rcodes: dict[str, int] = {}
        self._hang: dict[str, frozenset[str]] = {}  # name -> transports not answered
        self._truncate: set[str] = set()
        self._ad_names: dict[str, bool] = {}
        self._log: deque[Query] = deque(maxlen=QUERY_LOG_SIZE)
        self._loop_thread: LoopThread | None = None
        self._own_loop = False
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    # -- life cycle -------------------------------------------------------------------

    @property
    def nameserver(self) -> str:
        """``host:port``, as ``KAKITOME_DNS__NAMESERVERS`` takes it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def start(self, loop_thread: LoopThread | None = None) -> DNSServer:
        """Bind UDP and TCP on the same port and serve on ``loop_thread`` (or a new one)."""
        if loop_thread is None:
            loop_thread = LoopThread("kakitome-dns")
            self._own_loop = True
        self._loop_thread = loop_thread
        loop_thread.call(self.astart())
        return self

    async def astart(self) -> None:
        """Start serving on the running loop (which must keep running)."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        last_error: OSError | None = None
        for _ in range(50):
            udp_sock = socket.socket(family, socket.SOCK_DGRAM)
            tcp_sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                udp_sock.bind((self.host, self.port))
                port = udp_sock.getsockname()[1]
                tcp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp_sock.bind((self.host, port))
            except OSError as exc:
                udp_sock.close()
                tcp_sock.close()
                last_error = exc
                if self.port:
                    raise
                continue
            self.port = port
            break
        else:
            raise OSError(f"no port free for UDP and TCP on {self.host}") from last_error
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UDPProtocol(self), sock=udp_sock
        )
        self._udp = transport
        tcp_sock.listen(128)
        tcp_sock.setblocking(False)
        self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp_sock)

    async def astop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None

    async def _serve_tcp(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = self.answer(await reader.readexactly(length), "tcp")
                if reply is not None:
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        if self._loop_thread is None:
            return
        with contextlib.suppress(RuntimeError):
            self._loop_thread.call(self.astop())
        if self._own_loop:
            self._loop_thread.stop()
        self._loop_thread = None

    def __enter__(self) -> DNSServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the zone -----------------------------------------------------------------------

    def add_record(self, name: str, rtype: str | int, rdata: Any, ttl: int | None = None) -> None:
        """Add one record (a dnslib RD object) at ``name``."""
        code = rtype if isinstance(rtype, int) else getattr(QTYPE, rtype.upper())
        with self._lock:
            self._names.setdefault(_norm(name), []).append(
                _Record(code, rdata, self.ttl if ttl is None else ttl)
            )

    def add_a(self, name: str, *addresses: str, ttl: int | None = None) -> None:
        for address in addresses:
            self.add_record(name, "A", A(address), ttl)

    def add_aaaa(self, name: str, *addresses: str, ttl: int | None = None) -> None:
        for address in addresses:
            self.add_record(name, "AAAA", AAAA(address), ttl)

    def add_address(self, name: str, *addresses: str, ttl: int | None = None) -> None:
        """A or AAAA records, by the form of each address."""
        for address in addresses:
            if ipaddress.ip_address(address).version == 6:
                self.add_aaaa(name, address, ttl=ttl)
            else:
                self.add_a(name, address, ttl=ttl)

    def add_mx(self, name: str, preference: int, host: str, ttl: int | None = None) -> None:
        self.add_record(name, "MX", MX(_norm(host) + ".", preference), ttl)

    def add_null_mx(self, name: str, ttl: int | None = None) -> None:
        """RFC 7505: ``MX 0 .`` - the domain accepts no mail."""
        self.add_record(name, "MX", MX(".", 0), ttl)

    def add_txt(self, name: str, text: str | bytes, ttl: int | None = None) -> None:
        """One TXT record; text over 255 bytes becomes several character-strings."""
        data = text.encode() if isinstance(text, str) else text
        chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
        self.add_record(name, "TXT", TXT(chunks), ttl)

    def add_cname(self, name: str, target: str, ttl: int | None = None) -> None:
        self.add_record(name, "CNAME", CNAME(_norm(target) + "."), ttl)

    def add_tlsa(
        self,
        name: str,
        usage: int,
        selector: int,
        matching: int,
        data: bytes,
        ttl: int | None = None,
    ) -> None:
        """A TLSA record at ``name`` (for example ``_25._tcp.mx1.d1.test``)."""
        self.add_record(name, "TLSA", TLSA(usage, selector, matching, data), ttl)

    def add_ptr(self, address: str, target: str, ttl: int | None = None) -> None:
        """A PTR record for an IP address (the reverse name is computed)."""
        reverse = ipaddress.ip_address(address).reverse_pointer
        self.add_record(reverse, "PTR", PTR(_norm(target) + "."), ttl)

    def add_zone_text(self, text: str) -> None:
        """Records in zone-file syntax (absolute names), for types without a helper."""
        for rr in RR.fromZone(text):
            self.add_record(str(rr.rname), rr.rtype, rr.rdata, rr.ttl)

    def remove(self, name: str, rtype: str | None = None) -> None:
        """Remove the records of one type at ``name``, or all of them."""
        key = _norm(name)
        with self._lock:
            if rtype is None:
                self._names.pop(key, None)
                return
            code = getattr(QTYPE, rtype.upper())
            kept = [r for r in self._names.get(key, []) if r.rtype != code]
            if kept:
                self._names[key] = kept
            else:
                self._names.pop(key, None)

    def remove_tree(self, name: str) -> None:
        """Remove ``name`` and every name below it, with their rcode/hang/AD settings."""
        key = _norm(name)
        suffix = "." + key
        with self._lock:
            for table in (self._names, self._rcodes, self._ad_names, self._hang):
                for existing in [n for n in table if n == key or n.endswith(suffix)]:
                    del table[existing]
            self._truncate = {n for n in self._truncate if not (n == key or n.endswith(suffix))}

    def set_rcode(self, name: str, rcode: str | int | None) -> None:
        """Answer every query for ``name`` with this rcode (None: answer normally)."""
        with self._lock:
            if rcode is None:
                self._rcodes.pop(_norm(name), None)
            else:
                self._rcodes[_norm(name)] = _rcode(rcode)

    def set_hang(self, name: str, hang: bool = True, *, transport: str | None = None) -> None:
        """Never answer queries for ``name`` (the client times out): over both transports,
        or only over ``transport`` ("udp" or "tcp")."""
        if transport not in (None, "udp", "tcp"):
            raise ValueError(f"transport must be udp or tcp, not {transport!r}")
        with self._lock:
            if hang:
                self._hang[_norm(name)] = frozenset((transport,) if transport else ("udp", "tcp"))
            else:
                self._hang.pop(_norm(name), None)

    def set_truncate(self, name: str, truncate: bool = True) -> None:
        """Answer UDP queries for ``name`` with an empty, truncated (TC) reply whatever the
        answer's size, so the client must ask again over TCP."""
        with self._lock:
            if truncate:
                self._truncate.add(_norm(name))
            else:
                self._truncate.discard(_norm(name))

    def set_ad(self, name: str, ad: bool | None) -> None:
        """Set (True) or clear (False) the AD bit on answers for ``name``; None: global."""
        with self._lock:
            if ad is None:
                self._ad_names.pop(_norm(name), None)
            else:
                self._ad_names[_norm(name)] = ad

    def queries(self) -> list[Query]:
        """The queries received so far (oldest first)."""
        with self._lock:
            return list(self._log)

    def clear_queries(self) -> None:
        with self._lock:
            self._log.clear()

    # -- answering ----------------------------------------------------------------------

    def _exists(self, name: str) -> bool:
        if name in self._names:
            return True
        suffix = "." + name
        return any(n.endswith(suffix) for n in self._names)

    def answer(self, packet: bytes, transport: str) -> bytes | None:
        """The reply to one query packet, or None when there must be none."""
        try:
            request = DNSRecord.parse(packet)
        except Exception:
            if len(packet) < 12:
                return None
            header = DNSHeader(id=struct.unpack("!H", packet[:2])[0], qr=1, rcode=RCODE.FORMERR)
            return DNSRecord(header).pack()  # type: ignore[no-any-return]
        opt = next((rr for rr in request.ar if rr.rtype == QTYPE.OPT), None)
        reply = request.reply()
        reply.header.ra = 0
        if opt is not None:
            reply.add_ar(EDNS0(udp_len=1232))
        if request.header.opcode != 0 or len(request.questions) != 1:
            reply.header.rcode = RCODE.NOTIMP if request.header.opcode else RCODE.FORMERR
            return reply.pack()  # type: ignore[no-any-return]
        qname = _norm(str(request.q.qname))
        qtype = request.q.qtype
        with self._lock:
            self._log.append(Query(qname, QTYPE.get(qtype, str(qtype)), transport, opt is not None))
            if not self._fill(reply, qname, qtype, transport):
                return None
            truncate = qname in self._truncate
        data: bytes = reply.pack()
        if transport == "udp":
            limit = CLASSIC_UDP_LIMIT if opt is None else max(CLASSIC_UDP_LIMIT, opt.rclass)
            if len(data) > limit or truncate:
                short = request.reply()
                short.header.ra = 0
                short.header.tc = 1
                short.header.ad = reply.header.ad
                if opt is not None:
                    short.add_ar(EDNS0(udp_len=1232))
                data = short.pack()
        return data

    def _fill(self, reply: DNSRecord, qname: str, qtype: int, transport: str) -> bool:
        """Fill ``reply`` from the zone (lock held); False means "do not answer"."""
        name = qname
        chain: list[str] = []
        for _ in range(MAX_CNAME_CHAIN + 1):
            chain.append(name)
            if transport in self._hang.get(name, ()):
                return False
            if name in self._rcodes:
                reply.header.rcode = self._rcodes[name]
                return True
            records = self._names.get(name)
            if records is None:
                if not self._exists(name):
                    reply.header.rcode = RCODE.NXDOMAIN
                break
            matching = [r for r in records if r.rtype == qtype or qtype == QTYPE.ANY]
            cnames = [r for r in records if r.rtype == QTYPE.CNAME]
            if matching or not cnames or qtype == QTYPE.CNAME:
                for r in matching:
                    reply.add_answer(RR(name + ".", r.rtype, rdata=r.rdata, ttl=r.ttl))
                break
            reply.add_answer(RR(name + ".", QTYPE.CNAME, rdata=cnames[0].rdata, ttl=cnames[0].ttl))
            name = _norm(str(cnames[0].rdata.label))
        else:
            reply.header.rcode = RCODE.SERVFAIL
        ad = all(self._ad_names.get(n, self.ad) for n in chain)
        reply.header.ad = 1 if ad and reply.header.rcode in (0, 3) else 0
        return True


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        reply = self.server.answer(data, "udp")
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)
