"""List checks: 10,000 addresses over 1,000 domains, the cache, bad input, the CLI."""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kakitome.checker.bulk import check_list, read_addresses
from kakitome.checker.cache import CheckerCache
from kakitome.checker.service import Checker
from kakitome.cli.main import app
from kakitome.config import Settings
from kakitome.testing import CertKind, LocalInternet, Peer, PeerBehaviour

PROVIDERS = [
    PeerBehaviour(),
    PeerBehaviour(),
    PeerBehaviour(),
    PeerBehaviour(),
    PeerBehaviour(),
    PeerBehaviour(),
    PeerBehaviour(starttls=False),
    PeerBehaviour(starttls=False),
    PeerBehaviour(cert=CertKind.EXPIRED),
    PeerBehaviour(down=True),
]


@pytest.fixture(scope="module")
def big_list(world: LocalInternet) -> Iterator[tuple[str, list[Peer], dict[str, str]]]:
    """1,000 domains (970 hosted by 10 providers, 20 nonexistent, 10 null MX) and
    10,000 addresses: the text, the providers, and each domain's provider kind."""
    peers = [world.add_peer(behaviour=b) for b in PROVIDERS]
    kinds: dict[str, str] = {}
    lines = ["email,name"]
    for i in range(1000):
        domain = world.unique_domain("bulk")
        if i < 970:
            peer = peers[i % len(peers)]
            world.add_domain(domain, mx=[(10, peer.hostname)])
            kinds[domain] = str(i % len(peers))
        elif i < 990:
            kinds[domain] = "nxdomain"
        else:
            world.add_domain(domain, null_mx=True)
            kinds[domain] = "null"
        lines.extend(f"user{j}@{domain},User {j}" for j in range(10))
    yield "\n".join(lines) + "\n", peers, kinds
    for domain in kinds:
        world.remove_domain(domain)
    for peer in peers:
        world.remove_peer(peer)


def _connections(peers: list[Peer]) -> int:
    return sum(p.stats().connections for p in peers)


async def test_ten_thousand_addresses(
    world: LocalInternet,
    checker_settings: Settings,
    big_list: tuple[str, list[Peer], dict[str, str]],
    tmp_path: Path,
) -> None:
    """10,000 addresses over 1,000 domains in under 60 s with bounded memory; providers
    are probed once per host; a second run within the TTL does no network work."""
    text, peers, _ = big_list
    cache_file = tmp_path / "checker-cache.json"
    # Peak RSS growth (tracemalloc would slow the run five-fold); about 10 s measured here.
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    addresses = read_addresses(text)
    cache = CheckerCache.open(cache_file, ttl=3600, max_entries=50_000)
    checker = Checker(checker_settings, cache=cache)
    report = await check_list(addresses, checker)
    cache.save()
    elapsed = time.monotonic() - started
    rss_growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert elapsed < 60, elapsed
    assert rss_growth_kib < 200 * 1024, rss_growth_kib
    data = report.to_dict()
    assert data["recipients"] == 10_000 and data["domains"] == 1_000
    shares = data["transport"]
    # 6 of 10 providers verified, 2 without STARTTLS, 1 expired, 1 down (970 domains),
    # 20 nonexistent and 10 null MX domains are undeliverable.
    assert shares["verified"]["recipients"] == 5820
    assert shares["plaintext"]["recipients"] == 1940
    assert shares["encrypted"]["recipients"] == 970
    assert shares["undeliverable"]["recipients"] == 970 + 200 + 100
    assert report.stats["probes"] == len(PROVIDERS)  # one probe per provider host
    ranked = data["without_starttls"]
    assert len(ranked) == 194 and all(r["recipients"] == 10 for r in ranked)
    assert report.stats["mx_sites"] == len(PROVIDERS)

    before_queries = len(world.dns.queries())
    before_connections = _connections(peers)
    again = Checker(checker_settings, cache=CheckerCache.open(cache_file, ttl=3600,
                                                              max_entries=50_000))
    second = await check_list(read_addresses(text), again)
    assert second.stats["probes"] == 0 and second.stats["domains_resolved"] == 0
    assert len(world.dns.queries()) == before_queries
    assert _connections(peers) == before_connections
    assert second.to_dict()["transport"] == shares


def test_bad_input_lines() -> None:
    """Malformed addresses are reported with their line numbers; the rest is counted."""
    text = "a@example.test\nnot an address\n\n# comment\nb@@x.test\nc@EXAMPLE.test\n"
    result = read_addresses(text)
    assert result.total == 2 and result.domains["example.test"] == 2
    assert [(b.line, b.text) for b in result.bad] == [(2, "not an address"), (5, "b@@x.test")]
    csv_text = "name,Email\nA,a@x.test\nB,broken\nC,\"c@y.test\"\n"
    result = read_addresses(csv_text)
    assert dict(result.domains) == {"x.test": 1, "y.test": 1}
    assert [(b.line, b.text) for b in result.bad] == [(3, "broken")]


def test_cli_addresses_json(
    world: LocalInternet, checker_settings: Settings, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """`kakitome check --addresses FILE --json`: one JSON document with shares, the bad
    line and the nonexistent domain; exit status 0."""
    peer = world.add_peer()
    try:
        domain = world.add_domain(world.unique_domain(), mx=[(10, peer)])
        listing = tmp_path / "list.txt"
        listing.write_text(f"a@{domain.name}\noops\nb@missing-domain.test\n")
        env = {**world.env(), "KAKITOME_CHECKER__PORT": str(world.port),
               "KAKITOME_PATHS__DATA_DIR": str(tmp_path / "var")}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        result = CliRunner().invoke(app, ["check", "--addresses", str(listing), "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["transport"]["verified"]["recipients"] == 1
        assert data["transport"]["undeliverable"]["recipients"] == 1
        assert data["invalid_lines"]["lines"][0]["line"] == 2
        assert (tmp_path / "var" / "checker-cache.json").exists()
        result = CliRunner().invoke(app, ["check", domain.name, "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["grade"] == "B" and report["transport"] == "verified"
        result = CliRunner().invoke(app, ["check", "--json"])
        assert result.exit_code == 2 and "error" in json.loads(result.stdout)
    finally:
        world.remove_peer(peer)
