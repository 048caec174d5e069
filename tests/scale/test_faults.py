"""Faults survived: PostgreSQL restarted mid-run; database down at injection time (503)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from kakitome.testing import LocalInternet, Peer

from ..e2e.service import ServiceProcess
from .helpers import PrivatePostgres, inject, wait_for, worker_env
from .test_many_workers import _start_workers

pytestmark = pytest.mark.heavy

TOTAL = 3_000


@pytest.mark.slow
def test_postgres_restart_mid_run(
    world: LocalInternet,
    private_pg: PrivatePostgres,
    sink: Callable[[int], tuple[list[str], list[Peer]]],
    tmp_path: Path,
) -> None:
    """T40: PostgreSQL restarted in the middle of a run: workers reconnect and finish;
    nothing acknowledged (committed) is lost."""
    domains, peers = sink(10)
    asyncio.run(inject(private_pg.url, TOTAL, domains))
    workers = _start_workers(worker_env(world.env(), private_pg.url), tmp_path, count=2)
    try:
        deadline = time.monotonic() + 120
        while sum(p.stats().messages for p in peers) < TOTAL // 4:
            assert time.monotonic() < deadline, "no progress:\n" + workers[0].log()
            time.sleep(0.05)
        private_pg.stop()
        time.sleep(2)
        private_pg.start()
        counts = wait_for(peers, TOTAL, timeout=180)
        missing = set(range(TOTAL)) - set(counts)
        duplicates = sum(n - 1 for n in counts.values())
        print(f"\n[pg-restart] all {len(counts)} of {TOTAL} delivered; duplicates {duplicates}")
        assert not missing, f"{len(missing)} lost:\n" + workers[0].log()[-4000:]
    finally:
        for worker in workers:
            worker.stop()


@pytest.mark.slow
def test_api_answers_503_when_the_database_is_down(
    world: LocalInternet, private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    """Database unavailable at injection time: 503, never 202; 202 again once it is back."""
    env = {
        **worker_env(world.env(), private_pg.url),
        "KAKITOME_DOMAINS__ALLOW_UNCONFIGURED_FROM": "true",
    }
    web = ServiceProcess(env, tmp_path, roles=("web",)).start(timeout=90)
    body = {"from": "a@sender.test", "to": ["b@example.test"], "subject": "s", "text": "t"}
    try:
        key = web.wait_for_key()
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=web.url, headers=headers, timeout=30) as client:
            assert client.post("/api/v1/messages", json=body).status_code == 202
            private_pg.stop()
            refused = client.post("/api/v1/messages", json=body)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "storage_unavailable"
            private_pg.start()
            deadline = time.monotonic() + 30
            while True:
                try:
                    status = client.post("/api/v1/messages", json=body).status_code
                except httpx.ConnectError:
                    raise AssertionError("the service has gone:\n" + web.log()) from None
                if status == 202:
                    break
                assert status == 503 and time.monotonic() < deadline, web.log()
                time.sleep(0.5)
    finally:
        web.stop()
