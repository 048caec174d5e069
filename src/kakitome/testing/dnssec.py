"""DNSSEC-signed zones and an authoritative server for them, for tests that need a real
validating resolver (``kakitome.testing.unbound``) rather than a server that merely sets
the AD flag (``kakitome.testing.dns_server``).

``TestZone`` is a zone built in memory (dnspython's ``dns.zone.Zone``, absolute names): SOA
and NS at the apex, records added by helpers, delegations to child zones (with or without
DS). ``sign()`` signs it with ``dns.dnssec.sign_zone`` (NSEC, ECDSA P-256 / SHA-256,
algorithm 13) with a KSK (SEP flag, signs the DNSKEY RRset) and a ZSK (everything else),
both made by ``ZoneKeys.generate()``; ``trust_anchor()`` gives the KSK's DS record for the
resolver's configuration. ``tamper()`` changes an RRset *after* signing, keeping the old
RRSIG, so a validating resolver sees bogus data (T15).

``SignedZoneServer`` answers UDP and TCP queries for one or more such zones (parent and
child on the same server, as a hidden primary might), using the socket handling of
``DNSServer`` (its record helpers are not used: answers come from the zones alone):

- positive answers with the RRset's RRSIGs when the query has the DO bit;
- NODATA with the SOA and the NSEC at the name; an empty non-terminal with the NSEC
  that covers it; NXDOMAIN with the SOA, the NSEC covering the name and the NSEC
  covering the wildcard at the closest encloser (RFC 4035 §3.1.3) - each with its RRSIGs;
- a query for DS at a zone cut is answered from the parent zone (DS, or NODATA with the
  delegation's NSEC proving that there is no DS: an insecure delegation);
- below a delegation to a zone it does not serve: a referral (NS, DS or NSEC, glue);
- CNAMEs are returned, not followed (the resolver follows them);
- names outside every zone: REFUSED. Truncation (TC) on UDP beyond the client's EDNS
  buffer size (512 without EDNS), so the resolver retries over TCP.

Talks to: whoever queries the bound loopback address (it never sends a query itself).
Trusts: nothing it receives beyond the question. Limits: no NSEC3, no wildcards, no
zone transfers, no dynamic update; one question per message; signatures are valid from
one hour before signing for ``lifetime`` seconds (default a week).
"""

from __future__ import annotations

import bisect
import datetime as dt
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import dns.dnssec
import dns.dnssectypes
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rrset
import dns.zone
from cryptography.hazmat.primitives.asymmetric import ec

from kakitome.testing._loop import LoopThread
from kakitome.testing.dns_server import CLASSIC_UDP_LIMIT, DNSServer, Query

__all__ = ["SignedZoneServer", "TestZone", "ZoneKeys"]

ALGORITHM = dns.dnssectypes.Algorithm.ECDSAP256SHA256
DEFAULT_LIFETIME = 7 * 86400
# Signatures start before "now" so that a resolver with a slightly different clock (or
# unbound's minimum skew) does not find them not yet valid.
INCEPTION_SLACK = 3600
IN = dns.rdataclass.IN
_RRSIG = dns.rdatatype.RRSIG
_NSEC = dns.rdatatype.NSEC


def _name(text: str | dns.name.Name, origin: dns.name.Name | None = None) -> dns.name.Name:
    if isinstance(text, dns.name.Name):
        return text
    return dns.name.from_text(text, origin)


@dataclass(frozen=True, slots=True)
class ZoneKey:
    private: ec.EllipticCurvePrivateKey
    dnskey: dns.rdtypes.ANY.DNSKEY.DNSKEY


@dataclass(frozen=True, slots=True)
class ZoneKeys:
    """A key-signing key (SEP flag) and a zone-signing key for one zone."""

    ksk: ZoneKey
    zsk: ZoneKey

    @classmethod
    def generate(cls) -> ZoneKeys:
        keys = []
        for flags in (257, 256):  # ZONE|SEP, ZONE
            private = ec.generate_private_key(ec.SECP256R1())
            dnskey = dns.dnssec.make_dnskey(private.public_key(), ALGORITHM, flags=flags)
            keys.append(ZoneKey(private, dnskey))
        return cls(keys[0], keys[1])

    def ds(self, origin: str | dns.name.Name) -> dns.rdata.Rdata:
        """The DS record (SHA-256) of the KSK, for the parent or a trust anchor."""
        return dns.dnssec.make_ds(_name(origin), self.ksk.dnskey, "SHA256")


class TestZone:
    """One zone in memory; every method is thread-safe (the server reads concurrently)."""

    __test__ = False  # not a pytest test class

    def __init__(self, origin: str, *, ttl: int = 60, ns: str | None = None) -> None:
        self.origin = _name(origin.rstrip(".") + ".")
        self.ttl = ttl
        self.keys: ZoneKeys | None = None
        self.lock = threading.RLock()
        self.zone = dns.zone.Zone(self.origin, relativize=False)
        ns_name = _name(ns) if ns else dns.name.Name(("ns",)).concatenate(self.origin)
        self.add(
            self.origin,
            "SOA",
            f"{ns_name} hostmaster.{self.origin} 1 3600 600 86400 {ttl}",
        )
        self.add(self.origin, "NS", str(ns_name))

    # -- records ------------------------------------------------------------------------

    def name(self, relative: str) -> dns.name.Name:
        """``"mx.good"`` -> ``mx.good.<origin>``; ``"@"`` is the apex; absolute names stay."""
        if relative in ("@", ""):
            return self.origin
        return _name(relative, self.origin)

    def add(
        self, name: str | dns.name.Name, rdtype: str, *rdatas: str, ttl: int | None = None
    ) -> None:
        """Add records in zone-file syntax (names relative to the origin unless absolute)."""
        owner = self.name(name) if isinstance(name, str) else name
        code = dns.rdatatype.from_text(rdtype)
        with self.lock:
            rdataset = self.zone.find_rdataset(owner, code, create=True)
            for text in rdatas:
                rdataset.add(self._rdata(code, text), ttl or self.ttl)

    def _rdata(self, rdtype: dns.rdatatype.RdataType, text: str) -> dns.rdata.Rdata:
        return dns.rdata.from_text(IN, rdtype, text, self.origin, relativize=False)

    def add_address(self, name: str, *addresses: str) -> None:
        for address in addresses:
            self.add(name, "AAAA" if ":" in address else "A", address)

    def add_mx(self, name: str, preference: int, host: str) -> None:
        self.add(name, "MX", f"{preference} {self.name(host)}")

    def add_tlsa(self, name: str, usage: int, selector: int, matching: int, data: bytes) -> None:
        self.add(name, "TLSA", f"{usage} {selector} {matching} {data.hex() or '-'}")

    def delegate(
        self, child: str, ns: str, *, ds: Iterable[dns.rdata.Rdata] = (), glue: Iterable[str] = ()
    ) -> dns.name.Name:
        """A zone cut at ``child``: NS ``ns``, the given DS records (none: an insecure
        delegation, which the signed parent proves with its NSEC), glue addresses for
        ``ns`` when it lies below the cut."""
        cut = self.name(child)
        self.add(cut, "NS", str(self.name(ns)))
        for record in ds:
            self.add(cut, "DS", record.to_text())
        for address in glue:
            self.add_address(str(self.name(ns)), address)
        return cut

    # -- signing ------------------------------------------------------------------------

    def sign(self, keys: ZoneKeys | None = None, *, lifetime: int = DEFAULT_LIFETIME) -> ZoneKeys:
        """Sign the zone (NSEC chain, RRSIGs, DNSKEY RRset); returns the keys used."""
        keys = keys or self.keys or ZoneKeys.generate()
        now = int(dt.datetime.now(dt.UTC).timestamp())
        with self.lock:
            for node in self.zone.nodes.values():
                for rdtype in (_RRSIG, _NSEC, dns.rdatatype.DNSKEY):
                    node.delete_rdataset(IN, rdtype)
            dns.dnssec.sign_zone(
                self.zone,
                keys=[(keys.ksk.private, keys.ksk.dnskey), (keys.zsk.private, keys.zsk.dnskey)],
                inception=now - INCEPTION_SLACK,
                lifetime=lifetime + INCEPTION_SLACK,
            )
            self.keys = keys
        return keys

    def trust_anchor(self) -> str:
        """The KSK's DS record as a line of zone-file text (for ``trust-anchor:``)."""
        if self.keys is None:
            raise RuntimeError(f"zone {self.origin} is not signed")
        return f"{self.origin} DS {self.keys.ds(self.origin).to_text()}"

    def tamper(self, name: str, rdtype: str, *rdatas: str) -> None:
        """Replace an RRset's data after signing and keep its old RRSIGs: bogus data."""
        owner = self.name(name)
        code = dns.rdatatype.from_text(rdtype)
        with self.lock:
            old = self.zone.get_rdataset(owner, code)
            if old is None:
                raise KeyError(f"no {rdtype} at {owner}")
            fresh = dns.rdataset.Rdataset(IN, code)
            for text in rdatas:
                fresh.add(self._rdata(code, text), old.ttl)
            self.zone.replace_rdataset(owner, fresh)

    # -- answering ----------------------------------------------------------------------

    def _cut(self, qname: dns.name.Name) -> dns.name.Name | None:
        """The highest zone cut strictly below the apex at or above ``qname``."""
        for labels in range(len(self.origin) + 1, len(qname) + 1):
            name = qname.split(labels)[1]
            if self.zone.get_rdataset(name, dns.rdatatype.NS) is not None:
                return name
        return None

    def _rrset(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> dns.rrset.RRset | None:
        rdataset = self.zone.get_rdataset(name, rdtype)
        if rdataset is None:
            return None
        return dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset))

    def _sigs(
        self, name: dns.name.Name, covered: dns.rdatatype.RdataType
    ) -> dns.rrset.RRset | None:
        rdataset = self.zone.get_rdataset(name, _RRSIG, covered)
        if rdataset is None:
            return None
        return dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset))

    def _with_sigs(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType, dnssec: bool
    ) -> list[dns.rrset.RRset]:
        out = []
        rrset = self._rrset(name, rdtype)
        if rrset is not None:
            out.append(rrset)
            sigs = self._sigs(name, rdtype) if dnssec else None
            if sigs is not None:
                out.append(sigs)
        return out

    def _nsec_names(self) -> list[dns.name.Name]:
        return sorted(n for n, node in self.zone.nodes.items() if node.get_rdataset(IN, _NSEC))

    def _covering(self, target: dns.name.Name) -> dns.name.Name | None:
        """The NSEC owner at or before ``target`` in canonical order (covers it)."""
        names = self._nsec_names()
        index = bisect.bisect_right(names, target) - 1
        return names[index] if index >= 0 else None

    def _has_descendant(self, name: dns.name.Name) -> bool:
        return any(n != name and n.is_subdomain(name) for n in self.zone.nodes)

    def _closest_encloser(self, qname: dns.name.Name) -> dns.name.Name:
        name = qname
        while name != self.origin:
            name = name.parent()
            if name in self.zone.nodes or self._has_descendant(name):
                return name
        return self.origin

    def respond(
        self, response: dns.message.Message, qname: dns.name.Name, qtype: dns.rdatatype.RdataType
    ) -> None:
        """Fill ``response`` (rcode, flags, sections) for a question in this zone."""
        dnssec = response.ednsflags & dns.flags.DO != 0
        with self.lock:
            cut = self._cut(qname)
            if cut is not None and not (cut == qname and qtype == dns.rdatatype.DS):
                self._referral(response, cut, dnssec)
                return
            response.flags |= dns.flags.AA
            node = self.zone.get_node(qname)
            if node is not None and len(node.rdatasets) > 0:
                if qtype == dns.rdatatype.ANY:
                    types = [r.rdtype for r in node.rdatasets if r.rdtype != _RRSIG]
                elif node.get_rdataset(IN, qtype) is not None:
                    types = [qtype]
                elif node.get_rdataset(IN, dns.rdatatype.CNAME) is not None:
                    types = [dns.rdatatype.CNAME]
                else:
                    types = []
                for rdtype in types:
                    response.answer.extend(self._with_sigs(qname, rdtype, dnssec))
                if types:
                    return
                self._negative(response, [qname] if dnssec else [], dnssec)
                return
            if self._has_descendant(qname):  # an empty non-terminal: NODATA
                proof = [p] if dnssec and (p := self._covering(qname)) is not None else []
                self._negative(response, proof, dnssec)
                return
            response.set_rcode(dns.rcode.NXDOMAIN)
            proof = []
            if dnssec:
                wildcard = dns.name.Name(("*",)).concatenate(self._closest_encloser(qname))
                for target in (qname, wildcard):
                    found = self._covering(target)
                    if found is not None and found not in proof:
                        proof.append(found)
            self._negative(response, proof, dnssec)

    def _negative(
        self, response: dns.message.Message, nsec_owners: list[dns.name.Name], dnssec: bool
    ) -> None:
        response.authority.extend(self._with_sigs(self.origin, dns.rdatatype.SOA, dnssec))
        for owner in nsec_owners:
            response.authority.extend(self._with_sigs(owner, _NSEC, dnssec))

    def _referral(self, response: dns.message.Message, cut: dns.name.Name, dnssec: bool) -> None:
        ns = self._rrset(cut, dns.rdatatype.NS)
        assert ns is not None
        response.authority.append(ns)
        if self.zone.get_rdataset(cut, dns.rdatatype.DS) is not None:
            response.authority.extend(self._with_sigs(cut, dns.rdatatype.DS, dnssec))
        elif dnssec:
            response.authority.extend(self._with_sigs(cut, _NSEC, dnssec))
        for record in ns:
            target = record.target
            if target.is_subdomain(cut):
                for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                    glue = self._rrset(target, rdtype)
                    if glue is not None:
                        response.additional.append(glue)


class SignedZoneServer(DNSServer):
    """An authoritative server for ``TestZone`` objects, DNSSEC-aware (see the module)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self._zones: dict[dns.name.Name, TestZone] = {}

    def start(self, loop_thread: LoopThread | None = None) -> SignedZoneServer:
        """Bind UDP and TCP and serve on ``loop_thread`` (or a new one)."""
        super().start(loop_thread)
        return self

    def add_zone(self, zone: TestZone) -> TestZone:
        with self._lock:
            self._zones[zone.origin] = zone
        return zone

    def _zone_for(self, qname: dns.name.Name, qtype: dns.rdatatype.RdataType) -> TestZone | None:
        with self._lock:
            candidates = sorted(
                (z for z in self._zones.values() if qname.is_subdomain(z.origin)),
                key=lambda z: len(z.origin),
                reverse=True,
            )
        if not candidates:
            return None
        # DS lives on the parent side of a cut (RFC 4035 §3.1.4.1).
        if qtype == dns.rdatatype.DS and candidates[0].origin == qname and len(candidates) > 1:
            return candidates[1]
        return candidates[0]

    def answer(self, packet: bytes, transport: str) -> bytes | None:
        try:
            query = dns.message.from_wire(packet)
        except dns.exception.DNSException:
            if len(packet) < 12:
                return None
            header = struct.pack("!HHHHHH", struct.unpack("!H", packet[:2])[0], 0x8001, 0, 0, 0, 0)
            return header
        response = dns.message.make_response(query, our_payload=1232)
        if query.ednsflags & dns.flags.DO:
            response.want_dnssec(True)
        if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
            response.set_rcode(dns.rcode.NOTIMP if query.opcode() else dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        with self._lock:
            self._log.append(
                Query(
                    qname.to_text(omit_final_dot=True).lower(),
                    dns.rdatatype.to_text(qtype),
                    transport,
                    query.edns >= 0,
                )
            )
        zone = self._zone_for(qname, qtype)
        if zone is None:
            response.set_rcode(dns.rcode.REFUSED)
        else:
            try:
                zone.respond(response, qname, qtype)
            except Exception:  # a bug here must look like a broken server, not kill it
                response = dns.message.make_response(query, our_payload=1232)
                response.set_rcode(dns.rcode.SERVFAIL)
        limit = 65535
        if transport == "udp":
            limit = CLASSIC_UDP_LIMIT if query.edns < 0 else max(CLASSIC_UDP_LIMIT, query.payload)
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            short = dns.message.make_response(query, our_payload=1232)
            short.flags |= dns.flags.TC
            return short.to_wire()
