"""Helpers of the scale tests: a private PostgreSQL, direct injection, counting arrivals."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from kakitome.queue.types import NewMessage, NewRecipient
from kakitome.store.database import Database
from kakitome.testing import Peer
from tests.fixtures_db import queue_store

from ..e2e.service import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
_SEQ = re.compile(rb"^X-Test-Seq: (\d+)\r?$", re.MULTILINE)


class PrivatePostgres:
    """A PostgreSQL cluster of our own (initdb in a temp folder, loopback port), so a
    test may stop and start it without touching the shared server."""

    def __init__(self) -> None:
        if os.geteuid() != 0 or not (PG_BIN / "initdb").exists():
            pytest.skip("a private PostgreSQL needs root and /usr/lib/postgresql/15/bin")
        self.dir = Path(tempfile.mkdtemp(prefix="kakitome-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        user = pwd.getpwnam("postgres")
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.dir}'\nmax_connections = 200\n"
                "fsync = on\n"
            )
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / program), *args],
            check=True,
            capture_output=True,
            cwd=self.dir,
        )

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def message(seq: int, domain: str, size: int = 600) -> NewMessage:
    """A small unsigned message numbered ``seq`` (X-Test-Seq) to user<seq>@domain."""
    content = (
        f"From: news@sender.test\r\nTo: user{seq}@{domain}\r\nSubject: m {seq}\r\n"
        f"Message-ID: <{seq}@sender.test>\r\nX-Test-Seq: {seq}\r\n\r\n"
    ).encode() + (b"x" * 70 + b"\r\n") * max(1, size // 72)
    return NewMessage(
        source="api",
        sender="news@sender.test",
        header_from="news@sender.test",
        subject=f"m {seq}",
        content=content,
        recipients=(NewRecipient(f"user{seq}@{domain}", domain),),
    )


async def inject(url: str, count: int, domains: Sequence[str]) -> None:
    """Commit ``count`` messages round-robin over ``domains`` straight into the store."""
    store = await Database.open(url, pool_size=2)
    try:
        batch: list[NewMessage] = []
        for seq in range(count):
            batch.append(message(seq, domains[seq % len(domains)]))
            if len(batch) == 1000:
                await queue_store(store).inject_many(batch, now=time.time(), lifetime=86_400)
                batch = []
        if batch:
            await queue_store(store).inject_many(batch, now=time.time(), lifetime=86_400)
    finally:
        await store.close()


def arrivals(peers: Sequence[Peer]) -> Counter[int]:
    """How many times each sequence number arrived at the peers."""
    counts: Counter[int] = Counter()
    for peer in peers:
        for received in peer.messages():
            match = _SEQ.search(received.data)
            assert match, "a message without its sequence header arrived"
            counts[int(match.group(1))] += 1
    return counts


def wait_for(peers: Sequence[Peer], total: int, timeout: float) -> Counter[int]:
    """Wait until every sequence number below ``total`` arrived (or the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = arrivals(peers)
        if len(counts) >= total:
            return counts
        time.sleep(0.25)
    return arrivals(peers)


def worker_env(world_env: dict[str, str], url: str, **extra: str) -> dict[str, str]:
    """Environment of a worker process of these tests: short leases, fast polling."""
    return {
        **world_env,
        "KAKITOME_DATABASE__URL": url,
        "KAKITOME_QUEUE__LEASE_SECONDS": "10",
        "KAKITOME_QUEUE__POLL_INTERVAL": "0.2",
        "KAKITOME_QUEUE__RETRY_FIRST": "1",
        "KAKITOME_QUEUE__BATCH_SIZE": "200",
        "KAKITOME_DELIVERY__HELO_HOSTNAME": "kakitome.test",
        "KAKITOME_DOMAINS__VERIFY_INTERVAL": "0",
        "KAKITOME_TLSRPT__ENABLED": "false",
        "KAKITOME_SHAPING__SLOT_LEASE": "10",
        **extra,
    }


def child_processes(pid: int, role: str) -> list[int]:
    """The PIDs of ``pid``'s children started by ``serve`` for ``role`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                parent = int(handle.read().rpartition(")")[2].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().split(b"\0")
        except (OSError, ValueError):
            continue
        if parent == pid and role.encode() in command and any(b"role_child" in c for c in command):
            found.append(int(entry))
    return sorted(found)
