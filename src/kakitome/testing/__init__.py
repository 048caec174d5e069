"""``kakitome.testing``: the local internet, for tests and demos (shipped, like
``aiosmtpd.testing``).

- ``LocalInternet`` (world.py): DNS, a CA and MX peers on loopback in one thread;
- ``DNSServer`` (dns_server.py): an authoritative DNS server with a mutable zone;
- ``Peer`` / ``PeerBehaviour`` (mx.py): SMTP receivers that misbehave on request;
- ``TestCA`` / ``CertKind`` (ca.py): a throw-away CA and every kind of bad certificate.

Nothing here leaves 127.0.0.0/8 or ::1.
"""

from kakitome.testing.ca import CertKind, IssuedCert, TestCA, client_context
from kakitome.testing.dns_server import DNSServer, Query
from kakitome.testing.mx import (
    ALWAYS,
    ConnectionRecord,
    Fault,
    Peer,
    PeerBehaviour,
    PeerStats,
    ReceivedMessage,
    StartTLSFailure,
)
from kakitome.testing.world import Domain, LocalInternet

__all__ = [
    "ALWAYS",
    "CertKind",
    "ConnectionRecord",
    "DNSServer",
    "Domain",
    "Fault",
    "IssuedCert",
    "LocalInternet",
    "Peer",
    "PeerBehaviour",
    "PeerStats",
    "Query",
    "ReceivedMessage",
    "StartTLSFailure",
    "TestCA",
    "client_context",
]
