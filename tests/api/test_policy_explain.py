"""``GET /api/v1/policy/{domain}``: the same explanation as ``kakitome policy explain``
(``kakitome.tls.explain``), through the API."""

from __future__ import annotations

import httpx

from kakitome.services import build_services
from kakitome.store.database import Database
from kakitome.testing import LocalInternet
from kakitome.testing.https import add_mta_sts_host, mta_sts_policy
from kakitome.web import create_app
from tests.api.conftest import BASE, bearer
from tests.fixtures_world import MakeDomain


async def test_policy_explain_names_each_mx_and_the_sources(
    world: LocalInternet, make_domain: MakeDomain, store: Database
) -> None:
    """An MTA-STS enforce policy that does not list the MX: the host is skipped, and the
    explanation names the MTA-STS part; an unknown domain answers with the DNS error."""
    domain, _ = make_domain()
    add_mta_sts_host(world, domain.name, mta_sts_policy("enforce", ["mx.elsewhere.test"]))
    settings = world.settings({"KAKITOME_MTA_STS__HTTPS_PORT": str(world.https_server().port)})
    app = create_app(build_services(settings, store, signing=None))
    h = await bearer(store, "read")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        answer = await c.get(f"/api/v1/policy/{domain.name}", headers=h)
        assert answer.status_code == 200, answer.text
        document = answer.json()
        [host] = document["hosts"]
        assert host["mx_host"] == domain.mx[0][1]
        assert host["skip"] and host["preference"] == domain.mx[0][0]
        assert "mta-sts" in {part["source"] for part in host["explanation"]}
        missing = await c.get("/api/v1/policy/nothing-here.invalid", headers=h)
        assert missing.status_code == 200
        assert missing.json()["error"] and missing.json()["hosts"] == []
