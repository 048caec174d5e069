"""HTTPS hosts for the local internet: MTA-STS policy hosts and TLS-RPT report receivers.

``HTTPSServer`` listens on one loopback address and port and serves any number of host
names, chosen by SNI (or the ``Host`` header when the client sent no SNI), each with a
certificate from the world's test CA of any ``CertKind`` and a response per path: status,
content type, body, ``Location`` for redirects, a delay. Every request (host, method,
path, headers, body) is recorded, so a test can see that a TLS-RPT POST arrived.

``add_mta_sts_host`` publishes a domain's MTA-STS set-up in the world: the
``_mta-sts.<domain>`` TXT record (TTL 0, so changes are seen at once), the address of
``mta-sts.<domain>`` and the policy at ``/.well-known/mta-sts.txt``.

It talks only to clients on its loopback address, answers HTTP/1.1 with
``Connection: close``, and bounds what it reads: request head ``MAX_HEAD`` bytes, body
``MAX_BODY`` bytes, ``READ_TIMEOUT`` seconds per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING

from kakitome.testing._loop import LoopThread
from kakitome.testing.ca import CertKind, IssuedCert, TestCA

if TYPE_CHECKING:
    from kakitome.testing.world import LocalInternet

__all__ = [
    "HTTPSRequest",
    "HTTPSResponse",
    "HTTPSServer",
    "add_mta_sts_host",
    "mta_sts_policy",
]

MAX_HEAD = 16 * 1024
MAX_BODY = 1024 * 1024
READ_TIMEOUT = 10.0
WELL_KNOWN = "/.well-known/mta-sts.txt"


@dataclass(frozen=True, slots=True)
class HTTPSResponse:
    status: int = 200
    body: bytes = b""
    content_type: str | None = "text/plain"
    location: str | None = None
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class HTTPSRequest:
    host: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class _Host:
    name: str
    cert: IssuedCert
    context: ssl.SSLContext
    responses: dict[str, HTTPSResponse] = field(default_factory=dict)


class HTTPSServer:
    """Virtual HTTPS hosts on one loopback address; thread-safe."""

    def __init__(self, ip: str, port: int, ca: TestCA) -> None:
        self.ip = ip
        self.port = port
        self.ca = ca
        self._lock = threading.Lock()
        self._hosts: dict[str, _Host] = {}
        self._requests: list[HTTPSRequest] = []
        self._sni: dict[int, str] = {}
        default = ca.issue(["https-default.invalid"])
        self._default = default.server_context()
        self._default.sni_callback = self._on_sni
        self._server: asyncio.Server | None = None
        self._loop_thread: LoopThread | None = None

    # -- hosts --------------------------------------------------------------------------

    def add_host(
        self,
        name: str,
        *,
        cert: CertKind = CertKind.VALID,
        responses: dict[str, HTTPSResponse] | None = None,
    ) -> None:
        """Serve ``name`` with a certificate of ``cert`` kind (re-issued when called again)."""
        name = name.lower().rstrip(".")
        issued = self.ca.issue([name], cert)
        ctx = issued.server_context(minimum_version=ssl.TLSVersion.TLSv1_2)
        with self._lock:
            old = self._hosts.get(name)
            kept = dict(old.responses) if old else {}
            kept.update(responses or {})
            self._hosts[name] = _Host(name, issued, ctx, kept)

    def set_response(self, name: str, path: str, response: HTTPSResponse) -> None:
        with self._lock:
            self._hosts[name.lower().rstrip(".")].responses[path] = response

    def requests(self, host: str | None = None) -> list[HTTPSRequest]:
        with self._lock:
            return [r for r in self._requests if host is None or r.host == host]

    def _on_sni(self, sslobj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        if name is None:
            return
        with self._lock:
            host = self._hosts.get(name.lower())
            if len(self._sni) > 10_000:
                self._sni.clear()
            self._sni[id(sslobj)] = name.lower()
        if host is not None:
            sslobj.context = host.context

    # -- life cycle -----------------------------------------------------------------------

    def start(self, loop_thread: LoopThread) -> HTTPSServer:
        self._loop_thread = loop_thread
        loop_thread.call(self.astart())
        return self

    async def astart(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.ip, self.port, ssl=self._default, ssl_handshake_timeout=READ_TIMEOUT
        )
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]

    async def astop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def stop(self) -> None:
        if self._loop_thread is not None:
            with contextlib.suppress(RuntimeError):
                self._loop_thread.call(self.astop())
            self._loop_thread = None

    # -- serving --------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
                if len(head) > MAX_HEAD:
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = [*lines[0].split(" ", 2), "", ""][:3]
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    key, sep, value = line.partition(":")
                    if sep:
                        headers[key.strip().lower()] = value.strip()
                length = min(int(headers.get("content-length", "0") or 0), MAX_BODY)
                body = await reader.readexactly(length) if length else b""
            sslobj = writer.get_extra_info("ssl_object")
            with self._lock:
                sni = self._sni.pop(id(sslobj), None)
            host_name = sni or headers.get("host", "").split(":")[0].lower()
            with self._lock:
                self._requests.append(HTTPSRequest(host_name, method, path, headers, body))
                host = self._hosts.get(host_name)
                response = host.responses.get(path) if host else None
            if response is None:
                response = HTTPSResponse(404, b"not found\n")
            if response.delay:
                await asyncio.sleep(response.delay)
            try:
                reason = HTTPStatus(response.status).phrase
            except ValueError:
                reason = ""
            out = [f"HTTP/1.1 {response.status} {reason}"]
            if response.content_type is not None:
                out.append(f"Content-Type: {response.content_type}")
            if response.location is not None:
                out.append(f"Location: {response.location}")
            out += [f"Content-Length: {len(response.body)}", "Connection: close", "", ""]
            writer.write("\r\n".join(out).encode("latin-1") + response.body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except (ConnectionError, ssl.SSLError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def mta_sts_policy(
    mode: str = "enforce", mx: tuple[str, ...] | list[str] = (), max_age: int | str = 86400
) -> str:
    """A policy text in RFC 8461 §3.2 form (``version`` first, CRLF line ends)."""
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
    return "\r\n".join(lines) + "\r\n"


def add_mta_sts_host(
    world: LocalInternet,
    domain: str,
    policy: str | HTTPSResponse,
    *,
    policy_id: str = "20240101T000000",
    txt: str | None = None,
    cert: CertKind = CertKind.VALID,
) -> HTTPSServer:
    """Publish an MTA-STS domain: TXT record, policy host address, and the policy.

    ``txt`` replaces the TXT record text (``v=STSv1; id=<policy_id>``); ``policy`` is
    the body served as ``text/plain`` or a full ``HTTPSResponse``.
    """
    server = world.https_server()
    host = f"mta-sts.{domain}"
    world.dns.remove(f"_mta-sts.{domain}", "TXT")
    world.dns.add_txt(f"_mta-sts.{domain}", txt or f"v=STSv1; id={policy_id}", ttl=0)
    world.dns.remove(host, "A")
    world.dns.add_address(host, server.ip, ttl=0)
    response = policy if isinstance(policy, HTTPSResponse) else HTTPSResponse(body=policy.encode())
    server.add_host(host, cert=cert, responses={WELL_KNOWN: response})
    return server
