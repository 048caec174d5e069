"""Held inbound mail for the API and UI tests: a real HTTP receiver on loopback that
forward routes POST to (``hook_receiver``), and ``record_held`` to store a held message."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from kakitome.inbound.store import InboundStore, NewInbound


class Receiver:
    """A minimal HTTP/1.1 endpoint on loopback that answers 200 and keeps each body."""

    def __init__(self) -> None:
        self.bodies: list[tuple[dict[str, str], bytes]] = []
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")[1:]
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines if x)
        }
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.bodies.append((headers, body))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"


@pytest.fixture
async def hook_receiver() -> AsyncIterator[Receiver]:
    made = Receiver()
    yield made
    if made.server is not None:
        made.server.close()
        await made.server.wait_closed()


async def record_held(
    inbound: InboundStore,
    recipient: str,
    subject: str,
    *,
    sender: str = "a@b.test",
    body: str = "hi",
) -> str:
    """Store a message held by a route (listener mx, envelope from a@b.test)."""
    content = f"From: {sender}\r\nTo: {recipient}\r\nSubject: {subject}\r\n\r\n{body}\r\n"
    return await inbound.record_inbound(
        NewInbound(
            received_at=time.time(),
            listener="mx",
            kind="route",
            status="held",
            content=content.encode(),
            recipients=(recipient,),
            mail_from="a@b.test",
        )
    )
