"""A worker-only process (`kakitome serve --role worker`) as a subprocess: SIGTERM in the
middle of a run leaves no lease and no delivered message unrecorded; its metrics port
serves the per-process series; ``log.format=json`` makes every stderr line JSON, and
delivery lines carry message_id and delivery_id."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest

from kakitome.testing import LocalInternet, Peer

from ..e2e.service import free_port
from .helpers import arrivals, inject, wait_for, worker_env
from .test_many_workers import _leases, _start_workers

pytestmark = pytest.mark.heavy

_SEQ = re.compile(r"^user(\d+)@")


def _delivered_seqs(url: str) -> set[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT recipient FROM deliveries WHERE status = 'delivered'")
        found = set()
        for (recipient,) in rows:
            match = _SEQ.match(str(recipient))
            assert match, recipient
            found.add(int(match.group(1)))
    return found


@pytest.mark.slow
@pytest.mark.postgres
def test_sigterm_mid_run_leaves_no_lease_and_nothing_unrecorded(
    world: LocalInternet,
    pg_url: str,
    sink: Callable[[int], tuple[list[str], list[Peer]]],
    tmp_path: Path,
) -> None:
    """SIGTERM while a worker is busy: it exits 0, holds no lease afterwards, and every
    message the sink received is recorded delivered (and nothing else is)."""
    total = 3_000
    domains, peers = sink(10)
    asyncio.run(inject(pg_url, total, domains))
    env = worker_env(world.env(), pg_url)
    workers = _start_workers(env, tmp_path, count=2)
    try:
        deadline = time.monotonic() + 120
        while sum(p.stats().messages for p in peers) < total // 3:
            assert time.monotonic() < deadline, "no progress:\n" + workers[0].log()
            time.sleep(0.02)
        for worker in workers:  # both at once: one alone would deliver what the other left
            worker.terminate()
        codes = [worker.stop(timeout=60) for worker in workers]
    finally:
        for worker in workers:
            worker.stop()
    received = set(arrivals(peers))
    assert codes == [0, 0], "".join(w.log()[-3000:] for w in workers)
    assert 0 < len(received) < total, "the stop came too late to test anything"
    assert _leases(pg_url) == 0, "a stopped worker left leases behind"
    recorded = _delivered_seqs(pg_url)
    unrecorded = received - recorded
    print(
        f"\n[sigterm] {len(received)} received before the stop, "
        f"{len(recorded)} recorded delivered, unrecorded {len(unrecorded)}"
    )
    assert not unrecorded, f"delivered but not recorded: {sorted(unrecorded)[:20]}"
    assert recorded == received
    # The rest is still there for the next worker: start one and let it finish.
    (tmp_path / "again").mkdir()
    again = _start_workers(env, tmp_path / "again", count=1)
    try:
        counts = wait_for(peers, total, timeout=180)
        assert len(counts) == total, again[0].log()[-3000:]
        assert all(n == 1 for n in counts.values()), "a message went twice after the stop"
    finally:
        again[0].stop()


class _Worker:
    """``python -m kakitome serve --role worker`` with stdout and stderr kept apart."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.stdout = folder / "stdout"
        self.stderr = folder / "stderr"
        quiet = {
            "KAKITOME_INBOUND__MX_PORT": "0",
            "KAKITOME_INBOUND__SUBMISSION_PORT": "0",
            "KAKITOME_INBOUND__SUBMISSIONS_PORT": "0",
        }
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kakitome", "serve", "--role", "worker"],
                cwd=folder,
                env={**os.environ, **quiet, **env},
                stdout=out,
                stderr=err,
            )
        deadline = time.monotonic() + 90
        while "worker started" not in self.stderr.read_text(errors="replace"):
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.1)

    def log(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@pytest.mark.slow
@pytest.mark.postgres
def test_worker_only_process_serves_metrics(
    world: LocalInternet,
    pg_url: str,
    sink: Callable[[int], tuple[list[str], list[Peer]]],
    tmp_path: Path,
) -> None:
    """``scale.metrics_port``: a worker-only process serves its own series."""
    total = 200
    domains, peers = sink(4)
    asyncio.run(inject(pg_url, total, domains))
    port = free_port()
    env = worker_env(world.env(), pg_url, KAKITOME_SCALE__METRICS_PORT=str(port))
    worker = _Worker(env, tmp_path / "w")
    try:
        assert len(wait_for(peers, total, timeout=120)) == total, worker.log()
        deadline = time.monotonic() + 10
        while True:  # results are recorded (and counted) a few ms after the sink's 250
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            counted = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("kakitome_deliveries_total{") and 'outcome="delivered"' in line
            )
            if counted >= total or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert counted == total, text
        assert "kakitome_attempt_seconds_bucket{" in text
        assert "kakitome_site_window{" in text
    finally:
        assert worker.stop() == 0, worker.log()


@pytest.mark.slow
@pytest.mark.postgres
def test_json_logs_every_line_and_delivery_ids(
    world: LocalInternet,
    pg_url: str,
    sink: Callable[[int], tuple[list[str], list[Peer]]],
    tmp_path: Path,
) -> None:
    """``log.format=json``: every line on stderr is a JSON object; each delivery line
    names its message_id and delivery_id."""
    total = 100
    domains, peers = sink(2)
    asyncio.run(inject(pg_url, total, domains))
    env = worker_env(world.env(), pg_url, KAKITOME_LOG__FORMAT="json", KAKITOME_LOG__LEVEL="debug")
    worker = _Worker(env, tmp_path / "w")
    try:
        assert len(wait_for(peers, total, timeout=120)) == total, worker.log()
        time.sleep(1.0)  # the last results are recorded and logged
    finally:
        assert worker.stop() == 0, worker.log()
    lines = [line for line in worker.stderr.read_text().splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
        assert isinstance(record, dict) and "event" in record, line
        records.append(record)
    deliveries = [r for r in records if str(r["event"]).startswith("delivery ")]
    assert len(deliveries) >= total, [r["event"] for r in records][-50:]
    for record in deliveries:
        assert record.get("message_id") and record.get("delivery_id"), record
    delivered_ids = {r["message_id"] for r in deliveries if r["event"] == "delivery delivered"}
    assert len(delivered_ids) == total
