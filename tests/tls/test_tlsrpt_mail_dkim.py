"""Tests (T27): the TLS-RPT report mail that ``kakitome serve`` really queues is DKIM-signed
with its From domain's key, and an independent verifier (Debian's Mail::DKIM) accepts the
signature with the public key it looks up itself in the test world's DNS.

The path is the worker role's: ``runtime.serve_async`` starts
``kakitome.delivery.tlsrpt_task.tlsrpt_task`` over the process's ``Services`` (the one
``Injector`` with ``DomainSigning``, whose keys ``Services.run_refresh`` reloads) and runs
``TLSRPTReporter``; the tests run that task on a SQLite file with one finished day of
session counts, then read the queued message back from the store.
"""

from __future__ import annotations

import asyncio
import email
import gzip
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import select

from kakitome.config import Settings
from kakitome.delivery.tlsrpt_task import tlsrpt_task
from kakitome.dns.resolver import Resolver
from kakitome.domains.service import DomainService
from kakitome.services import open_services
from kakitome.store.database import Database
from kakitome.store.schema import messages
from kakitome.testing import LocalInternet
from kakitome.tls.store import TLSStore
from kakitome.tls.tlsrpt import MEDIA_TYPE, ReportPolicy, SessionRecord

pytestmark = pytest.mark.peers

DAY = "2024-05-01"  # finished long ago: due at the task's first round
WAIT = 15.0

# Mail::DKIM with its own DNS look-ups, sent to the world's DNS server (host, port).
VERIFY_FROM_DNS = r"""
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Net::DNS;
my ($host, $port) = @ARGV;
Mail::DKIM::DNS::resolver(
    Net::DNS::Resolver->new(nameservers => [$host], port => $port, recurse => 1, retry => 2)
);
my $dkim = Mail::DKIM::Verifier->new();
binmode STDIN;
while (my $line = <STDIN>) {
    $line =~ s/\015?\012\z/\015\012/;
    $dkim->PRINT($line);
}
$dkim->CLOSE;
foreach my $sig ($dkim->signatures) {
    print join("\t", $sig->algorithm, $sig->domain, $sig->result), "\n";
}
"""


@dataclass
class ReportWorld:
    """One test's names and settings: a sending domain (the report's From), a policy
    domain with ``rua=mailto:``, and a SQLite file."""

    world: LocalInternet
    sender_domain: str
    policy_domain: str
    settings: Settings


@pytest.fixture
def report_world(world: LocalInternet, tmp_path: Path) -> Iterator[ReportWorld]:
    """Settings for the TLS-RPT task; the names are removed from DNS afterwards."""
    sender_domain = world.unique_domain("rptfrom")
    policy_domain = world.unique_domain("rptpol")
    secret = tmp_path / "secret.key"
    secret.write_text("0123456789abcdef0123456789abcdef\n")
    world.dns.add_txt(
        f"_smtp._tls.{policy_domain}", f"v=TLSRPTv1; rua=mailto:reports@{policy_domain}", ttl=0
    )
    settings = world.settings(
        {
            "KAKITOME_DATABASE__URL": f"sqlite:///{tmp_path / 'db' / 'kakitome.db'}",
            "KAKITOME_DELIVERY__HELO_HOSTNAME": f"mta.{sender_domain}",
            "KAKITOME_DOMAINS__KEY_FILE": str(secret),
            "KAKITOME_PATHS__DATA_DIR": str(tmp_path / "var"),
            "KAKITOME_DNS__TIMEOUT": "1",
            "KAKITOME_TLSRPT__SENDER": f"tlsrpt@{sender_domain}",
            # Short rounds and key reloads, so the second test needs no long wait.
            "KAKITOME_TLSRPT__INTERVAL": "0.2",
            "KAKITOME_DOMAINS__SIGNER_REFRESH": "0.2",
        }
    )
    yield ReportWorld(world, sender_domain, policy_domain, settings)
    world.dns.remove_tree(sender_domain)
    world.dns.remove_tree(policy_domain)


@pytest.fixture
async def report_store(report_world: ReportWorld) -> AsyncIterator[Database]:
    """The store, with one finished day of session counts for the policy domain."""
    store = await Database.open(report_world.settings.database.url, pool_size=2)
    policy_ = ReportPolicy(report_world.policy_domain)
    sessions = [
        SessionRecord(DAY, policy_, f"mx.{report_world.policy_domain}", "192.0.2.7", None, count=5),
        SessionRecord(
            DAY, policy_, f"mx.{report_world.policy_domain}", "192.0.2.7",
            "certificate-expired", count=2,
        ),
    ]  # fmt: skip
    await TLSStore(store.engine).record_sessions(sessions)
    try:
        yield store
    finally:
        await store.close()


async def _add_sending_domain(store: Database, rw: ReportWorld) -> None:
    """``kakitome domain add`` for the report's From domain, its DKIM records published."""
    service = DomainService(store, rw.settings)
    await service.add(rw.sender_domain)
    for record in (await service.records(rw.sender_domain)).to_dict()["records"]:
        if record["purpose"] == "dkim":
            rw.world.dns.add_txt(record["name"], record["value"], ttl=0)


async def _run_task_until_queued(store: Database, rw: ReportWorld, before: float = 0.0) -> bytes:
    """Run the worker role's TLS-RPT task until a message is queued; its stored content.
    ``before``: seconds to let the task run before the sending domain is added (0: the
    domain is added first)."""
    if not before:
        await _add_sending_domain(store, rw)
    stop = asyncio.Event()
    services = await open_services(rw.settings, store=store)
    refresh = asyncio.create_task(services.run_refresh(stop))  # as `serve` runs it
    task = asyncio.create_task(tlsrpt_task(services, Resolver(rw.settings.dns), stop))
    try:
        if before:
            await asyncio.sleep(before)
            await _add_sending_domain(store, rw)
        async with asyncio.timeout(WAIT):
            while True:
                async with store.engine.connect() as conn:
                    rows = (await conn.execute(select(messages.c.content))).scalars().all()
                if rows:
                    break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT)
        await asyncio.wait_for(refresh, WAIT)
    [content] = rows
    assert isinstance(content, bytes)
    return content


def _mail_dkim(perl: str, world: LocalInternet, content: bytes) -> list[str]:
    """Mail::DKIM's ``algorithm domain result`` per signature, keys from the world's DNS."""
    host, _, port = world.nameserver.rpartition(":")
    run = subprocess.run(
        [perl, "-e", VERIFY_FROM_DNS, host.strip("[]"), port],
        input=content, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr.decode()
    return [" ".join(line.split("\t")) for line in run.stdout.decode().splitlines()]


def _tamper(content: bytes) -> bytes:
    """The same message with one letter of the human-readable part changed."""
    changed = content.replace(b"aggregate TLS report", b"aggregate TLS rEport", 1)
    assert changed != content
    return changed


async def test_report_mail_is_signed_and_mail_dkim_accepts_it(
    report_world: ReportWorld, report_store: Database, perl_mail_dkim: str
) -> None:
    """T27: the report the TLS-RPT task queues is the RFC 8460 §5.3 mail (multipart/report;
    report-type="tlsrpt", gzip attachment, TLS-Required: No) with a DKIM signature of its
    From domain that Mail::DKIM passes with the key from DNS, and fails once changed."""
    rw = report_world
    content = await _run_task_until_queued(report_store, rw)

    message = email.message_from_bytes(content, policy=policy.default)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "tlsrpt"
    assert message["TLS-Required"] == "No"
    assert message["From"] == f"tlsrpt@{rw.sender_domain}"
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == MEDIA_TYPE
    report = json.loads(gzip.decompress(attachment.get_content()))
    assert report["policies"][0]["policy"]["policy-domain"] == rw.policy_domain
    assert report["policies"][0]["summary"]["total-failure-session-count"] == 2
    signatures = message.get_all("DKIM-Signature") or []
    assert signatures and all(f"d={rw.sender_domain};" in s.replace(" ", "") for s in signatures)
    # The signed fields include the report's media type and From.
    h = str(signatures[0]).replace("\r\n", "").replace(" ", "").lower().split("h=")[1]
    assert "content-type" in h.split(";")[0] and "from" in h.split(";")[0]

    results = _mail_dkim(perl_mail_dkim, rw.world, content)
    assert results[0] == f"rsa-sha256 {rw.sender_domain} pass", results
    assert _mail_dkim(perl_mail_dkim, rw.world, _tamper(content))[0] == (
        f"rsa-sha256 {rw.sender_domain} fail"
    )


async def test_a_domain_added_after_start_signs_the_next_round(
    report_world: ReportWorld, report_store: Database, perl_mail_dkim: str
) -> None:
    """T27: the task reloads the DKIM keys (``domains.signer_refresh``): a report whose From
    domain was configured only after the task started is queued signed, without a
    restart, and Mail::DKIM passes it."""
    rw = report_world
    content = await _run_task_until_queued(report_store, rw, before=0.5)
    results = _mail_dkim(perl_mail_dkim, rw.world, content)
    assert results[0] == f"rsa-sha256 {rw.sender_domain} pass", results
