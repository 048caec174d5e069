"""Tests: the adversarial downgrade matrix (issue 14; T3, T6, T7, T13, T20-T23, T29, T43-T45).

Every attack of ``kakitome.testing.attacks`` runs against the real DeliveryAgent on
loopback peers and the world's DNS and HTTPS server, under every policy where it matters,
and must give the expected outcome: nothing in plaintext where TLS is required, a 4.x.x
deferral (never a bounce; REQUIRETLS bounces 5.7.x), the receipt and its TLS-RPT result
type. Cases in ``FINDINGS`` are known to differ and are ``xfail(strict=True)``. Every
case runs on SQLite and PostgreSQL (the TLS state in the store); the ``may+history``
cases read the history back through a fresh store, as a new process would. The table in
docs/DOWNGRADE.md is generated from the same data and must be up to date.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Iterator

import pytest
from scripts.downgrade_matrix import DOC, render

from kakitome.delivery.agent import DeliveryAgent
from kakitome.delivery.types import Batch, OutboundMessage, Outcome, Recipient, RecipientResult
from kakitome.store.database import Database
from kakitome.testing import LocalInternet, Peer, PeerBehaviour, attacks
from kakitome.testing.attacks import (
    ATTACKS,
    FINDINGS,
    REDIRECT,
    Attack,
    DNSAttack,
    Expect,
    Kind,
    Policy,
    StsAttack,
)
from kakitome.testing.ca import CertKind
from kakitome.testing.https import HTTPSResponse, add_mta_sts_host, mta_sts_policy
from kakitome.testing.world import Domain
from kakitome.tls.policy import PolicySource
from kakitome.tls.state import MemoryTLSState, TLSState
from kakitome.tls.store import TLSStore
from tests.tls.conftest import TLSAgentFactory, peer_tlsa

_ids = iter(range(900_000, 10_000_000))
TABLE = {
    Policy.ENCRYPT: "encrypt",
    Policy.VERIFY: "verify",
    Policy.SECURE: "secure",
    Policy.DANE: "dane",
    Policy.DANE_ONLY: "dane-only",
}
DANE_POLICIES = (Policy.DANE, Policy.DANE_ONLY, Policy.REQUIRETLS)


def message(domain: str, *, requiretls: bool) -> Batch:
    return Batch(
        domain,
        (
            OutboundMessage(
                message_id=f"dm{next(_ids)}",
                sender="bounce@sender.test",
                recipients=(Recipient(next(_ids), f"bob@{domain}"),),
                content=b"From: a@sender.test\r\nSubject: matrix\r\n\r\nhello\r\n",
                requiretls=requiretls,
            ),
        ),
    )


@dataclasses.dataclass
class Case:
    attack: Attack
    policy: Policy
    domain: Domain
    peers: list[Peer]


@pytest.fixture
def scene(world: LocalInternet) -> Iterator[list[Case]]:
    made: list[Case] = []
    yield made
    for case in made:
        world.remove_domain(case.domain.name)
        for peer in case.peers:
            world.remove_peer(peer)


def _publish_dane(world: LocalInternet, case: Case) -> None:
    world.dns.set_ad(case.domain.name, True)
    for (_, host), peer in zip(case.domain.mx, case.peers, strict=True):
        world.dns.set_ad(host, True)
        name = f"_25._tcp.{host}"
        world.dns.add_tlsa(name, 3, 1, 1, peer_tlsa(peer), ttl=0)
        world.dns.set_ad(name, True)


def _dns_attack(world: LocalInternet, case: Case, attack: DNSAttack) -> None:
    domain = case.domain
    for _, host in domain.mx:
        name = f"_25._tcp.{host}"
        if attack is DNSAttack.TLSA_MISMATCH:
            world.dns.remove(name, "TLSA")
            world.dns.add_tlsa(name, 3, 1, 1, os.urandom(32), ttl=0)
        elif attack is DNSAttack.TLSA_SERVFAIL:
            world.dns.set_rcode(name, "SERVFAIL")
        elif attack is DNSAttack.TLSA_UNUSABLE:
            world.dns.remove(name, "TLSA")
            world.dns.add_tlsa(name, 0, 0, 1, os.urandom(32), ttl=0)
        elif attack is DNSAttack.TLSA_INSECURE:
            world.dns.set_ad(name, False)
        elif attack is DNSAttack.TLSA_TIMEOUT:
            world.dns.set_hang(name)
        elif attack is DNSAttack.AD_ONLY_ON_TLSA:
            world.dns.set_ad(host, False)
    if attack is DNSAttack.MX_BOGUS:
        world.dns.set_rcode(domain.name, "SERVFAIL")
    elif attack is DNSAttack.AD_ONLY_ON_TLSA:
        world.dns.set_ad(domain.name, False)


def _sts_mode(policy: Policy) -> str:
    return "enforce" if policy is Policy.STS_ENFORCE else "testing"


def _sts_attack(world: LocalInternet, case: Case, attack: StsAttack) -> None:
    name, mode = case.domain.name, _sts_mode(case.policy)
    hosts = [h for _, h in case.domain.mx]
    if attack is StsAttack.MX_NOT_LISTED:
        add_mta_sts_host(world, name, mta_sts_policy(mode, ["other.invalid"]))
    elif attack is StsAttack.REDIRECT:
        add_mta_sts_host(world, name, REDIRECT)
    elif attack is StsAttack.CONTENT_TYPE:
        body = mta_sts_policy(mode, hosts).encode()
        add_mta_sts_host(world, name, HTTPSResponse(body=body, content_type="text/html"))
    elif attack is StsAttack.WEBPKI:
        add_mta_sts_host(world, name, mta_sts_policy(mode, hosts), cert=CertKind.EXPIRED)
    elif attack is StsAttack.FETCH_FAILS_AFTER_CACHE:
        add_mta_sts_host(world, name, HTTPSResponse(404, b"gone"), policy_id="20990101T000000")
    elif attack is StsAttack.TXT_REMOVED_AFTER_CACHE:
        world.dns.remove(f"_mta-sts.{name}", "TXT")
    elif attack is StsAttack.ID_CHANGED_DROPS_MX:
        add_mta_sts_host(
            world, name, mta_sts_policy(mode, ["other.invalid"]), policy_id="20990101T000000"
        )


def _with_policy(behaviour: PeerBehaviour, policy: Policy) -> PeerBehaviour:
    if policy is Policy.REQUIRETLS and not behaviour.requiretls:
        return dataclasses.replace(behaviour, requiretls=True)
    return behaviour


async def run_case(
    world: LocalInternet,
    scene: list[Case],
    tls_agent: TLSAgentFactory,
    attack: Attack,
    policy: Policy,
    state: TLSState | None = None,
    fresh_state: TLSState | None = None,
) -> tuple[RecipientResult, Case]:
    """Set the scene for ``attack`` under ``policy``, deliver one message, return the
    result (after a first honest delivery when the attack or the policy needs one)."""
    first = attack.after_first_delivery or policy is Policy.MAY_HISTORY
    behaviours = [attack.behaviour] + ([attack.second_mx] if attack.second_mx else [])
    start = [PeerBehaviour() if first else b for b in behaviours]
    peers = [world.add_peer(behaviour=_with_policy(b, policy)) for b in start]
    domain = world.add_domain(
        world.unique_domain("dg"), mx=[(10 * (i + 1), p) for i, p in enumerate(peers)]
    )
    case = Case(attack, policy, domain, peers)
    scene.append(case)
    if policy is Policy.SECURE:  # secure matches the next-hop domain, not the MX name
        for peer in peers:
            peer.add_names(domain.name)
    if attack.dns is not None or policy in DANE_POLICIES:
        _publish_dane(world, case)
    if attack.dns is not None:
        _dns_attack(world, case, attack.dns)
    if policy in (Policy.STS_ENFORCE, Policy.STS_TESTING):
        hosts = [h for _, h in domain.mx]
        add_mta_sts_host(world, domain.name, mta_sts_policy(_sts_mode(policy), hosts))
        if attack.sts is not None and not attack.after_first_delivery:
            _sts_attack(world, case, attack.sts)
    env = {"TLS__POLICY": f'{{"{domain.name}": "{TABLE[policy]}"}}'} if policy in TABLE else {}
    if attack.dns is DNSAttack.TLSA_TIMEOUT:
        env["DNS__TIMEOUT"] = "0.5"
    state = state if state is not None else MemoryTLSState()
    agent: DeliveryAgent = tls_agent(state, **env)
    requiretls = policy is Policy.REQUIRETLS
    if first:
        [honest] = await agent.deliver(message(domain.name, requiretls=requiretls))
        assert honest.outcome is Outcome.DELIVERED, honest.reply
        assert honest.tls is not None and honest.tls.used, honest.tls
        if attack.sts is not None and attack.after_first_delivery:
            _sts_attack(world, case, attack.sts)
        for peer, behaviour in zip(peers, behaviours, strict=True):
            peer.set_behaviour(_with_policy(behaviour, policy))
            peer.clear()
        if fresh_state is not None:  # a new process: the history is read from the store
            agent = tls_agent(fresh_state, **env)
        elif attack.after_first_delivery:
            # Only the cached MTA-STS policy carries over, not the host's history: the
            # cache alone must hold the line.
            cached = await state.get_sts_policy(domain.name)
            assert cached is not None, "the first delivery cached no MTA-STS policy"
            only_policy = MemoryTLSState()
            await only_policy.put_sts_policy(cached)
            agent = tls_agent(only_policy, **env)
    [result] = await agent.deliver(message(domain.name, requiretls=requiretls))
    return result, case


def observed(result: RecipientResult) -> Expect:
    """What happened, in the matrix's terms (the full enhanced code)."""
    tls = result.tls
    rpt = tls.tlsrpt_result if tls is not None else None
    if result.outcome is Outcome.DELIVERED:
        used = tls is not None and tls.used
        return Expect(Kind.TLS if used else Kind.PLAIN, None, rpt)
    kind = Kind.BOUNCE if result.outcome is Outcome.BOUNCED else Kind.DEFER
    return Expect(kind, result.reply.enhanced or str(result.reply.code), rpt)


def check(result: RecipientResult, case: Case, expect: Expect) -> None:
    got = observed(result)
    what = f"{case.attack.name} under {case.policy}: expected {expect.cell()}, got {got.cell()}"
    detail = f"{what}; reply {result.reply}; tls {result.tls}"
    messages = [m for p in case.peers for m in p.messages()]
    assert got.kind is expect.kind, detail
    if expect.code is not None:
        assert (got.code or "").startswith(expect.code), detail
    if expect.tlsrpt is not None:
        assert got.tlsrpt == expect.tlsrpt, detail
    if expect.kind is Kind.PLAIN:
        assert result.tls is not None and result.tls.plaintext_reason, detail
        assert len(messages) == 1 and not messages[0].tls, detail
        return
    # Nothing was sent in plaintext: no message, no MAIL FROM outside TLS.
    for peer in case.peers:
        for conn in peer.connections():
            if not conn.tls:
                assert not any(c.upper().startswith("MAIL FROM") for c in conn.commands), detail
    if expect.kind is Kind.TLS:
        assert len(messages) == 1 and messages[0].tls, detail
    else:
        assert messages == [], detail
        if expect.kind is Kind.DEFER:
            assert result.reply.code // 100 == 4, detail


def _cases(*, history: bool) -> list[object]:
    params: list[object] = []
    for attack in ATTACKS:
        for policy, expect in attack.expect.items():
            if (policy is Policy.MAY_HISTORY) is not history:
                continue
            finding = FINDINGS.get((attack.name, policy))
            marks = [pytest.mark.xfail(strict=True, reason=finding)] if finding else []
            params.append(
                pytest.param(attack, policy, expect, id=f"{attack.name}-{policy}", marks=marks)
            )
    return params


@pytest.mark.parametrize(("attack", "policy", "expect"), _cases(history=False))
async def test_attack(
    world: LocalInternet,
    scene: list[Case],
    tls_agent: TLSAgentFactory,
    store: Database,
    attack: Attack,
    policy: Policy,
    expect: Expect,
) -> None:
    """Each attack under each policy where it matters gives the expected outcome, with the
    TLS state (MTA-STS cache, host history) in the store (SQLite and PostgreSQL)."""
    result, case = await run_case(
        world, scene, tls_agent, attack, policy, state=TLSStore(store.engine)
    )
    check(result, case, expect)
    if attack.after_first_delivery and policy is Policy.STS_ENFORCE:
        # The cached (or newly fetched) policy decided, not a history of the host.
        assert result.tls is not None and result.tls.policy_source is PolicySource.MTA_STS


@pytest.mark.parametrize(("attack", "policy", "expect"), _cases(history=True))
async def test_attack_with_history(
    world: LocalInternet,
    scene: list[Case],
    tls_agent: TLSAgentFactory,
    store: Database,
    attack: Attack,
    policy: Policy,
    expect: Expect,
) -> None:
    """``may`` after verified TLS to the host: the history, kept in the store, makes every
    attack that keeps TLS (or its verification) from happening a 4.7.x deferral."""
    result, case = await run_case(
        world,
        scene,
        tls_agent,
        attack,
        policy,
        state=TLSStore(store.engine),
        fresh_state=TLSStore(store.engine),
    )
    check(result, case, expect)


def test_at_least_thirty_attacks_and_every_policy() -> None:
    """The matrix covers at least 30 attacks and every policy; names are unique."""
    assert len(ATTACKS) >= 30
    assert len({a.name for a in ATTACKS}) == len(ATTACKS)
    assert {p for a in ATTACKS for p in a.expect} == set(Policy)
    for (name, policy), _ in FINDINGS.items():
        assert any(a.name == name and policy in a.expect for a in ATTACKS), (name, policy)


def test_attacks_all_lists_its_public_names() -> None:
    """``kakitome.testing.attacks.__all__`` names what the module defines for others."""
    defined = {
        name
        for name, value in vars(attacks).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and getattr(value, "__module__", attacks.__name__) == attacks.__name__
    }
    assert defined <= set(attacks.__all__)
    assert all(hasattr(attacks, name) for name in attacks.__all__)


def test_downgrade_doc_is_up_to_date() -> None:
    """docs/DOWNGRADE.md is what ``python -m scripts.downgrade_matrix`` writes."""
    assert DOC.read_text() == render(), "run: python -m scripts.downgrade_matrix"
