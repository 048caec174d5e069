"""The local internet's authoritative DNS server, queried with dnspython over loopback."""

from __future__ import annotations

import dns.asyncquery
import dns.asyncresolver
import dns.flags
import dns.message
import dns.rcode
import dns.resolver
import pytest

from kakitome.testing import DNSServer, LocalInternet


def resolver(server: DNSServer, *, lifetime: float = 2.0) -> dns.asyncresolver.Resolver:
    r = dns.asyncresolver.Resolver(configure=False)
    r.nameservers = [server.host]
    r.port = server.port
    r.lifetime = lifetime
    r.cache = None
    return r


async def test_mx_and_address(world: LocalInternet) -> None:
    """An MX query returns the published exchanger, whose A record points at the peer."""
    name = world.unique_domain()
    world.add_domain(name, mx=[(10, "mx1." + name), (20, "mx2." + name)])
    world.dns.add_a("mx1." + name, "127.0.0.10")
    r = resolver(world.dns)
    mx = await r.resolve(name, "MX")
    assert sorted((rr.preference, rr.exchange.to_text()) for rr in mx) == [
        (10, f"mx1.{name}."),
        (20, f"mx2.{name}."),
    ]
    a = await r.resolve("mx1." + name, "A")
    assert [rr.address for rr in a] == ["127.0.0.10"]


async def test_null_mx(world: LocalInternet) -> None:
    """A null MX domain answers exactly one MX record, preference 0, exchange "." (RFC 7505)."""
    name = world.unique_domain()
    world.add_domain(name, null_mx=True)
    answer = await resolver(world.dns).resolve(name, "MX")
    assert [(rr.preference, rr.exchange.to_text()) for rr in answer] == [(0, ".")]


async def test_nxdomain_versus_nodata(world: LocalInternet) -> None:
    """Missing name: NXDOMAIN; existing name or empty non-terminal without the type: NODATA."""
    name = world.unique_domain()
    world.dns.add_a("host.sub." + name, "127.0.0.20")
    r = resolver(world.dns)
    with pytest.raises(dns.resolver.NXDOMAIN):
        await r.resolve("missing." + name, "A")
    with pytest.raises(dns.resolver.NoAnswer):
        await r.resolve("host.sub." + name, "MX")
    with pytest.raises(dns.resolver.NoAnswer):
        await r.resolve("sub." + name, "A")
    q = dns.message.make_query("host.sub." + name, "AAAA")
    reply = await dns.asyncquery.udp(q, world.dns.host, port=world.dns.port, timeout=2)
    assert reply.rcode() == dns.rcode.NOERROR and not reply.answer


async def test_remove_makes_name_vanish(world: LocalInternet) -> None:
    """Removing a name's records turns later answers into NXDOMAIN."""
    name = world.unique_domain()
    world.dns.add_a(name, "127.0.0.21")
    r = resolver(world.dns)
    assert len(await r.resolve(name, "A")) == 1
    world.dns.remove(name)
    with pytest.raises(dns.resolver.NXDOMAIN):
        await r.resolve(name, "A")


@pytest.mark.parametrize("rcode", ["SERVFAIL", "REFUSED"])
async def test_forced_rcode(world: LocalInternet, rcode: str) -> None:
    """A forced rcode comes back for that name only, whatever records it has."""
    name = world.unique_domain()
    world.dns.add_a(name, "127.0.0.22")
    world.dns.add_a("other." + name, "127.0.0.23")
    world.dns.set_rcode(name, rcode)
    q = dns.message.make_query(name, "A")
    reply = await dns.asyncquery.udp(q, world.dns.host, port=world.dns.port, timeout=2)
    assert dns.rcode.to_text(reply.rcode()) == rcode
    with pytest.raises(dns.resolver.NoNameservers):
        await resolver(world.dns).resolve(name, "A")
    assert len(await resolver(world.dns).resolve("other." + name, "A")) == 1
    world.dns.set_rcode(name, None)
    assert len(await resolver(world.dns).resolve(name, "A")) == 1


async def test_forced_nxdomain_on_existing_name(world: LocalInternet) -> None:
    """A name forced to NXDOMAIN looks nonexistent even though it has records."""
    name = world.unique_domain()
    world.dns.add_a(name, "127.0.0.24")
    world.dns.set_rcode(name, "NXDOMAIN")
    with pytest.raises(dns.resolver.NXDOMAIN):
        await resolver(world.dns).resolve(name, "A")


async def test_hang_times_out(world: LocalInternet) -> None:
    """A hanging name gets no reply at all, so the client times out."""
    name = world.unique_domain()
    world.dns.add_a(name, "127.0.0.25")
    world.dns.set_hang(name)
    with pytest.raises(dns.resolver.LifetimeTimeout):
        await resolver(world.dns, lifetime=0.5).resolve(name, "A")
    world.dns.set_hang(name, False)
    assert len(await resolver(world.dns).resolve(name, "A")) == 1


async def test_truncation_and_tcp_fallback(world: LocalInternet) -> None:
    """A UDP answer over 512 bytes (no EDNS) is truncated with TC; the resolver retries over TCP."""
    name = world.unique_domain()
    world.dns.add_a(name, *(f"127.0.1.{i}" for i in range(1, 60)))
    q = dns.message.make_query(name, "A", use_edns=False)
    udp = await dns.asyncquery.udp(q, world.dns.host, port=world.dns.port, timeout=2)
    assert udp.flags & dns.flags.TC and not udp.answer
    tcp = await dns.asyncquery.tcp(q, world.dns.host, port=world.dns.port, timeout=2)
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 59
    world.dns.clear_queries()
    r = resolver(world.dns)
    r.use_edns(False)
    assert len(await r.resolve(name, "A")) == 59
    transports = [q.transport for q in world.dns.queries() if q.name == name]
    assert transports == ["udp", "tcp"]


async def test_edns_buffer_size_is_honoured(world: LocalInternet) -> None:
    """With EDNS the UDP limit is the client's buffer size: 1232 fits ~900 bytes, 600 does not."""
    name = world.unique_domain()
    world.dns.add_a(name, *(f"127.0.2.{i}" for i in range(1, 56)))  # about 900 bytes
    big = dns.message.make_query(name, "A", use_edns=0, payload=1232)
    reply = await dns.asyncquery.udp(big, world.dns.host, port=world.dns.port, timeout=2)
    assert not reply.flags & dns.flags.TC and len(reply.answer[0]) == 55
    small = dns.message.make_query(name, "A", use_edns=0, payload=600)
    reply = await dns.asyncquery.udp(small, world.dns.host, port=world.dns.port, timeout=2)
    assert reply.flags & dns.flags.TC


async def test_ad_flag_per_name_and_global() -> None:
    """AD is clear by default, set per name on request, and set globally when the server says so."""
    with DNSServer() as server:
        server.add_a("signed.test", "127.0.0.30")
        server.add_a("plain.test", "127.0.0.31")
        r = resolver(server)
        assert not (await r.resolve("signed.test", "A")).response.flags & dns.flags.AD
        server.set_ad("signed.test", True)
        assert (await r.resolve("signed.test", "A")).response.flags & dns.flags.AD
        assert not (await r.resolve("plain.test", "A")).response.flags & dns.flags.AD
        server.ad = True
        assert (await r.resolve("plain.test", "A")).response.flags & dns.flags.AD
        server.set_ad("plain.test", False)
        assert not (await r.resolve("plain.test", "A")).response.flags & dns.flags.AD


async def test_long_txt_split_into_255_byte_strings(world: LocalInternet) -> None:
    """A 600-byte TXT value arrives as character-strings of 255, 255 and 90 bytes."""
    name = world.unique_domain()
    value = "v=DKIM1; k=rsa; p=" + "A" * 582
    world.dns.add_txt(name, value)
    answer = await resolver(world.dns).resolve(name, "TXT")
    strings = answer[0].strings
    assert [len(s) for s in strings] == [255, 255, 90]
    assert b"".join(strings).decode() == value


async def test_cname_is_followed(world: LocalInternet) -> None:
    """A query for an alias returns the CNAME and the target's records."""
    name = world.unique_domain()
    world.dns.add_cname("alias." + name, "real." + name)
    world.dns.add_a("real." + name, "127.0.0.32")
    answer = await resolver(world.dns).resolve("alias." + name, "A")
    assert answer.canonical_name.to_text() == f"real.{name}."
    assert [rr.address for rr in answer] == ["127.0.0.32"]


async def test_tlsa_and_ptr(world: LocalInternet) -> None:
    """TLSA records carry usage/selector/matching/data; PTR is published under the reverse name."""
    name = world.unique_domain()
    digest = bytes(range(32))
    world.dns.add_tlsa(f"_25._tcp.mx1.{name}", 3, 1, 1, digest)
    world.dns.add_ptr("127.0.0.33", "mx1." + name)
    r = resolver(world.dns)
    tlsa = (await r.resolve(f"_25._tcp.mx1.{name}", "TLSA"))[0]
    assert (tlsa.usage, tlsa.selector, tlsa.mtype, tlsa.cert) == (3, 1, 1, digest)
    ptr = await r.resolve_address("127.0.0.33")
    assert ptr[0].target.to_text() == f"mx1.{name}."


async def test_aaaa_for_ipv6_addresses(world: LocalInternet) -> None:
    """add_address publishes AAAA for an IPv6 address and A for IPv4."""
    name = world.unique_domain()
    world.dns.add_address(name, "::1", "127.0.0.34")
    r = resolver(world.dns)
    assert [rr.address for rr in await r.resolve(name, "AAAA")] == ["::1"]
    assert [rr.address for rr in await r.resolve(name, "A")] == ["127.0.0.34"]
