"""`kakitome serve` as a process takes routes changed through the API without a restart:
the parent and its SMTP child (``inbound.processes = 2``) both reload them."""

from __future__ import annotations

import smtplib
import time
from pathlib import Path

import httpx

from kakitome.testing import LocalInternet
from tests.e2e.service import ServiceProcess, free_port

DOMAIN = "in.reload.test"


def _rcpt(port: int, recipient: str) -> int:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("probe.test")
        client.mail("someone@probe.test")
        code, _ = client.rcpt(recipient)
        return code


def test_routes_put_through_the_api_reach_every_smtp_process(
    database_url: str, tmp_path: Path, world: LocalInternet
) -> None:
    """Before: mail for the inbound domain is held (250). After PUT /api/v1/routes with a
    reject route: 550 from every process within seconds - 20 connections in a row, which
    the kernel spreads over both processes sharing the port."""
    mx = free_port()
    env = {
        **world.env(),
        "KAKITOME_DATABASE__URL": database_url,
        "KAKITOME_PATHS__DATA_DIR": str(tmp_path / "data"),
        "KAKITOME_INBOUND__BIND_HOST": "127.0.0.1",
        "KAKITOME_INBOUND__MX_PORT": str(mx),
        "KAKITOME_INBOUND__DOMAINS": DOMAIN,
        "KAKITOME_INBOUND__PROCESSES": "2",
        "KAKITOME_INBOUND__CHECK_AUTHENTICATION": "false",
    }
    service = ServiceProcess(env, tmp_path).start()
    try:
        key = service.wait_for_key()
        sales = f"sales@{DOMAIN}"
        assert all(_rcpt(mx, sales) == 250 for _ in range(10))
        put = httpx.put(
            service.url + "/api/v1/routes",
            json={"routes": [{"match": sales, "action": "reject"}]},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert put.status_code == 200, put.text
        deadline = time.monotonic() + 20
        codes: list[int] = []
        while time.monotonic() < deadline:
            codes = [_rcpt(mx, sales) for _ in range(20)]
            if set(codes) == {550}:
                break
            time.sleep(0.5)
        assert set(codes) == {550}, f"after 20 s: {codes}\n{service.log()}"
        assert _rcpt(mx, f"other@{DOMAIN}") == 250
        assert "settings reloaded from the database" in service.log()
    finally:
        assert service.stop() == 0
