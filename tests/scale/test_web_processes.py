"""``http.processes``: several processes answer HTTP on one port (SO_REUSEPORT).

`serve` with ``http.processes = 2`` on SQLite starts one web-only child beside itself;
API requests on new connections are answered by both (the child's CPU time grows), every
accepted message is delivered, and mail accepted by the child wakes the parent's worker
at once (a byte on the child's stdout), not at its next poll (30 s here)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from kakitome.testing import LocalInternet, Peer

from ..e2e.service import ServiceProcess
from .helpers import child_processes, wait_for, worker_env

pytestmark = pytest.mark.heavy


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
def test_two_web_processes_share_the_port_and_wake_the_worker(
    world: LocalInternet, sink: Callable[[int], tuple[list[str], list[Peer]]], tmp_path: Path
) -> None:
    domains, peers = sink(2)
    env = worker_env(
        world.env(),
        f"sqlite:///{tmp_path / 'kakitome.db'}",
        KAKITOME_HTTP__PROCESSES="2",
        KAKITOME_QUEUE__POLL_INTERVAL="30",
        KAKITOME_DOMAINS__ALLOW_UNCONFIGURED_FROM="true",
    )
    service = ServiceProcess(env, tmp_path).start(timeout=90)
    try:
        assert service.proc is not None
        headers = {"Authorization": f"Bearer {service.wait_for_key()}"}
        deadline = time.monotonic() + 30
        while not (children := child_processes(service.proc.pid, "web")):
            assert time.monotonic() < deadline, service.log()
            time.sleep(0.2)
        [child] = children
        time.sleep(3)  # the child has started up and listens
        child_cpu = _cpu(child)
        # The kernel picks a process per new connection (a hash of its addresses): keep
        # sending until the child has clearly worked (CPU time, whatever this machine's
        # speed), at least 40 and at most 400 messages.
        total = 0
        started = time.monotonic()
        for seq in range(400):
            if seq >= 40 and _cpu(child) - child_cpu > 0.05:
                break
            total += 1
            body = {
                "from": "news@sender.test",
                "to": [f"user{seq}@{domains[seq % 2]}"],
                "subject": f"m {seq}",
                "text": "本文",
                "headers": {"X-Test-Seq": str(seq)},
            }
            # A new connection each time: the kernel picks a process per connection.
            answer = httpx.post(service.url + "/api/v1/messages", json=body, headers=headers)
            assert answer.status_code == 202, answer.text
        counts = wait_for(peers, total, timeout=20)
        assert len(counts) == total, service.log()[-3000:]
        assert max(counts.values()) == 1
        assert time.monotonic() - started < 25  # not waiting for the 30 s poll
        assert _cpu(child) - child_cpu > 0.05, "the web child answered nothing"
    finally:
        service.stop()
