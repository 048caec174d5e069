"""MX peers of the local internet, driven by the stdlib's smtplib and raw sockets."""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Iterator

import pytest

from kakitome.config import load_settings
from kakitome.testing import (
    ALWAYS,
    CertKind,
    Fault,
    LocalInternet,
    Peer,
    PeerBehaviour,
    StartTLSFailure,
)
from tests.fixtures_world import MakeDomain

MESSAGE = b"From: a@src.test\r\nTo: b@dst.test\r\nSubject: hi\r\n\r\n.leading dot\r\nbody\r\n"

FreshPeer = Callable[..., Peer]


def connect(peer: Peer, name: str | None = None) -> smtplib.SMTP:
    """An SMTP client connected to the peer; STARTTLS will verify against ``name``."""
    client = smtplib.SMTP(timeout=5)
    # smtplib's starttls() sends and checks the name it connected to; we connect to an IP.
    client._host = name or peer.hostname  # type: ignore[attr-defined]
    client.connect(peer.ip, peer.port)
    return client


def raw(peer: Peer) -> socket.socket:
    sock = socket.create_connection((peer.ip, peer.port), timeout=5)
    return sock


def read_reply(sock: socket.socket | ssl.SSLSocket, buffer: list[bytes]) -> list[bytes]:
    """Read one (possibly multi-line) reply; ``buffer`` keeps bytes read beyond it."""
    data = b"".join(buffer)
    buffer.clear()
    while True:
        lines = data.split(b"\r\n")
        for i, line in enumerate(lines[:-1]):
            if len(line) >= 4 and line[3:4] == b" ":
                rest = b"\r\n".join(lines[i + 1 :])
                if rest:
                    buffer.append(rest)
                return lines[: i + 1]
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk


def test_starttls_valid_certificate(make_domain: MakeDomain, world: LocalInternet) -> None:
    """A valid certificate verifies against the world's CA; TLS details and SNI are recorded."""
    domain, peer = make_domain()
    mx = domain.mx[0][1]
    with connect(peer, mx) as client:
        client.starttls(context=world.ca.client_context())
        client.sendmail("a@src.test", [f"b@{domain.name}"], MESSAGE)
    (message,) = peer.wait_for_messages(1)
    assert message.tls and message.tls_version in ("TLSv1.2", "TLSv1.3")
    assert message.tls_cipher
    assert message.sni == mx
    assert message.rcpt_tos == (f"b@{domain.name}",)
    assert b"\r\n.leading dot\r\n" in message.data  # dot-unstuffed once
    assert peer.stats().tls_handshakes == 1


def test_system_trust_store_does_not_know_the_ca(make_domain: MakeDomain) -> None:
    """The test CA is not publicly trusted: a default client context rejects a valid peer."""
    domain, peer = make_domain()
    with connect(peer, domain.mx[0][1]) as client, pytest.raises(ssl.SSLCertVerificationError):
        client.starttls(context=ssl.create_default_context())


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (CertKind.EXPIRED, "expired"),
        (CertKind.NOT_YET_VALID, "not yet valid"),
        (CertKind.WRONG_NAME, "mismatch"),
        (CertKind.SELF_SIGNED, "self-signed"),
        (CertKind.WEAK_KEY, "too weak"),
    ],
)
def test_bad_certificates_fail_verification(
    make_domain: MakeDomain, world: LocalInternet, kind: CertKind, reason: str
) -> None:
    """Each bad certificate kind fails verification against the CA, for its own reason."""
    domain, peer = make_domain(PeerBehaviour(cert=kind))
    with connect(peer, domain.mx[0][1]) as client:
        with pytest.raises(ssl.SSLError) as excinfo:
            client.starttls(context=world.ca.client_context())
        assert reason in str(excinfo.value).lower()


@pytest.mark.parametrize("kind", list(CertKind))
def test_bad_certificates_still_encrypt(
    make_domain: MakeDomain, world: LocalInternet, kind: CertKind
) -> None:
    """Without verification every certificate kind gives a working TLS session."""
    domain, peer = make_domain(PeerBehaviour(cert=kind))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with connect(peer, domain.mx[0][1]) as client:
        client.starttls(context=context)
        client.sendmail("a@src.test", [f"b@{domain.name}"], MESSAGE)
    assert peer.wait_for_messages(1)[0].tls


def test_tlsa_data_survives_reissue(fresh_peer: FreshPeer, world: LocalInternet) -> None:
    """Adding MX names re-issues the certificate with the same key, so TLSA 3 1 1 stays valid."""
    peer = fresh_peer()
    before = peer.cert
    assert before is not None
    world.add_domain(world.unique_domain(), mx=[(10, peer)])
    after = peer.cert
    assert after is not None and after.der != before.der
    assert after.tlsa(1, 1) == before.tlsa(1, 1)


def test_no_starttls(make_domain: MakeDomain) -> None:
    """A peer without STARTTLS does not advertise it and answers the command with 502."""
    _, peer = make_domain(PeerBehaviour(starttls=False))
    with connect(peer) as client:
        client.ehlo()
        assert not client.has_extn("starttls")
        assert client.docmd("STARTTLS")[0] == 502


def test_starttls_refused(make_domain: MakeDomain, world: LocalInternet) -> None:
    """STARTTLS refused with 454 leaves a usable plaintext session."""
    domain, peer = make_domain(PeerBehaviour(starttls_failure=StartTLSFailure.REFUSE))
    with connect(peer) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        with pytest.raises(smtplib.SMTPResponseException) as excinfo:
            client.starttls(context=world.ca.client_context())
        assert excinfo.value.smtp_code == 454
        client.sendmail("a@src.test", [f"b@{domain.name}"], MESSAGE)
    assert not peer.wait_for_messages(1)[0].tls


@pytest.mark.parametrize("failure", [StartTLSFailure.CLOSE, StartTLSFailure.GARBAGE])
def test_starttls_handshake_fails(
    make_domain: MakeDomain, world: LocalInternet, failure: StartTLSFailure
) -> None:
    """A 220 to STARTTLS followed by a close or by garbage makes the client's handshake fail."""
    domain, peer = make_domain(PeerBehaviour(starttls_failure=failure))
    client = connect(peer, domain.mx[0][1])
    with pytest.raises((ssl.SSLError, OSError, smtplib.SMTPServerDisconnected)):
        client.starttls(context=world.ca.client_context())
    client.close()
    assert peer.stats().tls_handshakes == 0


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1 is deprecated:DeprecationWarning")
def test_tls_1_0_only_peer_fails_modern_client(
    make_domain: MakeDomain, world: LocalInternet
) -> None:
    """A peer that offers only TLS 1.0 fails the handshake with a TLS >= 1.2 client."""
    domain, peer = make_domain(
        PeerBehaviour(tls_min_version=ssl.TLSVersion.TLSv1, tls_max_version=ssl.TLSVersion.TLSv1)
    )
    client = connect(peer, domain.mx[0][1])
    context = world.ca.client_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        client.starttls(context=context)
    client.close()
    deadline = time.monotonic() + 5
    while peer.stats().tls_failures == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert peer.stats().tls_failures == 1
    assert peer.stats().tls_handshakes == 0


def test_tls_1_2_maximum_is_respected(make_domain: MakeDomain, world: LocalInternet) -> None:
    """A peer limited to TLS 1.2 negotiates TLS 1.2 and the record says so."""
    domain, peer = make_domain(PeerBehaviour(tls_max_version=ssl.TLSVersion.TLSv1_2))
    with connect(peer, domain.mx[0][1]) as client:
        client.starttls(context=world.ca.client_context())
        client.sendmail("a@src.test", [f"b@{domain.name}"], MESSAGE)
    assert peer.wait_for_messages(1)[0].tls_version == "TLSv1.2"


def test_state_reset_after_starttls(make_domain: MakeDomain, world: LocalInternet) -> None:
    """After STARTTLS the session forgets EHLO: MAIL before a new EHLO gets 503 (T1)."""
    domain, peer = make_domain()
    with connect(peer, domain.mx[0][1]) as client:
        client.starttls(context=world.ca.client_context())
        assert client.docmd("MAIL", "FROM:<a@src.test>")[0] == 503
        code, text = client.ehlo()
        assert code == 250 and b"STARTTLS" not in text


def test_plaintext_pipelined_behind_starttls_is_discarded(
    make_domain: MakeDomain, world: LocalInternet
) -> None:
    """Commands sent in the same segment as STARTTLS are thrown away, never run in TLS (T2)."""
    domain, peer = make_domain()
    sock = raw(peer)
    buffer: list[bytes] = []
    read_reply(sock, buffer)
    sock.sendall(b"EHLO client.test\r\n")
    read_reply(sock, buffer)
    sock.sendall(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
    assert read_reply(sock, buffer)[0].startswith(b"220")
    tls = world.ca.client_context().wrap_socket(sock, server_hostname=domain.mx[0][1])
    tls.sendall(b"EHLO client.test\r\n")
    read_reply(tls, buffer)
    tls.sendall(b"MAIL FROM:<a@src.test>\r\n")
    assert read_reply(tls, buffer)[0].startswith(b"250")  # no "nested MAIL": nothing ran
    tls.sendall(b"QUIT\r\n")
    read_reply(tls, buffer)
    tls.close()
    (record,) = peer.connections()
    assert record.discarded_after_starttls
    assert not any("injected" in c for c in record.commands)


def test_requiretls_only_after_starttls(make_domain: MakeDomain, world: LocalInternet) -> None:
    """REQUIRETLS is advertised inside TLS only, and MAIL ... REQUIRETLS in plaintext is refused."""
    domain, peer = make_domain(PeerBehaviour(requiretls=True))
    with connect(peer, domain.mx[0][1]) as client:
        client.ehlo()
        assert not client.has_extn("requiretls")
        assert client.docmd("MAIL", "FROM:<a@src.test> REQUIRETLS")[0] == 555
        client.starttls(context=world.ca.client_context())
        client.ehlo()
        assert client.has_extn("requiretls")
        client.sendmail("a@src.test", [f"b@{domain.name}"], MESSAGE, mail_options=["REQUIRETLS"])
    assert "REQUIRETLS" in peer.wait_for_messages(1)[0].mail_options


def test_extensions_follow_the_behaviour(make_domain: MakeDomain) -> None:
    """Each extension flag switches its EHLO keyword on or off."""
    _, peer = make_domain(
        PeerBehaviour(pipelining=False, eightbitmime=False, smtputf8=False, dsn=True, size=1000)
    )
    with connect(peer) as client:
        client.ehlo()
        assert not client.has_extn("pipelining")
        assert not client.has_extn("8bitmime")
        assert not client.has_extn("smtputf8")
        assert client.has_extn("dsn")
        assert client.has_extn("enhancedstatuscodes")
        assert client.esmtp_features["size"] == "1000"
        with pytest.raises(smtplib.SMTPSenderRefused) as excinfo:
            client.sendmail("a@src.test", ["b@dst.test"], b"x" * 2000)
        assert excinfo.value.smtp_code == 552


def test_rcpt_4xx_for_first_attempts_only(make_domain: MakeDomain) -> None:
    """A 451 at RCPT for the first two attempts, then the recipient is accepted."""
    domain, peer = make_domain(
        PeerBehaviour(rcpt_fault=Fault("451 4.3.0 Try again later", times=2))
    )
    rcpt = f"b@{domain.name}"
    for _ in range(2):
        with connect(peer) as client, pytest.raises(smtplib.SMTPRecipientsRefused) as excinfo:
            client.sendmail("a@src.test", [rcpt], MESSAGE)
        assert excinfo.value.recipients[rcpt][0] == 451
    with connect(peer) as client:
        client.sendmail("a@src.test", [rcpt], MESSAGE)
    assert [m.rcpt_tos for m in peer.messages()] == [(rcpt,)]


def test_rcpt_5xx_for_some_recipients(make_domain: MakeDomain) -> None:
    """A 550 at RCPT for listed recipients only; the others get the message."""
    domain, peer = make_domain()
    bad, good = f"gone@{domain.name}", f"here@{domain.name}"
    peer.set_behaviour(
        PeerBehaviour(rcpt_fault=Fault("550 5.1.1 No such user", recipients=frozenset({bad})))
    )
    with connect(peer) as client:
        refused = client.sendmail("a@src.test", [bad, good], MESSAGE)
    assert refused == {bad: (550, b"5.1.1 No such user")}
    assert peer.wait_for_messages(1)[0].rcpt_tos == (good,)


@pytest.mark.parametrize("reply", ["452 4.3.1 Insufficient storage", "554 5.6.0 Rejected"])
def test_fault_at_end_of_data(make_domain: MakeDomain, reply: str) -> None:
    """A fault after the final dot refuses the message and records nothing."""
    domain, peer = make_domain(PeerBehaviour(data_fault=Fault(reply)))
    with connect(peer) as client, pytest.raises(smtplib.SMTPDataError) as excinfo:
        client.sendmail("a@src.test", [f"b@{domain.name}"], MESSAGE)
    assert excinfo.value.smtp_code == int(reply[:3])
    assert peer.messages() == []
    assert peer.stats().transactions == 1


def test_drop_in_data_first_time(make_domain: MakeDomain) -> None:
    """The connection drops in the middle of DATA the first time; the retry is accepted."""
    domain, peer = make_domain(PeerBehaviour(drop_in_data=1))
    client = connect(peer)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.sendmail("a@src.test", [f"b@{domain.name}"], MESSAGE)
    client.close()
    assert peer.messages() == []
    with connect(peer) as client:
        client.sendmail("a@src.test", [f"b@{domain.name}"], MESSAGE)
    assert len(peer.wait_for_messages(1)) == 1
    assert peer.stats().drops == 1


def test_drop_in_data_always(make_domain: MakeDomain) -> None:
    """With ALWAYS, every DATA is cut off."""
    domain, peer = make_domain(PeerBehaviour(drop_in_data=ALWAYS))
    for _ in range(3):
        client = connect(peer)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.sendmail("a@src.test", [f"b@{domain.name}"], MESSAGE)
        client.close()
    assert peer.stats().drops == 3 and peer.messages() == []


def test_pipelined_commands_answered_in_order(make_domain: MakeDomain) -> None:
    """MAIL, three RCPTs (one refused) and DATA in one segment get five replies in order."""
    domain, peer = make_domain()
    bad = f"x@{domain.name}"
    peer.set_behaviour(
        PeerBehaviour(rcpt_fault=Fault("550 5.1.1 No such user", recipients=frozenset({bad})))
    )
    sock = raw(peer)
    buffer: list[bytes] = []
    read_reply(sock, buffer)
    sock.sendall(b"EHLO client.test\r\n")
    assert b"PIPELINING" in b"".join(read_reply(sock, buffer))
    sock.sendall(
        b"MAIL FROM:<a@src.test>\r\n"
        + f"RCPT TO:<b@{domain.name}>\r\nRCPT TO:<{bad}>\r\nRCPT TO:<c@{domain.name}>\r\n".encode()
        + b"DATA\r\n"
    )
    codes = [read_reply(sock, buffer)[0][:3] for _ in range(5)]
    assert codes == [b"250", b"250", b"550", b"250", b"354"]
    sock.sendall(b"Subject: p\r\n\r\n..x\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n")
    codes = [read_reply(sock, buffer)[0][:3] for _ in range(4)]
    assert codes == [b"250", b"250", b"250", b"221"]
    sock.close()
    (message,) = peer.wait_for_messages(1)
    assert message.rcpt_tos == (f"b@{domain.name}", f"c@{domain.name}")
    assert message.data == b"Subject: p\r\n\r\n.x\r\n"
    assert peer.connections()[0].max_pipeline >= 4


def test_bare_lf_refused_when_strict(make_domain: MakeDomain) -> None:
    """With strict on, a message with a bare LF is refused (T10); with strict off it is taken."""
    domain, peer = make_domain()
    smuggled = b"Subject: s\r\n\r\nline\n.\r\nMAIL FROM:<evil@x.test>\r\n"
    with connect(peer) as client, pytest.raises(smtplib.SMTPDataError) as excinfo:
        client.sendmail("a@src.test", [f"b@{domain.name}"], smuggled)
    assert excinfo.value.smtp_code == 550
    assert peer.stats().rejected_bare_lf == 1
    peer.set_behaviour(PeerBehaviour(strict=False))
    sock = raw(peer)
    buffer: list[bytes] = []
    read_reply(sock, buffer)
    sock.sendall(
        b"HELO c.test\r\nMAIL FROM:<a@src.test>\r\n"
        + f"RCPT TO:<b@{domain.name}>\r\n".encode()
        + b"DATA\r\n"
    )
    for _ in range(4):
        read_reply(sock, buffer)
    sock.sendall(b"a\nb\r\n.\r\n")
    assert read_reply(sock, buffer)[0].startswith(b"250")
    sock.close()
    assert peer.wait_for_messages(1)[0].data == b"a\nb\r\n"


def test_peer_down_and_up(fresh_peer: FreshPeer) -> None:
    """A down peer refuses connections; set back up, it accepts them again."""
    peer = fresh_peer(PeerBehaviour(down=True))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((peer.ip, peer.port), timeout=2)
    peer.set_behaviour(PeerBehaviour())
    with connect(peer) as client:
        assert client.noop()[0] == 250


def test_slow_replies(fresh_peer: FreshPeer) -> None:
    """With delay=0.2 the greeting and every reply come at least 0.2 s late."""
    peer = fresh_peer(PeerBehaviour(delay=0.2))
    start = time.monotonic()
    with connect(peer) as client:
        client.noop()
        elapsed = time.monotonic() - start
    assert elapsed >= 0.4


def test_greeting_fault(fresh_peer: FreshPeer) -> None:
    """A greeting fault answers 554 and closes."""
    peer = fresh_peer(PeerBehaviour(greeting_fault=Fault("554 5.3.2 Go away")))
    client = smtplib.SMTP(timeout=5)
    code, _ = client.connect(peer.ip, peer.port)
    assert code == 554
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
    client.close()


def test_commands_out_of_order(fresh_peer: FreshPeer) -> None:
    """MAIL before EHLO, RCPT before MAIL and DATA before RCPT get 503/503/503."""
    peer = fresh_peer()
    with connect(peer) as client:
        assert client.docmd("MAIL", "FROM:<a@src.test>")[0] == 503
        client.ehlo()
        assert client.docmd("RCPT", "TO:<b@dst.test>")[0] == 503
        assert client.docmd("DATA")[0] == 503
        assert client.docmd("BOGUS")[0] == 500
        assert client.docmd("STARTTLS", "now")[0] == 501


def test_null_sender_and_many_messages_per_connection(fresh_peer: FreshPeer) -> None:
    """The null sender is recorded as "" and several messages share one connection id."""
    peer = fresh_peer()
    with connect(peer) as client:
        for i in range(3):
            client.sendmail("", [f"r{i}@dst.test"], MESSAGE)
    messages = peer.wait_for_messages(3)
    assert [m.mail_from for m in messages] == ["", "", ""]
    assert len({m.connection_id for m in messages}) == 1
    assert peer.stats().connections == 1 and peer.stats().messages == 3


def test_implicit_mx_domain(fresh_peer: FreshPeer, world: LocalInternet) -> None:
    """An implicit-MX domain points its A record at the peer, whose certificate names it."""
    peer = fresh_peer()
    name = world.unique_domain()
    domain = world.add_domain(name, implicit=peer)
    assert domain.implicit and domain.mx == ()
    with connect(peer, name) as client:
        client.starttls(context=world.ca.client_context())
        assert client.ehlo()[0] == 250


@pytest.fixture
def ipv6_peer(world: LocalInternet) -> Iterator[Peer]:
    try:
        peer = world.add_peer("::1")
    except OSError as exc:  # no IPv6 on this host, or [::1]:port taken
        pytest.skip(f"::1 not usable: {exc}")
    yield peer
    world.remove_peer(peer)


def test_ipv6_peer(ipv6_peer: Peer, world: LocalInternet) -> None:
    """A peer on [::1] accepts mail over IPv6 and its name has an AAAA record."""
    with connect(ipv6_peer) as client:
        client.sendmail("a@src.test", ["b@dst.test"], MESSAGE)
    assert ipv6_peer.wait_for_messages(1)[0].client[0] == "::1"


def test_env_points_the_service_at_the_world(world: LocalInternet) -> None:
    """env() parses into Settings that name the world's DNS, SMTP port and CA file only."""
    settings = load_settings(environ=world.env())
    assert settings.dns.nameservers == (world.dns.nameserver,)
    assert settings.delivery.smtp_port == world.port
    assert settings.tls.ca_file == str(world.ca.ca_file)
    assert settings.tls.ca_file_only


def test_non_loopback_addresses_are_refused(world: LocalInternet) -> None:
    """add_peer refuses an address outside 127.0.0.0/8 and ::1."""
    with pytest.raises(ValueError, match="loopback"):
        world.add_peer("192.0.2.1")


def test_sink_throughput(fresh_peer: FreshPeer, world: LocalInternet) -> None:
    """One connection carries hundreds of messages/s, plaintext and TLS (smtplib is the bottleneck).

    The floor is low because the client shares this process (and the GIL) and the CI
    machine runs other work; the printed rates are what the module docstring quotes.
    """
    peer = fresh_peer(PeerBehaviour(keep_data=False, transcript=False))
    body = b"Subject: bench\r\n\r\n" + b"x" * 1000 + b"\r\n"
    rates = {}
    for label in ("plain", "tls"):
        with connect(peer) as client:
            if label == "tls":
                client.starttls(context=world.ca.client_context())
            client.ehlo()
            count = 2000
            start = time.perf_counter()
            for _ in range(count):
                client.sendmail("a@src.test", ["b@dst.test"], body)
            rates[label] = count / (time.perf_counter() - start)
    print(f"sink: {rates['plain']:.0f} msg/s plaintext, {rates['tls']:.0f} msg/s TLS")
    assert peer.stats().messages == 4000
    assert rates["plain"] > 300 and rates["tls"] > 200
