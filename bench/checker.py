"""Benchmark: ``kakitome check --addresses`` on 10,000 addresses over 1,000 domains.

Usage: python -m bench.checker [--domains N] [--per-domain N] [--providers N] [--json]
                               [--tracemalloc]

Builds a local internet in this process (``kakitome.testing.LocalInternet``: DNS, test CA
and MX peers on 127.0.0.0/8, served from one background thread) with ``--providers`` (10)
MX hosts - most verify, two without STARTTLS, one expired certificate, one down, one
behind DANE-EE (3 1 1) and one behind DANE-TA (2 1 1) with DNSSEC simulated by the AD flag
- and ``--domains`` (1,000) domains: 97 % hosted by the providers, 2 % nonexistent, 1 %
null MX, ``--per-domain`` (10) addresses each. Then it checks the list with the checker's
library (``checker.bulk.check_list``, light depth, the settings' concurrency) twice:

1. **cold**: empty cache (a new file in a temporary folder);
2. **warm**: a new ``Checker`` on the cache file saved by the cold run, within its TTL.

For each run it prints wall time, the process's CPU seconds, the growth of the peak
resident set size (``ru_maxrss``, the world already built), the checker's counters
(probes, domains resolved, cache hits) and the DNS queries and SMTP connections the world
saw. ``--tracemalloc`` adds the peak of Python allocations (slower run). The world shares
this process's GIL with the checker, so times are an upper bound of the checker's own.

Talks to nothing outside 127.0.0.0/8. The targets (issue 5): under 60 s on 2 cores,
memory bounded, and the warm run does no network work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from kakitome.checker.bulk import check_list, read_addresses
from kakitome.checker.cache import CheckerCache
from kakitome.checker.service import Checker
from kakitome.config import Settings
from kakitome.testing import CertKind, LocalInternet, Peer, PeerBehaviour

PROVIDERS: list[tuple[str, PeerBehaviour]] = [
    ("verified", PeerBehaviour()),
    ("verified", PeerBehaviour()),
    ("verified", PeerBehaviour()),
    ("verified", PeerBehaviour()),
    ("dane-ee", PeerBehaviour()),
    ("dane-ta", PeerBehaviour()),
    ("no-starttls", PeerBehaviour(starttls=False)),
    ("no-starttls", PeerBehaviour(starttls=False)),
    ("expired", PeerBehaviour(cert=CertKind.EXPIRED)),
    ("down", PeerBehaviour(down=True)),
]


def build_world(
    world: LocalInternet, domains: int, per_domain: int, providers: int
) -> tuple[str, list[Peer]]:
    """Publish the providers and domains; return the address list text and the peers."""
    kinds = [PROVIDERS[i % len(PROVIDERS)] for i in range(providers)]
    peers = [world.add_peer(behaviour=b) for _, b in kinds]
    for (kind, _), peer in zip(kinds, peers, strict=True):
        if kind.startswith("dane") and peer.cert is not None:
            tlsa = f"_25._tcp.{peer.hostname}"
            if kind == "dane-ee":
                world.dns.add_tlsa(tlsa, 3, 1, 1, peer.cert.tlsa(1, 1))
            else:
                world.dns.add_tlsa(tlsa, 2, 1, 1, _ca_spki_sha256(world))
            world.dns.set_ad(peer.hostname, True)
            world.dns.set_ad(tlsa, True)
    lines = ["email,name"]
    hosted = domains * 97 // 100
    nonexistent = domains * 2 // 100
    for i in range(domains):
        domain = world.unique_domain("bench")
        if i < hosted:
            world.add_domain(domain, mx=[(10, peers[i % len(peers)].hostname)])
        elif i >= hosted + nonexistent:
            world.add_domain(domain, null_mx=True)
        lines.extend(f"user{j}@{domain},User {j}" for j in range(per_domain))
    return "\n".join(lines) + "\n", peers


def _ca_spki_sha256(world: LocalInternet) -> bytes:
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    spki = (
        x509.load_der_x509_certificate(world.ca.der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return hashlib.sha256(spki).digest()


def settings_for(world: LocalInternet) -> Settings:
    return world.settings(
        {
            "KAKITOME_CHECKER__PORT": str(world.port),
            "KAKITOME_CHECKER__HTTPS_PORT": str(world.https_server().port),
            "KAKITOME_CHECKER__CONNECT_TIMEOUT": "2",
            "KAKITOME_CHECKER__COMMAND_TIMEOUT": "2",
            "KAKITOME_CHECKER__PROBE_TIMEOUT": "6",
            "KAKITOME_DNS__TIMEOUT": "2",
        }
    )


def _size_kib(path: Path) -> int:
    return round(path.stat().st_size / 1024) if path.exists() else 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def one_run(
    world: LocalInternet,
    settings: Settings,
    text: str,
    peers: list[Peer],
    cache_file: Path,
    *,
    trace: bool,
) -> dict[str, Any]:
    queries_before = len(world.dns.queries())
    connections_before = sum(p.stats().connections for p in peers)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if trace:
        tracemalloc.start()
    cpu_before = _cpu()
    started = time.perf_counter()
    addresses = read_addresses(text)
    cache = CheckerCache.open(
        cache_file, ttl=settings.checker.cache_ttl, max_entries=settings.checker.cache_entries
    )
    checker = Checker(settings, cache=cache)
    report = await check_list(addresses, checker)
    cache.save()
    seconds = time.perf_counter() - started
    cpu = _cpu() - cpu_before
    traced_peak = None
    if trace:
        traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    data = report.to_dict()
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "peak_rss_growth_mib": round(
            (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024, 1
        ),
        "python_peak_mib": None if traced_peak is None else round(traced_peak / 2**20, 1),
        "recipients": data["recipients"],
        "domains": data["domains"],
        "transport": {k: v["recipients"] for k, v in data["transport"].items()},
        "coverage": {k: v["recipients"] for k, v in data["coverage"].items()},
        "stats": report.stats,
        "dns_queries": len(world.dns.queries()) - queries_before,
        "smtp_connections": sum(p.stats().connections for p in peers) - connections_before,
        "cache_file_kib": _size_kib(cache_file),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with LocalInternet() as world, tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        text, peers = build_world(world, args.domains, args.per_domain, args.providers)
        built = time.perf_counter() - started
        settings = settings_for(world)
        cache_file = Path(folder) / "checker-cache.json"
        cold = await one_run(world, settings, text, peers, cache_file, trace=args.tracemalloc)
        warm = await one_run(world, settings, text, peers, cache_file, trace=args.tracemalloc)
        return {
            "benchmark": "checker",
            "addresses": args.domains * args.per_domain,
            "domains": args.domains,
            "providers": args.providers,
            "concurrency": settings.checker.concurrency,
            "cpus": os.cpu_count(),
            "world_build_seconds": round(built, 1),
            "cold": cold,
            "warm": warm,
            "warm_did_no_network_work": warm["dns_queries"] == 0
            and warm["smtp_connections"] == 0
            and warm["stats"]["probes"] == 0,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--per-domain", type=int, default=10)
    parser.add_argument("--providers", type=int, default=len(PROVIDERS))
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also the peak of Python allocations"
    )
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{result['addresses']:,} addresses over {result['domains']:,} domains, "
        f"{result['providers']} providers, {result['cpus']} CPUs "
        f"(world built in {result['world_build_seconds']} s)"
    )
    for name in ("cold", "warm"):
        r = result[name]
        memory = f"peak RSS +{r['peak_rss_growth_mib']} MiB"
        if r["python_peak_mib"] is not None:
            memory += f", Python peak {r['python_peak_mib']} MiB"
        print(
            f"  {name}: {r['seconds']} s ({r['cpu_seconds']} s CPU), {memory}; "
            f"probes {r['stats']['probes']}, domains resolved {r['stats']['domains_resolved']}, "
            f"cache hits {r['stats']['cache_hits']}; DNS queries {r['dns_queries']}, "
            f"SMTP connections {r['smtp_connections']}; cache file {r['cache_file_kib']} KiB"
        )
        print(f"    transport: {r['transport']}; coverage: {r['coverage']}")
    print(f"  warm run did no network work: {result['warm_did_no_network_work']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
