"""Tests: MTA-STS discovery, fetch, parsing, cache and enforcement on the local internet."""

from __future__ import annotations

import pytest

from kakitome.delivery.types import Outcome
from kakitome.store.database import Database
from kakitome.testing import CertKind, LocalInternet, PeerBehaviour
from kakitome.testing.https import HTTPSResponse, add_mta_sts_host, mta_sts_policy
from kakitome.tls.mta_sts import (
    StsError,
    StsMode,
    mx_pattern_matches,
    parse_policy,
    parse_sts_records,
)
from kakitome.tls.policy import PolicySource, TLSLevel
from kakitome.tls.receipt import PeerVerification
from kakitome.tls.state import MemoryTLSState
from kakitome.tls.store import TLSStore
from tests.delivery.conftest import batch
from tests.fixtures_world import MakeDomain
from tests.tls.conftest import TLSAgentFactory

WELL_KNOWN = "/.well-known/mta-sts.txt"


async def test_good_policy_enforced_and_recorded(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T20, T23: a good enforce policy is fetched; the matching MX gets verified TLS and the
    receipt names mta-sts and the TLS-RPT result."""
    domain, peer = make_domain()
    add_mta_sts_host(world, domain.name, mta_sts_policy("enforce", [domain.mx[0][1]]))
    [result] = await tls_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None
    assert result.tls.policy_source is PolicySource.MTA_STS
    assert result.tls.level is TLSLevel.VERIFY
    assert result.tls.verification is PeerVerification.VERIFIED
    assert result.tls.tlsrpt_result == "success"
    assert peer.messages()[0].tls


@pytest.mark.parametrize(
    "txt",
    [
        "v=STSv2; id=20240101",  # wrong version
        "v=STSv1; id=bad-id!",  # id not alphanumeric
        "v=STSv1; id=" + "a" * 33,  # id too long
        "v=STSv1;",  # no id
    ],
)
async def test_bad_txt_record_means_no_policy(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory, txt: str
) -> None:
    """T19: a TXT record with the wrong version or a bad id is no policy at all: the
    (non-matching, enforce) policy is not applied and mail goes by the default."""
    domain, _ = make_domain()
    add_mta_sts_host(world, domain.name, mta_sts_policy("enforce", ["other.invalid"]), txt=txt)
    agent = tls_agent()
    outcome = await agent.policies.discovery.discover(domain.name)
    assert outcome.policy is None
    [result] = await agent.deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None and result.tls.policy_source is PolicySource.DEFAULT


async def test_two_txt_records_mean_no_policy(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T19: two v=STSv1 records are no policy."""
    domain, _ = make_domain()
    add_mta_sts_host(world, domain.name, mta_sts_policy("enforce", ["other.invalid"]))
    world.dns.add_txt(f"_mta-sts.{domain.name}", "v=STSv1; id=second", ttl=0)
    outcome = await tls_agent().policies.discovery.discover(domain.name)
    assert outcome.policy is None and "2 v=STSv1" in outcome.note


def test_txt_record_parsing() -> None:
    """T19: exactly one v=STSv1 record with an id of 1-32 letters and digits; other TXT
    records are ignored; extensions are allowed."""
    assert parse_sts_records(["v=spf1 -all", "v=STSv1; id=abc123;"]).policy_id == "abc123"
    assert parse_sts_records(["v=STSv1; id=A1; ext=1"]).policy_id == "A1"
    for bad in (["v=STSv1; id=a", "v=STSv1; id=b"], ["v=STSv1; id="], [], ["v=STSv1 id=x"]):
        with pytest.raises(StsError):
            parse_sts_records(bad)


@pytest.mark.parametrize(
    ("response", "result_type"),
    [
        (
            HTTPSResponse(body=b"version: STSv1\nmode: enforce\nmax_age: 86400\n"),
            "sts-policy-invalid",
        ),
        (
            HTTPSResponse(body=mta_sts_policy("enforce", ["mx.a.test"], 31557601).encode()),
            "sts-policy-invalid",
        ),
        (
            HTTPSResponse(body=mta_sts_policy("enforce", ["mx.a.test"], "1d").encode()),
            "sts-policy-invalid",
        ),
        (
            HTTPSResponse(body=mta_sts_policy("strict", ["mx.a.test"]).encode()),
            "sts-policy-invalid",
        ),
        (
            HTTPSResponse(
                body=mta_sts_policy("enforce", ["mx.a.test"]).encode(), content_type="text/html"
            ),
            "sts-policy-invalid",
        ),
        (HTTPSResponse(404, b"no"), "sts-policy-fetch-error"),
        (
            HTTPSResponse(301, b"", location="https://elsewhere.test/.well-known/mta-sts.txt"),
            "sts-policy-fetch-error",
        ),
    ],
    ids=[
        "missing-mx",
        "max-age-too-large",
        "max-age-not-number",
        "unknown-mode",
        "html",
        "404",
        "redirect",
    ],
)
async def test_bad_policy_means_no_policy(
    world: LocalInternet,
    make_domain: MakeDomain,
    tls_agent: TLSAgentFactory,
    response: HTTPSResponse,
    result_type: str,
) -> None:
    """T20, T21: missing mx, max_age too large or not a number, unknown mode, HTML, 404 and a
    redirect all give no policy, with the RFC 8460 result type recorded."""
    domain, _ = make_domain()
    add_mta_sts_host(world, domain.name, response)
    agent = tls_agent()
    outcome = await agent.policies.discovery.discover(domain.name)
    assert outcome.policy is None and outcome.failure == result_type, outcome
    [result] = await agent.deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None and result.tls.tlsrpt_result == result_type


@pytest.mark.parametrize("cert", [CertKind.WRONG_NAME, CertKind.EXPIRED, CertKind.SELF_SIGNED])
async def test_policy_host_certificate_must_be_valid(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory, cert: CertKind
) -> None:
    """T20: a policy host whose certificate is for the wrong name, expired or self-signed
    gives no policy (sts-webpki-invalid)."""
    domain, _ = make_domain()
    add_mta_sts_host(world, domain.name, mta_sts_policy("enforce", ["x.invalid"]), cert=cert)
    outcome = await tls_agent().policies.discovery.discover(domain.name)
    assert outcome.policy is None
    assert outcome.failure == "sts-webpki-invalid", outcome


def test_policy_parsing_rules() -> None:
    """T21: version first, known modes, max_age digits up to 31557600, mx required in
    enforce/testing, wildcards only as the whole left-most label, unknown keys ignored."""
    policy = parse_policy(
        "version: STSv1\r\nmode: testing\r\nmx: *.example.com\r\nmx: mx.example.net\r\n"
        "max_age: 31557600\r\nfuture: 1\r\n"
    )
    assert policy.mode is StsMode.TESTING and policy.max_age == 31557600
    assert policy.mx == ("*.example.com", "mx.example.net")
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 0\n").mode is StsMode.NONE
    for bad in (
        "mode: enforce\nversion: STSv1\nmx: a.b\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1\n",
        "version: STSv1\nmode: enforce\nmode: testing\nmx: a.b\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: a.*.b\nmax_age: 1\n",
        "version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1\n",
    ):
        with pytest.raises(StsError):
            parse_policy(bad)
    assert mx_pattern_matches("*.example.com", "mx1.example.com")
    assert not mx_pattern_matches("*.example.com", "a.mx1.example.com")
    assert not mx_pattern_matches("*.example.com", "example.com")
    assert mx_pattern_matches("MX.Example.com.", "mx.example.com")


async def test_enforce_skips_unlisted_mx_and_defers(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T23: an MX not in the enforce policy is skipped; with none left the mail is
    deferred (4.7.5), never bounced and never sent."""
    domain, peer = make_domain()
    add_mta_sts_host(world, domain.name, mta_sts_policy("enforce", ["mx.elsewhere.test"]))
    [result] = await tls_agent().deliver(batch(domain.name))
    assert result.outcome is Outcome.DEFERRED and result.reply.enhanced == "4.7.5"
    assert peer.messages() == [] and peer.stats().connections == 0
    assert result.tls is not None and result.tls.tlsrpt_result == "validation-failure"


@pytest.mark.parametrize("cert", [CertKind.EXPIRED, CertKind.WRONG_NAME, CertKind.SELF_SIGNED])
async def test_enforce_requires_valid_mx_certificate(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory, cert: CertKind
) -> None:
    """T23: under enforce an MX whose certificate is not valid is skipped (deferred)."""
    domain, peer = make_domain(PeerBehaviour(cert=cert))
    add_mta_sts_host(world, domain.name, mta_sts_policy("enforce", [f"*.{domain.name}"]))
    agent = tls_agent()
    [result] = await agent.deliver(batch(domain.name))
    assert result.outcome is Outcome.DEFERRED and result.reply.enhanced == "4.7.5"
    assert peer.messages() == []
    assert result.tls is not None
    assert result.tls.tlsrpt_result in (
        "certificate-expired",
        "certificate-host-mismatch",
        "certificate-not-trusted",
    )
    assert len(agent.unverified) == 0  # T40: not remembered as having a bad certificate


async def test_testing_mode_delivers_and_reports(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T24: testing mode delivers to an unlisted MX with an invalid certificate, and the
    session is a TLS-RPT failure."""
    domain, peer = make_domain(PeerBehaviour(cert=CertKind.EXPIRED))
    add_mta_sts_host(world, domain.name, mta_sts_policy("testing", ["mx.elsewhere.test"]))
    state = MemoryTLSState()
    [result] = await tls_agent(state).deliver(batch(domain.name))
    assert result.outcome is Outcome.DELIVERED, result.reply
    assert result.tls is not None and result.tls.policy_source is PolicySource.MTA_STS
    assert result.tls.tlsrpt_result == "validation-failure"
    [session] = [s for s in state.sessions.values() if s.policy.domain == domain.name]
    assert session.policy.type == "sts" and session.result_type == "validation-failure"
    assert len(peer.messages()) == 1


async def test_cache_survives_missing_txt_and_failed_fetch_and_refreshes_on_new_id(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T22: the cached policy outlives a deleted TXT record and a failed fetch until
    max_age, and is refreshed when the id changes."""
    domain, _ = make_domain()
    server = add_mta_sts_host(
        world, domain.name, mta_sts_policy("enforce", ["mx1.a.test"]), policy_id="one"
    )
    state = MemoryTLSState()
    agent = tls_agent(state)
    first = await agent.policies.discovery.discover(domain.name)
    assert first.how == "fetched" and first.policy is not None and first.policy.policy_id == "one"

    world.dns.remove(f"_mta-sts.{domain.name}", "TXT")
    kept = await tls_agent(state).policies.discovery.discover(domain.name)
    assert kept.how == "cache" and kept.policy == first.policy

    host = f"mta-sts.{domain.name}"
    world.dns.add_txt(f"_mta-sts.{domain.name}", "v=STSv1; id=two", ttl=0)
    server.set_response(host, WELL_KNOWN, HTTPSResponse(500, b"oops"))
    failed = await tls_agent(state).policies.discovery.discover(domain.name)
    assert failed.how == "cache" and failed.policy == first.policy
    assert failed.failure == "sts-policy-fetch-error"

    server.set_response(
        host, WELL_KNOWN, HTTPSResponse(body=mta_sts_policy("testing", ["mx2.a.test"]).encode())
    )
    fresh = await tls_agent(state).policies.discovery.discover(domain.name)
    assert fresh.how == "fetched" and fresh.policy is not None
    assert fresh.policy.policy_id == "two" and fresh.policy.mode is StsMode.TESTING


async def test_cache_expires_after_max_age(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory
) -> None:
    """T22: after max_age a cached policy is gone when the TXT record is gone too."""
    domain, _ = make_domain()
    add_mta_sts_host(world, domain.name, mta_sts_policy("enforce", ["mx1.a.test"], 100))
    state = MemoryTLSState()
    now = [1_000_000.0]
    assert (
        await tls_agent(state, clock=lambda: now[0]).policies.discovery.discover(domain.name)
    ).policy
    world.dns.remove(f"_mta-sts.{domain.name}", "TXT")
    now[0] += 101
    gone = await tls_agent(state, clock=lambda: now[0]).policies.discovery.discover(domain.name)
    assert gone.policy is None


async def test_cache_survives_restart(
    world: LocalInternet, make_domain: MakeDomain, tls_agent: TLSAgentFactory, database_url: str
) -> None:
    """T22: the cache is in the database: a new process (new store, new agent) still has
    the policy when the TXT record has gone."""
    domain, peer = make_domain()
    add_mta_sts_host(world, domain.name, mta_sts_policy("enforce", ["mx.elsewhere.test"]))
    store = await Database.open(database_url)
    try:
        first = await tls_agent(TLSStore(store.engine)).policies.discovery.discover(domain.name)
        assert first.how == "fetched"
    finally:
        await store.close()
    world.dns.remove(f"_mta-sts.{domain.name}", "TXT")
    store = await Database.open(database_url)
    try:
        agent = tls_agent(TLSStore(store.engine))
        kept = await agent.policies.discovery.discover(domain.name)
        assert kept.how == "cache" and kept.policy == first.policy
        [result] = await agent.deliver(batch(domain.name))
        assert result.outcome is Outcome.DEFERRED  # still enforced: the MX is not listed
        assert peer.messages() == []
    finally:
        await store.close()
