"""`domain verify` against the local DNS server: all ok when the printed records are
published; each kind of wrong record gives its own finding and remedy."""

from __future__ import annotations

from typing import Any

import pytest

from kakitome.domains.service import DomainService
from kakitome.domains.verify import DomainDNSError, Verification
from kakitome.store.database import Database
from tests.domains.conftest import Env


async def _added(service: DomainService, env: Env) -> dict[str, Any]:
    await service.add(env.domain)
    return (await service.records(env.domain)).to_dict()


def _only(verification: Verification, code: str) -> dict[str, Any]:
    found = verification.by_code(code)
    assert found, [f.code for f in verification.findings]
    finding = found[0].to_dict()
    assert finding["remedy"]["en"] and finding["remedy"]["ja"]
    return finding


def _value(records: dict[str, Any], purpose: str) -> dict[str, Any]:
    return next(r for r in records["records"] if r["purpose"] == purpose)


async def test_published_records_verify_all_ok(service: DomainService, domain_env: Env) -> None:
    """Publishing exactly what `domain dns` prints makes every check ok (state verified)."""
    records = await _added(service, domain_env)
    domain_env.publish(records)
    result = await service.verify(domain_env.domain)
    assert [f.code for f in result.findings if not f.ok] == []
    assert result.state == "verified"
    codes = {f.code for f in result.findings}
    assert {"dkim_ok", "spf_ok", "return_path_spf_ok", "return_path_mx_ok", "dmarc_ok",
            "dmarc_aligned", "return_path_aligned", "ptr_ok", "bulk_sender_ok",
            "mta_sts_ok", "tls_rpt_ok"} <= codes  # fmt: skip
    assert len(result.by_code("dkim_ok")) == 2  # RSA and Ed25519
    assert (await service.show(domain_env.domain)).row.state == "verified"


async def test_dkim_missing(service: DomainService, domain_env: Env) -> None:
    """No TXT record at the RSA selector → dkim_missing for that key."""
    records = await _added(service, domain_env)
    rsa = next(r for r in records["records"] if r["purpose"] == "dkim" and "k=rsa" in r["value"])
    domain_env.publish(records, skip=lambda r: r is rsa)
    result = await service.verify(domain_env.domain)
    finding = _only(result, "dkim_missing")
    assert finding["name"] == rsa["name"] and finding["status"] == "missing"
    assert result.state == "failing"


async def test_dkim_key_mismatch(service: DomainService, domain_env: Env) -> None:
    """A DKIM record with another key → dkim_mismatch ("does not match")."""
    records = await _added(service, domain_env)
    ed = next(r for r in records["records"] if r["purpose"] == "dkim" and "k=ed25519" in r["value"])
    domain_env.publish(records, skip=lambda r: r is ed)
    domain_env.world.dns.add_txt(ed["name"], "v=DKIM1; k=ed25519; p=" + "A" * 43 + "=")
    finding = _only(await service.verify(domain_env.domain), "dkim_mismatch")
    assert finding["status"] == "wrong" and "does not match" in finding["message"]["en"]


async def test_spf_missing(service: DomainService, domain_env: Env) -> None:
    """No SPF record at the From domain → spf_missing."""
    records = await _added(service, domain_env)
    domain_env.publish(records, skip=lambda r: r["purpose"] == "spf")
    finding = _only(await service.verify(domain_env.domain), "spf_missing")
    assert f"ip4:{domain_env.ip}" in finding["remedy"]["en"]


async def test_spf_over_ten_lookups(service: DomainService, domain_env: Env) -> None:
    """An SPF record needing more than 10 DNS lookups → spf_too_many_lookups (permerror)."""
    records = await _added(service, domain_env)
    domain_env.publish(records, skip=lambda r: r["purpose"] == "spf")
    dns, d = domain_env.world.dns, domain_env.domain
    for i in range(11):
        dns.add_txt(f"i{i}.{d}", "v=spf1 -all")
    includes = " ".join(f"include:i{i}.{d}" for i in range(11))
    dns.add_txt(d, f"v=spf1 ip4:{domain_env.ip} {includes} ~all")
    finding = _only(await service.verify(d), "spf_too_many_lookups")
    assert "10" in finding["message"]["en"] and "permerror" in finding["message"]["en"]


async def test_spf_not_covering_sending_ip(service: DomainService, domain_env: Env) -> None:
    """An SPF record that does not name our IP → spf_not_covering_ip."""
    records = await _added(service, domain_env)
    domain_env.publish(records, skip=lambda r: r["purpose"] == "spf")
    domain_env.world.dns.add_txt(domain_env.domain, "v=spf1 ip4:192.0.2.77 ~all")
    finding = _only(await service.verify(domain_env.domain), "spf_not_covering_ip")
    assert domain_env.ip in finding["message"]["en"]


async def test_spf_two_records(service: DomainService, domain_env: Env) -> None:
    """Two SPF records at one name → spf_multiple."""
    records = await _added(service, domain_env)
    domain_env.publish(records)
    domain_env.world.dns.add_txt(domain_env.domain, "v=spf1 include:_spf.google.com ~all")
    _only(await service.verify(domain_env.domain), "spf_multiple")


async def test_return_path_spf_missing(service: DomainService, domain_env: Env) -> None:
    """No SPF at the return-path domain → return_path_spf_missing."""
    records = await _added(service, domain_env)
    domain_env.publish(records, skip=lambda r: r["purpose"] == "return_path_spf")
    _only(await service.verify(domain_env.domain), "return_path_spf_missing")


async def test_return_path_mx_missing(service: DomainService, domain_env: Env) -> None:
    """No MX at the return-path domain → return_path_mx_missing."""
    records = await _added(service, domain_env)
    domain_env.publish(records, skip=lambda r: r["purpose"] == "return_path_mx")
    _only(await service.verify(domain_env.domain), "return_path_mx_missing")


async def test_return_path_mx_elsewhere(service: DomainService, domain_env: Env) -> None:
    """The return-path MX pointing at another host → return_path_mx_wrong."""
    records = await _added(service, domain_env)
    domain_env.publish(records, skip=lambda r: r["purpose"] == "return_path_mx")
    domain_env.world.dns.add_mx(records["return_path"], 10, "mx.elsewhere.test")
    finding = _only(await service.verify(domain_env.domain), "return_path_mx_wrong")
    assert finding["found"] == ["mx.elsewhere.test"]


async def test_return_path_not_aligned(service: DomainService, domain_env: Env) -> None:
    """DMARC with aspf=s: the bounce subdomain does not align → return_path_not_aligned."""
    records = await _added(service, domain_env)
    domain_env.publish(records, skip=lambda r: r["purpose"] == "dmarc")
    dmarc = _value(records, "dmarc")
    domain_env.world.dns.add_txt(dmarc["name"], dmarc["value"] + "; aspf=s")
    finding = _only(await service.verify(domain_env.domain), "return_path_not_aligned")
    assert "aspf=s" in finding["message"]["en"]


async def test_dmarc_missing(service: DomainService, domain_env: Env) -> None:
    """No DMARC record anywhere up the tree → dmarc_missing."""
    records = await _added(service, domain_env)
    domain_env.publish(records, skip=lambda r: r["purpose"] == "dmarc")
    result = await service.verify(domain_env.domain)
    finding = _only(result, "dmarc_missing")
    assert "p=none" in finding["remedy"]["en"]
    assert result.by_code("bulk_sender_requirements_unmet")


async def test_dmarc_not_aligned(service: DomainService, domain_env: Env) -> None:
    """Neither DKIM nor return-path SPF passes → mail would fail DMARC (dmarc_not_aligned)."""
    records = await _added(service, domain_env)
    domain_env.publish(records, skip=lambda r: r["purpose"] in ("dkim", "return_path_spf"))
    _only(await service.verify(domain_env.domain), "dmarc_not_aligned")


async def test_dmarc_reports_not_to_us(service: DomainService, domain_env: Env) -> None:
    """A DMARC record whose rua is elsewhere → a warning, the domain still verifies."""
    records = await _added(service, domain_env)
    domain_env.publish(records, skip=lambda r: r["purpose"] == "dmarc")
    domain_env.world.dns.add_txt(
        f"_dmarc.{domain_env.domain}", "v=DMARC1; p=none; rua=mailto:x@example.net"
    )
    result = await service.verify(domain_env.domain)
    assert _only(result, "dmarc_reports_not_to_us")["status"] == "warning"
    assert result.state == "verified"


async def test_ptr_missing(service: DomainService, domain_env: Env) -> None:
    """A sending IP without PTR → ptr_missing, and the bulk-sender rules are unmet."""
    records = await _added(service, domain_env)
    domain_env.publish(records, ptr=False)
    result = await service.verify(domain_env.domain)
    assert domain_env.helo in _only(result, "ptr_missing")["remedy"]["en"]
    assert "PTR" in _only(result, "bulk_sender_requirements_unmet")["message"]["en"]


async def test_ptr_not_forward_confirmed(service: DomainService, domain_env: Env) -> None:
    """A PTR whose name does not resolve back to the IP → ptr_not_confirmed."""
    records = await _added(service, domain_env)
    domain_env.publish(records, ptr=False)
    domain_env.world.dns.add_ptr(domain_env.ip, domain_env.helo)  # no A record for it
    _only(await service.verify(domain_env.domain), "ptr_not_confirmed")


async def test_bulk_sender_requirements(service: DomainService, domain_env: Env) -> None:
    """Gmail/Yahoo rules: DKIM missing → bulk_sender_requirements_unmet names DKIM."""
    records = await _added(service, domain_env)
    domain_env.publish(records, skip=lambda r: r["purpose"] == "dkim")
    finding = _only(await service.verify(domain_env.domain), "bulk_sender_requirements_unmet")
    assert "DKIM must pass" in finding["message"]["en"]
    assert "Gmail" in finding["message"]["ja"]


async def test_mta_sts_and_tls_rpt_are_optional(service: DomainService, domain_env: Env) -> None:
    """Without MTA-STS/TLS-RPT records they are reported missing, yet the domain verifies."""
    records = await _added(service, domain_env)
    domain_env.publish(records, skip=lambda r: r["purpose"] in ("mta_sts", "tls_rpt"))
    result = await service.verify(domain_env.domain)
    assert _only(result, "mta_sts_missing")["required"] is False
    assert _only(result, "tls_rpt_missing")["required"] is False
    assert result.state == "verified"


async def test_dns_timeout_is_a_clear_error(service: DomainService, domain_env: Env) -> None:
    """A nameserver that never answers → DomainDNSError, and the stored state is unchanged."""
    await service.add(domain_env.domain)
    domain_env.world.dns.set_hang(f"_dmarc.{domain_env.domain}")
    try:
        with pytest.raises(DomainDNSError, match="DNS did not answer"):
            await service.verify(domain_env.domain)
    finally:
        domain_env.world.dns.set_hang(f"_dmarc.{domain_env.domain}", False)
    assert (await service.show(domain_env.domain)).row.state == "new"


async def test_state_change_records_an_event(
    service: DomainService, domain_env: Env, domain_store: Database
) -> None:
    """verify_all records a domain_state event when the state changes, not when it stays."""
    records = await _added(service, domain_env)
    assert await service.verify_all() == {domain_env.domain: "failing"}
    domain_env.publish(records)
    assert await service.verify_all() == {domain_env.domain: "verified"}
    assert await service.verify_all() == {domain_env.domain: "verified"}
    async with domain_store.engine.connect() as conn:
        from sqlalchemy import select

        from kakitome.store.schema import events

        rows = (await conn.execute(select(events).where(events.c.kind == "domain_state"))).all()
    changes = [
        (r.data["from"], r.data["to"]) for r in rows if r.data["domain"] == domain_env.domain
    ]
    assert changes == [("new", "failing"), ("failing", "verified")]
