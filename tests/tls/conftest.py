"""Helpers for TLS policy tests: agents wired to the local internet with its HTTPS
server, shared TLS state, and DANE/MTA-STS publishing helpers."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kakitome.config import Settings
from kakitome.delivery.agent import DeliveryAgent
from kakitome.delivery.pool import ConnectionPool
from kakitome.dns.resolver import Resolver
from kakitome.testing import Domain, LocalInternet, Peer, TestCA
from kakitome.tls.state import MemoryTLSState, TLSState

TLSAgentFactory = Callable[..., DeliveryAgent]


def tls_env(world: LocalInternet, **env: Any) -> Settings:
    extra = {
        "KAKITOME_MTA_STS__HTTPS_PORT": str(world.https_server().port),
        "KAKITOME_MTA_STS__RECHECK_INTERVAL": "0",
        "KAKITOME_MTA_STS__FETCH_TIMEOUT": "5",
        "KAKITOME_DELIVERY__IDLE_TIMEOUT": "0",
        **{f"KAKITOME_{k}": str(v) for k, v in env.items()},
    }
    return world.settings(extra)


@pytest.fixture
async def tls_agent(world: LocalInternet) -> AsyncIterator[TLSAgentFactory]:
    """``tls_agent(state=None, clock=None, **env)``: an agent with MTA-STS pointed at the
    world's HTTPS server, no connection reuse, and the given TLS state."""
    pools: list[ConnectionPool] = []

    def make(
        state: TLSState | None = None, clock: Callable[[], float] | None = None, **env: Any
    ) -> DeliveryAgent:
        settings = tls_env(world, **env)
        pool = ConnectionPool(settings)
        pools.append(pool)
        kwargs: dict[str, Any] = {"tls_state": state if state is not None else MemoryTLSState()}
        if clock is not None:
            kwargs["clock"] = clock
        return DeliveryAgent(settings, Resolver(settings), pool, **kwargs)

    yield make
    for pool in pools:
        await pool.aclose()


def spki_sha256(der: bytes) -> bytes:
    cert = x509.load_der_x509_certificate(der)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


def ca_tlsa(ca: TestCA, selector: int, matching: int) -> bytes:
    data = (
        ca.der
        if selector == 0
        else x509.load_der_x509_certificate(ca.der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    if matching == 1:
        return hashlib.sha256(data).digest()
    if matching == 2:
        return hashlib.sha512(data).digest()
    return data


def publish_dane(
    world: LocalInternet,
    domain: Domain,
    records: list[tuple[int, int, int, bytes]],
    *,
    tlsa_secure: bool = True,
) -> str:
    """Mark the domain and its MX validated (AD) and publish TLSA records at its first MX;
    returns the TLSA owner name."""
    host = domain.mx[0][1]
    world.dns.set_ad(domain.name, True)
    world.dns.set_ad(host, True)
    name = f"_25._tcp.{host}"
    for usage, selector, matching, data in records:
        world.dns.add_tlsa(name, usage, selector, matching, data, ttl=0)
    world.dns.set_ad(name, tlsa_secure)
    return name


def peer_tlsa(peer: Peer, selector: int = 1, matching: int = 1) -> bytes:
    assert peer.cert is not None
    return peer.cert.tlsa(selector, matching)
