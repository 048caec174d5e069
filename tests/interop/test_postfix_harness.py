"""The private Postfix harness (kakitome.testing.postfix) works: it starts, receives over
verified STARTTLS, logs what was negotiated, relays, and stops without touching the system
instance."""

from __future__ import annotations

import shutil
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
import trustme

from kakitome.testing.postfix import (
    PostfixInstance,
    make_instance_root,
    parse_tls_sessions,
    receiving_instance,
    relay_instance,
)

pytestmark = pytest.mark.postfix

MX_IP = "127.0.0.250"
RELAY_IP = "127.0.0.249"
MX_NAME = "mx.postfix-harness.test"


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def test_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def instance_root() -> Iterator[Path]:
    root = make_instance_root()
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def receiver(
    postfix_bin: str, test_ca: trustme.CA, instance_root: Path
) -> Iterator[PostfixInstance]:
    cert = test_ca.issue_cert(MX_NAME, MX_IP)
    cert_file, key_file = instance_root / "cert.pem", instance_root / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    instance = receiving_instance(
        instance_root / "mx",
        listen=(MX_IP, free_port(MX_IP)),
        cert_file=cert_file,
        key_file=key_file,
        domains=["harness.test"],
        mailbox_dir=instance_root / "mail" / "inbox",
    )
    with instance:
        yield instance


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def delivered(mailbox: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted((mailbox / "new").glob("*"))]


def test_receives_over_verified_starttls_and_logs_the_same_tls(
    receiver: PostfixInstance, test_ca: trustme.CA, instance_root: Path
) -> None:
    """A message sent with STARTTLS verified against the test CA arrives, and the maillog
    names the protocol and cipher the client saw."""
    context = ssl.create_default_context()
    test_ca.configure_trust(context)
    message = EmailMessage()
    message["From"] = "alice@client.test"
    message["To"] = "bob@harness.test"
    message["Subject"] = "harness"
    message.set_content("over TLS\n")
    host, port = receiver.listen
    with smtplib.SMTP(host, port, local_hostname="client.test", timeout=30) as client:
        client.starttls(context=context)
        tls = client.sock
        assert isinstance(tls, ssl.SSLSocket)
        version, cipher = tls.version(), tls.cipher()
        assert cipher is not None
        client.send_message(message)

    mailbox = instance_root / "mail" / "inbox"
    wait_for(lambda: len(delivered(mailbox)) == 1)
    assert b"Subject: harness" in delivered(mailbox)[0]

    sessions = receiver.tls_sessions(direction="from")
    assert len(sessions) == 1
    assert (sessions[0].protocol, sessions[0].cipher) == (version, cipher[0])
    assert sessions[0].peer_ip == "127.0.0.1"
    # The CPU counter (for the benchmarks) sees the instance's work: on a fast machine one
    # session can stay under a clock tick, so more TLS sessions until it shows (bounded).
    for _ in range(30):
        if receiver.cpu_seconds() > 0:
            break
        with smtplib.SMTP(host, port, local_hostname="client.test", timeout=30) as client:
            client.starttls(context=context)
            client.noop()
    assert receiver.cpu_seconds() > 0
    # Resident memory of the running instance (master, qmgr, pickup, ...): tens of MB.
    assert 5 < receiver.resident_mb() < 2000


def test_relay_counts_one_tls_session_per_message_without_reuse(
    receiver: PostfixInstance, test_ca: trustme.CA, instance_root: Path
) -> None:
    """The benchmark relay delivers to a STARTTLS sink through transport_maps, logs the
    handshakes as trusted against the CA file, and empties its queue."""
    ca_file = instance_root / "ca.pem"
    test_ca.cert_pem.write_to_path(str(ca_file))
    root = instance_root / "relay"
    relay = relay_instance(
        root,
        listen=(RELAY_IP, free_port(RELAY_IP)),
        routes={"harness.test": receiver.listen},
        ca_file=ca_file,
    )
    with relay:
        with smtplib.SMTP(*relay.listen, local_hostname="client.test", timeout=30) as client:
            for number in range(3):
                client.sendmail(
                    "alice@client.test", ["bob@harness.test"], f"Subject: {number}\r\n\r\nx\r\n"
                )
        relay.wait_queue_empty(timeout=60)
        wait_for(lambda: len(delivered(instance_root / "mail" / "inbox")) == 3)
        sent = relay.tls_sessions(direction="to")
    assert len(sent) == 3
    assert {session.trust for session in sent} <= {"Trusted", "Verified"}
    assert all(session.peer_port == receiver.listen[1] for session in sent)
    assert relay.master_pid() is None


def test_parse_tls_sessions_reads_both_directions() -> None:
    """The maillog parser reads smtpd's and smtp's handshake records."""
    lines = [
        "Nov 28 00:42:51 mx postfix-x/smtpd[11034]: Anonymous TLS connection established "
        "from localhost[127.0.0.1]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) "
        "key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256",
        "Nov 28 00:42:52 mx postfix/smtp[12]: Trusted TLS connection established to "
        "d1.test[127.0.0.20]:2525: TLSv1.2 with cipher ECDHE-RSA-AES128-GCM-SHA256 "
        "(128/128 bits)",
        "Nov 28 00:42:52 mx postfix/smtp[12]: connect to d2.test[127.0.0.21]:25: refused",
    ]
    first, second = parse_tls_sessions(lines)
    assert (first.service, first.direction, first.trust) == ("smtpd", "from", "Anonymous")
    assert (first.peer_name, first.peer_ip, first.peer_port) == ("localhost", "127.0.0.1", None)
    assert (second.direction, second.peer_ip, second.peer_port) == ("to", "127.0.0.20", 2525)
    assert (second.protocol, second.cipher) == ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")
