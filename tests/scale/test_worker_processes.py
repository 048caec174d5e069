"""``scale.worker_processes``: `serve` delivers through worker child processes.

One `serve` (web + worker roles) with ``worker_processes = 2`` on SQLite and on
PostgreSQL: two worker-only children deliver every message exactly once while the parent
answers HTTP; SIGTERM to the parent stops the children (each drains and releases its
leases); SIGKILL of the parent stops them too (EOF on their stdin)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from kakitome.testing import LocalInternet, Peer

from ..e2e.service import ServiceProcess
from .helpers import child_processes, inject, wait_for, worker_env

pytestmark = pytest.mark.heavy

TOTAL = 800


def _children(pid: int) -> list[int]:
    return child_processes(pid, "worker")


def _gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if os.path.exists(f"/proc/{p}") and _running(p)]
        if not alive:
            return True
        time.sleep(0.1)
    return False


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_worker_children_deliver_each_message_once(
    world: LocalInternet,
    pg_url: str,
    sink: Callable[[int], tuple[list[str], list[Peer]]],
    tmp_path: Path,
    engine: str,
) -> None:
    url = pg_url if engine == "postgres" else f"sqlite:///{tmp_path / 'kakitome.db'}"
    domains, peers = sink(6)
    asyncio.run(inject(url, TOTAL, domains))
    env = worker_env(world.env(), url, KAKITOME_SCALE__WORKER_PROCESSES="2")
    service = ServiceProcess(env, tmp_path, roles=("web", "worker")).start(timeout=90)
    try:
        assert service.proc is not None
        children = _children(service.proc.pid)
        assert len(children) == 2, service.log()
        assert "Delivery: 2 worker processes" in service.log()
        counts = wait_for(peers, TOTAL, timeout=180)
        missing = set(range(TOTAL)) - set(counts)
        assert not missing, f"{len(missing)} not delivered:\n" + service.log()[-3000:]
        assert max(counts.values()) == 1, "a message was delivered twice"
        # The parent still serves HTTP while its children deliver.
        assert httpx.get(service.url + "/healthz", timeout=5).status_code == 200
        assert service.stop() == 0
        assert _gone(children, 30), "worker children outlived the parent's SIGTERM"
    finally:
        service.stop()


@pytest.mark.slow
def test_worker_children_stop_when_the_parent_is_killed(
    world: LocalInternet, tmp_path: Path
) -> None:
    env = worker_env(
        world.env(), f"sqlite:///{tmp_path / 'kakitome.db'}", KAKITOME_SCALE__WORKER_PROCESSES="2"
    )
    service = ServiceProcess(env, tmp_path, roles=("web", "worker")).start(timeout=90)
    try:
        assert service.proc is not None
        children = _children(service.proc.pid)
        assert len(children) == 2, service.log()
        service.proc.send_signal(signal.SIGKILL)
        service.proc.wait(10)
        assert _gone(children, 60), "worker children outlived a SIGKILLed parent"
    finally:
        service.stop()


@pytest.mark.slow
def test_sqlite_worker_children_are_woken_by_the_parent(
    world: LocalInternet, sink: Callable[[int], tuple[list[str], list[Peer]]], tmp_path: Path
) -> None:
    """SQLite has no NOTIFY: mail accepted by the parent's API reaches a worker child at
    once (a byte down its stdin), not at its next poll (30 s here)."""
    domains, peers = sink(1)
    env = worker_env(
        world.env(),
        f"sqlite:///{tmp_path / 'kakitome.db'}",
        KAKITOME_SCALE__WORKER_PROCESSES="2",
        KAKITOME_QUEUE__POLL_INTERVAL="30",
        KAKITOME_DOMAINS__ALLOW_UNCONFIGURED_FROM="true",
    )
    service = ServiceProcess(env, tmp_path, roles=("web", "worker")).start(timeout=90)
    try:
        headers = {"Authorization": f"Bearer {service.wait_for_key()}"}
        time.sleep(1.0)  # the children's first look at the queue is over
        for seq in range(3):
            body = {
                "from": "news@sender.test",
                "to": [f"user{seq}@{domains[0]}"],
                "subject": f"m {seq}",
                "text": "x",
                "headers": {"X-Test-Seq": str(seq)},
            }
            sent = time.monotonic()
            answer = httpx.post(service.url + "/api/v1/messages", json=body, headers=headers)
            assert answer.status_code == 202, answer.text
            counts = wait_for(peers, seq + 1, timeout=10)
            assert len(counts) == seq + 1, service.log()[-3000:]
            assert time.monotonic() - sent < 10
    finally:
        service.stop()
