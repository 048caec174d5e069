"""Tests: TLS-RPT aggregation, the RFC 8460 report, and its delivery by mail and HTTPS."""

from __future__ import annotations

import datetime as dt
import email
import gzip
import json
from email import policy
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]

from kakitome.delivery.types import Outcome
from kakitome.injection import Injector
from kakitome.store.database import Database
from kakitome.testing import CertKind, LocalInternet, PeerBehaviour
from kakitome.testing.https import HTTPSResponse, add_mta_sts_host, mta_sts_policy
from kakitome.tls.store import TLSStore
from kakitome.tls.tlsrpt import (
    MEDIA_TYPE,
    ReportPolicy,
    SessionRecord,
    TLSRPTReporter,
    build_report,
    parse_tlsrpt_record,
    report_mail,
)
from tests.delivery.conftest import batch
from tests.fixtures_db import queue_store
from tests.fixtures_world import MakeDomain
from tests.tls.conftest import TLSAgentFactory, tls_env

SCHEMA = json.loads((Path(__file__).parent / "tlsrpt_schema.json").read_text())
DAY = 86_400.0


def _validate(report: dict[str, object]) -> None:
    jsonschema.validate(report, SCHEMA, format_checker=jsonschema.FormatChecker())


def test_report_has_the_rfc_example_shape() -> None:
    """T26: a day's sessions give one policy entry with summary counts and failure
    details, as in RFC 8460's example, and the JSON validates against the schema."""
    sts = ReportPolicy(
        "company-y.example",
        "sts",
        ("version: STSv1", "mode: testing", "mx: *.mail.company-y.example", "max_age: 86400"),
        ("*.mail.company-y.example",),
    )
    day = "2016-04-01"
    sessions = [
        SessionRecord(day, sts, "mx1.mail.company-y.example", "203.0.113.56", None, count=5326),
        SessionRecord(
            day,
            sts,
            "mx1.mail.company-y.example",
            "203.0.113.56",
            "certificate-expired",
            sending_ip="2001:db8:abcd:0012::1",
            count=100,
        ),
        SessionRecord(
            day,
            sts,
            "mx2.mail.company-y.example",
            "203.0.113.32",
            "starttls-not-supported",
            count=200,
        ),
    ]
    report = build_report(
        "company-y.example",
        day,
        sessions,
        organization="Company-X",
        contact="sts-reporting@company-x.example",
        report_id="5065427c-23d3-47ca-b6e0-946ea0e8c4be",
    )
    _validate(report)
    assert report["date-range"] == {
        "start-datetime": "2016-04-01T00:00:00Z",
        "end-datetime": "2016-04-01T23:59:59Z",
    }
    [entry] = report["policies"]
    assert entry["policy"]["policy-type"] == "sts"
    assert entry["policy"]["mx-host"] == ["*.mail.company-y.example"]
    assert entry["summary"] == {
        "total-successful-session-count": 5326,
        "total-failure-session-count": 300,
    }
    assert {d["result-type"]: d["failed-session-count"] for d in entry["failure-details"]} == {
        "certificate-expired": 100,
        "starttls-not-supported": 200,
    }


def test_rua_record_parsing() -> None:
    """T27: exactly one v=TLSRPTv1 record; mailto and https URIs."""
    assert parse_tlsrpt_record(["v=TLSRPTv1; rua=mailto:a@b.test,https://r.b.test/x"]) == [
        "mailto:a@b.test",
        "https://r.b.test/x",
    ]
    assert parse_tlsrpt_record(["v=TLSRPTv1; rua=mailto:a@b", "v=TLSRPTv1; rua=mailto:c@d"]) == []
    assert parse_tlsrpt_record(["v=spf1 -all"]) == []


def test_report_mail_headers() -> None:
    """T27: multipart/report; report-type="tlsrpt", gzip attachment of the report,
    TLS-Report-Domain/Submitter and TLS-Required: No."""
    report = build_report(
        "d.test", "2024-01-02", [], organization="K", contact="c@k.test", report_id="r1"
    )
    raw = report_mail(
        report,
        domain="d.test",
        day="2024-01-02",
        submitter="mta.k.test",
        sender="postmaster@mta.k.test",
        recipient="tlsrpt@d.test",
        now=1_704_200_000,
    )
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    message = email.message_from_bytes(raw, policy=policy.default)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "tlsrpt"
    assert message["TLS-Required"] == "No"
    assert message["TLS-Report-Domain"] == "d.test"
    assert message["TLS-Report-Submitter"] == "mta.k.test"
    assert message["Subject"].startswith("Report Domain: d.test Submitter: mta.k.test Report-ID:")
    [attachment] = [p for p in message.iter_attachments()]
    assert attachment.get_content_type() == MEDIA_TYPE
    filename = attachment.get_filename()
    assert filename is not None and filename.startswith("mta.k.test!d.test!1704153600!1704239999!")
    assert filename.endswith(".json.gz")
    assert json.loads(gzip.decompress(attachment.get_content())) == report


async def test_sessions_are_reported_by_mail_and_https(
    world: LocalInternet,
    make_domain: MakeDomain,
    tls_agent: TLSAgentFactory,
    database_url: str,
) -> None:
    """T26, T27: a day's deliveries under an MTA-STS testing policy are counted in the
    database; the next day's report goes to rua by mail (queued through the injector) and
    by HTTPS POST (application/tlsrpt+gzip), validates against the schema, and is sent
    only once."""
    domain, _ = make_domain(PeerBehaviour(cert=CertKind.EXPIRED))
    add_mta_sts_host(world, domain.name, mta_sts_policy("testing", [domain.mx[0][1]]))
    server = world.https_server()
    report_host = f"tlsrpt.{domain.name}"
    world.dns.add_address(report_host, server.ip, ttl=0)
    server.add_host(report_host, responses={"/report": HTTPSResponse(200, b"ok")})
    world.dns.add_txt(
        f"_smtp._tls.{domain.name}",
        f"v=TLSRPTv1; rua=mailto:reports@{domain.name},https://{report_host}:{server.port}/report",
        ttl=0,
    )
    now = [dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC).timestamp()]
    store = await Database.open(database_url)
    try:
        tls_store = TLSStore(store.engine)
        agent = tls_agent(tls_store, clock=lambda: now[0])
        results = await agent.deliver(batch(domain.name, messages=3))
        assert all(r.outcome is Outcome.DELIVERED for r in results)
        settings = tls_env(world)
        injector = Injector(queue_store(store), settings)
        queued: list[str] = []

        async def submit(content: bytes, sender: str, recipients: list[str]) -> str:
            message_id = await injector.submit_raw(
                content, sender=sender, recipients=recipients, source="api"
            )
            queued.append(message_id)
            return message_id

        reporter = TLSRPTReporter(settings, tls_store, agent.resolver, submit, clock=lambda: now[0])
        assert await reporter.report_due() == []  # the day is not over yet
        now[0] += DAY
        [done] = await reporter.report_due()
        assert done.failures == [] and len(done.destinations) == 2
        _validate(done.report)
        [entry] = done.report["policies"]
        assert entry["policy"]["policy-type"] == "sts"
        assert entry["summary"]["total-failure-session-count"] >= 1
        assert entry["failure-details"][0]["result-type"] == "certificate-expired"

        [post] = server.requests(report_host)
        assert post.method == "POST" and post.path == "/report"
        assert post.headers["content-type"] == MEDIA_TYPE
        assert json.loads(gzip.decompress(post.body)) == done.report

        [message_id] = queued
        receipt = await queue_store(store).receipt(message_id)
        assert receipt.recipients[0].recipient == f"reports@{domain.name}"
        assert await reporter.report_due() == []  # once per domain and day
    finally:
        await store.close()
