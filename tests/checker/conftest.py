"""Fixtures for checker tests: settings pointed at the world, a checker, an HTTPS host for
MTA-STS policies, and a helper that publishes a policy for a domain."""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from kakitome.checker.service import Checker
from kakitome.config import Settings
from kakitome.testing import CertKind, LocalInternet

POLICY_IP = "127.0.9.1"


@dataclass
class Policy:
    body: str
    status: int = 200
    content_type: str = "text/plain"
    location: str | None = None


class PolicyHost:
    """One HTTPS server for every ``mta-sts.<domain>``: policy and certificate per name."""

    def __init__(self, world: LocalInternet) -> None:
        self.world = world
        self.policies: dict[str, Policy] = {}
        self.contexts: dict[str, ssl.SSLContext] = {}
        default = world.ca.issue(["mta-sts.default.test"]).server_context()
        default.sni_callback = self._sni
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = (self.headers.get("Host") or "").split(":")[0].lower()
                policy = host.policies.get(name)
                if policy is None or self.path != "/.well-known/mta-sts.txt":
                    self.send_error(404)
                    return
                data = policy.body.encode()
                self.send_response(policy.status)
                self.send_header("Content-Type", policy.content_type)
                if policy.location:
                    self.send_header("Location", policy.location)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((POLICY_IP, 0), Handler)
        self.server.socket = default.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _sni(self, sslobj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        if name and name in self.contexts:
            sslobj.context = self.contexts[name]

    def publish(
        self, domain: str, policy: Policy, *, cert: CertKind = CertKind.VALID, record: bool = True
    ) -> None:
        host = f"mta-sts.{domain}"
        self.policies[host] = policy
        self.contexts[host] = self.world.ca.issue([host], cert).server_context()
        self.world.dns.add_address(host, POLICY_IP)
        if record:
            self.world.dns.add_txt(f"_mta-sts.{domain}", "v=STSv1; id=20240101T000000")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free(ip: str) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((ip, 0))
        except OSError:
            return False
    return True


@pytest.fixture(scope="session")
def policy_host(world: LocalInternet) -> Iterator[PolicyHost]:
    """The HTTPS server behind every ``mta-sts.<domain>`` of the world."""
    assert _free(POLICY_IP)
    host = PolicyHost(world)
    yield host
    host.close()


@pytest.fixture
def checker_settings(world: LocalInternet, policy_host: PolicyHost) -> Settings:
    """Settings that point the checker at the world (DNS, CA, SMTP and HTTPS ports)."""
    return world.settings(
        {
            "KAKITOME_CHECKER__PORT": str(world.port),
            "KAKITOME_CHECKER__HTTPS_PORT": str(policy_host.port),
            "KAKITOME_CHECKER__CONNECT_TIMEOUT": "2",
            "KAKITOME_CHECKER__COMMAND_TIMEOUT": "2",
            "KAKITOME_CHECKER__PROBE_TIMEOUT": "6",
            "KAKITOME_CHECKER__POLICY_TIMEOUT": "4",
            "KAKITOME_DNS__TIMEOUT": "2",
        }
    )


@pytest.fixture
def make_checker(checker_settings: Settings) -> Callable[..., Checker]:
    """``make_checker(**settings overrides)``: a fresh checker on the world."""

    def make() -> Checker:
        return Checker(checker_settings)

    return make
