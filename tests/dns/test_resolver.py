"""Tests: the resolver against the local internet's DNS server."""

from __future__ import annotations

import asyncio
import random

import pytest

from kakitome.config import DNSSettings
from kakitome.dns.resolver import Resolver, parse_nameserver, to_alabel
from kakitome.errors import PermanentFailure, TemporaryFailure
from kakitome.testing import LocalInternet


def _resolver(world: LocalInternet, seed: int = 0, *, trust_ad: bool = False) -> Resolver:
    settings = DNSSettings(nameservers=(world.nameserver,), timeout=2.0, trust_ad=trust_ad)
    return Resolver(settings, rng=random.Random(seed))


async def test_mx_sorted_by_preference_and_shuffled_among_equals(world: LocalInternet) -> None:
    """RFC 5321 §5.1: lowest preference first; equal preferences in random order."""
    name = world.unique_domain("mx")
    for host, pref, ip in [
        ("c", 30, "127.0.0.3"),
        ("a1", 10, "127.0.0.1"),
        ("a2", 10, "127.0.0.2"),
        ("b", 20, "127.0.0.4"),
    ]:
        world.dns.add_mx(name, pref, f"{host}.{name}")
        world.dns.add_address(f"{host}.{name}", ip)
    try:
        orders = set()
        for seed in range(20):
            result = await _resolver(world, seed).resolve_mx(name)
            assert [h.preference for h in result.hosts] == [10, 10, 20, 30]
            assert result.hosts[3].addresses == ("127.0.0.3",)
            orders.add(tuple(h.name for h in result.hosts[:2]))
        assert orders == {(f"a1.{name}", f"a2.{name}"), (f"a2.{name}", f"a1.{name}")}
    finally:
        world.remove_domain(name)


async def test_null_mx(world: LocalInternet) -> None:
    """T36: a single MX 0 . is a null MX."""
    name = world.unique_domain("null")
    world.add_domain(name, null_mx=True)
    try:
        result = await _resolver(world).resolve_mx(name)
        assert result.null_mx and result.hosts == ()
    finally:
        world.remove_domain(name)


async def test_implicit_mx_and_missing_addresses(world: LocalInternet) -> None:
    """T36: no MX means the domain's own A record; no MX and no A is permanent (5.4.4)."""
    name = world.unique_domain("impl")
    world.dns.add_address(name, "127.0.0.9")
    world.dns.add_txt(f"bare.{name}", "v=spf1 -all")
    try:
        result = await _resolver(world).resolve_mx(name)
        assert [(h.name, h.addresses, h.implicit) for h in result.hosts] == [
            (name, ("127.0.0.9",), True)
        ]
        with pytest.raises(PermanentFailure) as info:
            await _resolver(world).resolve_mx(f"bare.{name}")
        assert info.value.reply.enhanced == "5.4.4"
    finally:
        world.remove_domain(name)


async def test_nxdomain_is_permanent_servfail_temporary(world: LocalInternet) -> None:
    """NXDOMAIN raises PermanentFailure 5.1.2; SERVFAIL and timeouts TemporaryFailure 4.4.3."""
    with pytest.raises(PermanentFailure) as perm:
        await _resolver(world).resolve_mx(world.unique_domain("nx"))
    assert perm.value.reply.enhanced == "5.1.2"
    name = world.unique_domain("sf")
    world.dns.set_rcode(name, "SERVFAIL")
    hang = world.unique_domain("hang")
    world.dns.set_hang(hang)
    try:
        for broken in (name, hang):
            with pytest.raises(TemporaryFailure) as temp:
                await _resolver(world).resolve_mx(broken)
            assert temp.value.reply.enhanced == "4.4.3"
    finally:
        world.dns.set_rcode(name, None)
        world.dns.set_hang(hang, False)


async def test_ad_flag_is_reported_and_trusted_only_when_configured(
    world: LocalInternet,
) -> None:
    """T12: the AD bit is reported; it counts as authenticated only with trust_ad."""
    name = world.unique_domain("ad")
    world.dns.add_address(f"mx.{name}", "127.0.0.5")
    world.dns.set_ad(f"mx.{name}", True)
    try:
        answer = await _resolver(world).resolve_with_ad(f"mx.{name}", "A")
        assert answer.ad and not answer.authenticated
        trusted = await _resolver(world, trust_ad=True).resolve_with_ad(f"mx.{name}", "A")
        assert trusted.ad and trusted.authenticated
        assert [r.address for r in trusted.records] == ["127.0.0.5"]
        world.dns.set_ad(f"mx.{name}", False)
        plain = await _resolver(world, seed=1, trust_ad=True).resolve_with_ad(f"mx.{name}", "A")
        assert not plain.authenticated
    finally:
        world.remove_domain(name)


async def test_idn_domain_is_looked_up_as_a_labels(world: LocalInternet) -> None:
    """IDN destination domains are converted to A-labels before lookup."""
    alabel = to_alabel("bücher-" + world.unique_domain("idn"))
    assert alabel.startswith("xn--")
    world.dns.add_mx(alabel, 10, f"mx.{alabel}")
    world.dns.add_address(f"mx.{alabel}", "127.0.0.6")
    try:
        unicode_name = alabel.encode().decode("idna")
        result = await _resolver(world).resolve_mx(unicode_name)
        assert result.domain == alabel and result.hosts[0].addresses == ("127.0.0.6",)
    finally:
        world.remove_domain(alabel)


def test_nameserver_parsing() -> None:
    """settings.dns.nameservers entries: host, host:port, [v6]:port."""
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("10.0.0.1") == ("10.0.0.1", 53)
    assert parse_nameserver("[::1]:5300") == ("::1", 5300)
    assert parse_nameserver("::1") == ("::1", 53)


async def test_answers_are_reused_within_their_ttl(world: LocalInternet) -> None:
    """The worker asks for the same MX and addresses for every batch: within the TTL the
    answer comes from memory (no query reaches the server); after it, from the server."""
    name = world.unique_domain("ttl")
    world.dns.add_mx(name, 10, f"mx.{name}", ttl=1)
    world.dns.add_address(f"mx.{name}", "127.0.0.5", ttl=1)
    resolver = _resolver(world)

    def asked() -> int:
        return sum(1 for q in world.dns.queries() if q.name.rstrip(".").endswith(name))

    try:
        first = await resolver.resolve_mx(name)
        sent = asked()
        assert sent >= 2  # the MX and the host's addresses
        again = await resolver.resolve_mx(name)
        assert asked() == sent
        assert [(h.name, h.addresses) for h in again.hosts] == [
            (h.name, h.addresses) for h in first.hosts
        ]
        await asyncio.sleep(1.2)
        await resolver.resolve_mx(name)
        assert asked() > sent
    finally:
        world.remove_domain(name)


async def test_truncated_udp_answer_is_asked_again_over_tcp(world: LocalInternet) -> None:
    """T12: an answer that comes back over UDP with TC=1 (here forced for a small MX
    set) is asked for again over TCP, and the TCP answer is the one used."""
    name = world.unique_domain("tc")
    world.dns.add_mx(name, 10, f"mx.{name}")
    world.dns.add_address(f"mx.{name}", "127.0.0.7")
    world.dns.set_truncate(name)
    world.dns.clear_queries()
    try:
        result = await _resolver(world).resolve_mx(name)
        assert [(h.name, h.addresses) for h in result.hosts] == [(f"mx.{name}", ("127.0.0.7",))]
        transports = [q.transport for q in world.dns.queries() if q.name == name]
        assert transports == ["udp", "tcp"]
    finally:
        world.remove_domain(name)


async def test_truncated_answer_without_tcp_is_a_temporary_failure(
    world: LocalInternet,
) -> None:
    """T12: a truncated answer never passes for an empty one: with TCP unanswered the
    MX lookup fails temporarily (4.4.3) instead of falling back to an implicit MX."""
    name = world.unique_domain("tcx")
    world.dns.add_mx(name, 10, f"mx.{name}")
    world.dns.add_address(name, "127.0.0.8")
    world.dns.set_truncate(name)
    world.dns.set_hang(name, transport="tcp")
    settings = DNSSettings(nameservers=(world.nameserver,), timeout=1.0)
    try:
        with pytest.raises(TemporaryFailure) as info:
            await Resolver(settings).resolve_mx(name)
        assert info.value.reply.enhanced == "4.4.3"
    finally:
        world.remove_domain(name)
