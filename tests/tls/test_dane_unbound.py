"""Tests: DANE through a real validating resolver.

The other DANE tests (test_dane.py) use the local internet's DNS server, which merely sets
the AD flag where a test asks. Here nothing is simulated on the DNS side: a zone is signed
for the test (``kakitome.testing.dnssec``: dnspython's ``sign_zone``, NSEC, a KSK and a ZSK
made here), served with its RRSIG/NSEC/DNSKEY/DS records, and Debian's unbound
(``kakitome.testing.unbound``) validates it from a trust anchor (the KSK's DS). Kakitome's
resolver asks only unbound (``dns.nameservers``, ``dns.trust_ad = true``), so the AD bit it
sees is unbound's verdict.

The signed zone ``signed.test`` holds:

- ``good``: MX ``mx.good``, its A record and TLSA ``3 1 1`` of the peer's key;
- ``ta``: MX ``mx.ta`` and TLSA ``2 1 1`` of the test CA's key (DANE-TA);
- ``bogus``: MX ``mx.bogus`` and a TLSA record changed after signing (bogus);
- ``insecure``: a delegation without DS to the unsigned zone ``insecure.signed.test``
  (MX ``mx``, a TLSA record that matches nothing).

Skipped when unbound is missing; failed then under ``KAKITOME_TEST_REQUIRE_PEERS=1``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import dns.flags
import dns.rdatatype
import pytest

from kakitome.delivery.types import Outcome
from kakitome.testing import LocalInternet, Peer
from kakitome.testing.dnssec import SignedZoneServer, TestZone
from kakitome.testing.unbound import Unbound, rcode_text
from kakitome.tls.policy import PolicySource, TLSLevel
from kakitome.tls.receipt import PeerVerification
from tests.delivery.conftest import batch
from tests.tls.conftest import TLSAgentFactory, ca_tlsa

ZONE = "signed.test"


@dataclass
class SignedWorld:
    server: SignedZoneServer
    zone: TestZone
    child: TestZone
    unbound: Unbound
    peers: dict[str, Peer]

    def domain(self, label: str) -> str:
        return f"{label}.{ZONE}"

    def mx(self, label: str) -> str:
        return f"mx.{label}.{ZONE}"

    def settings_env(self) -> dict[str, str]:
        """Overrides for ``tls_agent``: ask unbound, and only unbound; trust its AD bit."""
        return {"DNS__NAMESERVERS": self.unbound.nameserver, "DNS__TRUST_AD": "true"}


@pytest.fixture(scope="module")
def signed(world: LocalInternet, unbound_bin: str) -> Iterator[SignedWorld]:
    peers = {label: world.add_peer() for label in ("good", "ta", "bogus", "insecure")}
    server = SignedZoneServer("127.0.0.1").start()
    zone = TestZone(ZONE)
    zone.add_address("ns", server.host)
    for label in ("good", "ta", "bogus"):
        host = f"mx.{label}"
        peers[label].add_names(f"{host}.{ZONE}")  # before the TLSA: the cert is re-issued
        zone.add_mx(label, 10, host)
        zone.add_address(host, peers[label].ip)
    good_cert, bogus_cert = peers["good"].cert, peers["bogus"].cert
    assert good_cert is not None and bogus_cert is not None
    zone.add_tlsa("_25._tcp.mx.good", 3, 1, 1, good_cert.tlsa(1, 1))
    zone.add_tlsa("_25._tcp.mx.ta", 2, 1, 1, ca_tlsa(world.ca, 1, 1))
    # Signed with the right key; changed to another (also right) value after signing, so
    # only the signature is wrong: a resolver that did not validate would deliver.
    zone.add_tlsa("_25._tcp.mx.bogus", 3, 1, 1, os.urandom(32))
    zone.delegate("insecure", "ns")  # no DS: the signed parent proves the child unsigned
    child = TestZone(f"insecure.{ZONE}", ns=f"ns.{ZONE}")
    child.add_mx("@", 10, "mx")
    child.add_address("mx", peers["insecure"].ip)
    child.add_tlsa("_25._tcp.mx", 3, 1, 1, os.urandom(32))  # would never match
    zone.sign()
    zone.tamper("_25._tcp.mx.bogus", "TLSA", f"3 1 1 {bogus_cert.tlsa(1, 1).hex()}")
    server.add_zone(zone)
    server.add_zone(child)
    unbound = Unbound({ZONE: [server.nameserver]}, [zone.trust_anchor()], binary=unbound_bin)
    try:
        unbound.start()
        yield SignedWorld(server, zone, child, unbound, peers)
    finally:
        unbound.stop()
        server.stop()
        for peer in peers.values():
            world.remove_peer(peer)


def _ad(signed: SignedWorld, name: str, rdtype: str) -> tuple[str, bool, int]:
    """(rcode, AD, number of records) of unbound's answer."""
    reply = signed.unbound.query(name, rdtype)
    records = sum(len(r) for r in reply.answer if r.rdtype == dns.rdatatype.from_text(rdtype))
    return rcode_text(reply), bool(reply.flags & dns.flags.AD), records


def test_unbound_validates_the_signed_zone(signed: SignedWorld) -> None:
    """T12: the AD bit is unbound's verdict: set for the signed MX, address and TLSA,
    absent below the insecure delegation (the signed parent's NSEC at the cut shows NS and
    no DS), SERVFAIL for the tampered TLSA; unbound fetched the zone's DNSKEY (it
    validated; nobody told it the answer)."""
    assert _ad(signed, signed.domain("good"), "MX") == ("NOERROR", True, 1)
    assert _ad(signed, signed.mx("good"), "A") == ("NOERROR", True, 1)
    assert _ad(signed, f"_25._tcp.{signed.mx('good')}", "TLSA") == ("NOERROR", True, 1)
    assert _ad(signed, f"nothing.{ZONE}", "A") == ("NXDOMAIN", True, 0)
    assert _ad(signed, f"_25._tcp.{signed.mx('bogus')}", "TLSA") == ("SERVFAIL", False, 0)
    assert _ad(signed, f"_25._tcp.{signed.mx('insecure')}", "TLSA") == ("NOERROR", False, 1)
    asked = {(q.name, q.qtype) for q in signed.server.queries()}
    assert (ZONE, "DNSKEY") in asked
    assert "validation failure" in signed.unbound.log()


async def test_dane_ee_through_unbound_delivers_verified(
    signed: SignedWorld, tls_agent: TLSAgentFactory
) -> None:
    """T12, T13, T17: the MX and its TLSA 3 1 1 validated by unbound: delivered with DANE,
    the receipt says policy source dane, verified; SNI is the MX name."""
    agent = tls_agent(**signed.settings_env())
    [result] = await agent.deliver(batch(signed.domain("good")))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None
    assert result.tls.level is TLSLevel.DANE
    receipt = result.tls.to_dict()
    assert receipt["policy_source"] == "dane" and result.tls.policy_source is PolicySource.DANE
    assert receipt["verified"] is True
    assert result.tls.verification is PeerVerification.VERIFIED
    assert result.tls.tlsrpt_result == "success"
    [message] = signed.peers["good"].messages()
    assert message.tls and message.sni == signed.mx("good")


async def test_dane_ta_through_unbound_delivers_verified(
    signed: SignedWorld, tls_agent: TLSAgentFactory
) -> None:
    """T17: TLSA 2 1 1 (the CA's key) validated by unbound: the chain through the anchor
    and the name are checked, and the delivery is verified."""
    [result] = await tls_agent(**signed.settings_env()).deliver(batch(signed.domain("ta")))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None and result.tls.policy_source is PolicySource.DANE
    assert result.tls.verification is PeerVerification.VERIFIED


async def test_bogus_tlsa_defers_and_never_sends(
    signed: SignedWorld, tls_agent: TLSAgentFactory
) -> None:
    """T15: a TLSA RRset whose signature does not verify is bogus: unbound answers
    SERVFAIL, the MX is not used, the delivery is deferred (4.7.5) - no TLS without DANE,
    no plaintext, not even a connection."""
    peer = signed.peers["bogus"]
    [result] = await tls_agent(**signed.settings_env()).deliver(batch(signed.domain("bogus")))
    assert result.outcome is Outcome.DEFERRED and result.reply.enhanced == "4.7.5"
    assert "TLSA" in result.reply.text
    assert result.tls is not None and result.tls.tlsrpt_result == "dnssec-invalid"
    assert peer.stats().connections == 0
    assert peer.messages() == []


async def test_insecure_delegation_ignores_tlsa(
    signed: SignedWorld, tls_agent: TLSAgentFactory
) -> None:
    """T16: below a delegation without DS (proven by the signed parent's NSEC) the TLSA
    record is insecure and ignored, even though it would not match: delivered under the
    default policy."""
    [result] = await tls_agent(**signed.settings_env()).deliver(batch(signed.domain("insecure")))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None
    assert result.tls.policy_source is PolicySource.DEFAULT
    assert result.tls.level is not TLSLevel.DANE
    assert len(signed.peers["insecure"].messages()) == 1
