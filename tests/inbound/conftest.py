"""Fixtures for the inbound listeners: an ``InboundService`` on this test's event loop,
its stores, and helpers to talk to it (swaks as a subprocess, raw sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from kakitome.config import Settings, load_settings
from kakitome.inbound.server import InboundService
from kakitome.inbound.store import InboundStore
from kakitome.injection import Injector
from kakitome.services import open_services
from kakitome.store.database import Database
from kakitome.testing import LocalInternet

HOSTNAME = "mx.kakitome.test"
INBOUND_DOMAIN = "in.kakitome.test"
RETURN_PATH_DOMAIN = "bounce.kakitome.test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Running:
    settings: Settings
    store: Database
    inbound: InboundStore
    service: InboundService
    injector: Injector
    ca_file: Path

    @property
    def mx(self) -> int:
        return self.service.ports["mx"]

    @property
    def submission(self) -> int:
        return self.service.ports["submission"]

    @property
    def submissions(self) -> int:
        return self.service.ports["submissions"]


StartInbound = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_inbound(tmp_path: Path, world: LocalInternet) -> AsyncIterator[StartInbound]:
    """``await start_inbound(database_url=None, **env)``: listeners on
    free loopback ports with a test-CA certificate, on SQLite in ``tmp_path`` or on
    ``database_url`` (pass the ``database_url`` fixture to run on both engines); ``env``
    adds ``KAKITOME_*`` overrides (e.g. ``INBOUND__MAX_RECIPIENTS``; empty
    ``INBOUND__CERT_FILE`` and ``INBOUND__KEY_FILE`` for no certificate, and
    ``INBOUND__SELF_SIGNED_CERTIFICATE="false"`` to make none either: no TLS at all)."""
    started: list[Running] = []
    issued = world.ca.issue([HOSTNAME])

    async def start(database_url: str | None = None, **extra: str) -> Running:
        env = {
            **world.env(),
            "KAKITOME_DATABASE__URL": database_url
            or f"sqlite:///{tmp_path / 'db' / 'kakitome.db'}",
            "KAKITOME_PATHS__DATA_DIR": str(tmp_path / "data"),
            "KAKITOME_DELIVERY__HELO_HOSTNAME": HOSTNAME,
            "KAKITOME_INBOUND__BIND_HOST": "127.0.0.1",
            "KAKITOME_INBOUND__MX_PORT": str(free_port()),
            "KAKITOME_INBOUND__SUBMISSION_PORT": str(free_port()),
            "KAKITOME_INBOUND__SUBMISSIONS_PORT": str(free_port()),
            "KAKITOME_INBOUND__CERT_FILE": str(issued.cert_file),
            "KAKITOME_INBOUND__KEY_FILE": str(issued.key_file),
            "KAKITOME_INBOUND__DOMAINS": INBOUND_DOMAIN,
            "KAKITOME_INBOUND__RETURN_PATH_DOMAINS": RETURN_PATH_DOMAIN,
            "KAKITOME_INBOUND__AUTH_FAILURE_DELAY": "0.01",
            "KAKITOME_DOMAINS__ALLOW_UNCONFIGURED_FROM": "true",
        }
        env.update({f"KAKITOME_{k}": v for k, v in extra.items()})
        settings = load_settings(environ=env)
        store = await Database.open(settings.database.url)
        services = await open_services(settings, store=store)
        injector = services.injector
        service = InboundService(services)
        await service.start()
        running = Running(
            settings, store, service.inbound_store, service, injector, world.ca.ca_file
        )
        started.append(running)
        return running

    yield start
    for running in started:
        await running.service.stop()
        await running.store.close()


async def run_swaks(swaks: str, *args: str, timeout: float = 30.0) -> tuple[int, str]:  # noqa: ASYNC109
    """Run swaks without blocking the loop that serves it; (exit status, transcript)."""
    proc = await asyncio.create_subprocess_exec(
        swaks,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode("utf-8", "replace")


class RawClient:
    """A line-oriented SMTP client over a raw socket, for what well-behaved clients won't do."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, *, tls: bool = False) -> RawClient:
        ctx = None
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        client = cls(reader, writer)
        await client.reply()
        return client

    async def reply(self, timeout: float = 10.0) -> str:  # noqa: ASYNC109
        """One whole (possibly multi-line) reply."""
        lines: list[str] = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                raise ConnectionError("connection closed: " + "".join(lines))
            lines.append(line.decode("utf-8", "replace"))
            if len(line) < 4 or line[3:4] != b"-":
                return "".join(lines)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def cmd(self, line: str) -> str:
        await self.send(line.encode() + b"\r\n")
        return await self.reply()

    async def starttls(self) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        await self.writer.start_tls(ctx)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()
