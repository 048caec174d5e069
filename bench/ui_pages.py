"""Admin UI pages with a large history: the time of each page, and the slowest.

Fills a fresh SQLite database (or ``--database-url``) with ``--messages`` messages (default
1,000,000) over the last 30 days, one delivery each across 1,000 receiving domains (90%
delivered — most over verified TLS —, 4% deferred, 3% bounced, 3% queued/held) and their
events; then counts the dashboard roll-up once (timed: the one-off catch-up a new
installation with this history would do), logs in through the app in process and times
each page ``--repeat`` times (median and worst). Usage::

    .venv/bin/python -m bench.ui_pages [--messages 1000000] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from argon2 import PasswordHasher

from kakitome.accounts.store import WebStore
from kakitome.config import Settings
from kakitome.services import build_services
from kakitome.store.database import Database
from kakitome.store.ids import encode
from kakitome.web import create_app

PASSWORD = "benchmark password"
_TLS_OK = json.dumps(
    {
        "used": True,
        "version": "TLSv1.3",
        "cipher": "TLS_AES_256_GCM_SHA384",
        "verified": True,
        "verification": "verified",
        "level": "may",
        "policy_source": "default",
        "peer_certificate_sha256": "ab" * 32,
        "downgraded": False,
        "verify_error": None,
    }
)
_TLS_UNVERIFIED = _TLS_OK.replace('"verified": true', '"verified": false').replace(
    '"verification": "verified"', '"verification": "untrusted"'
)


async def fill(store: Database, count: int, *, now: float, seed: int = 1) -> dict[str, str]:
    """Insert the history straight through the driver; returns sample search terms."""
    rng = random.Random(seed)
    domains = [f"d{n}.example" for n in range(1000)]
    span = 30 * 86_400.0
    chunk = 20_000
    sample: dict[str, str] = {}
    async with store.engine.begin() as conn:
        delivery_id = 0
        event_id = 0
        for start in range(0, count, chunk):
            messages: list[tuple[Any, ...]] = []
            deliveries: list[tuple[Any, ...]] = []
            events: list[tuple[Any, ...]] = []
            for n in range(start, min(start + chunk, count)):
                at = now - span + span * n / count
                message_id = encode((int(at * 1000) << 80) | rng.getrandbits(80))
                domain = domains[int(rng.paretovariate(1.2)) % len(domains)]
                recipient = f"user{n}@{domain}"
                roll = rng.random()
                status = (
                    "delivered"
                    if roll < 0.90
                    else "deferred"
                    if roll < 0.94
                    else "bounced"
                    if roll < 0.97
                    else "queued"
                    if roll < 0.99
                    else "held"
                )
                tls = _TLS_OK if rng.random() < 0.85 else _TLS_UNVERIFIED
                delivery_id += 1
                messages.append(
                    (
                        message_id,
                        at,
                        "api",
                        "news@sender.example",
                        "news@sender.example",
                        # One in ten Japanese (no spaces between words), for the search.
                        f"【重要】{n % 12 + 1}月のお知らせ {n}"
                        if n % 10 == 7
                        else f"Newsletter {n}",
                        2000,
                        b"x",
                        0,
                        0,
                        0,
                    )
                )
                final = status in ("delivered", "bounced")
                deliveries.append(
                    (
                        delivery_id,
                        message_id,
                        recipient,
                        domain,
                        status,
                        1,
                        at,
                        at + 2,
                        at + 300,
                        at + 5 * 86_400,
                        250 if status == "delivered" else 451,
                        "2.0.0",
                        "Ok",
                        "mx." + domain,
                        "192.0.2.1",
                        tls if final else None,
                    )
                )
                event_id += 1
                events.append((event_id, at, "queued", message_id, None, '{"recipients": 1}'))
                if status in ("delivered", "deferred", "bounced"):
                    event_id += 1
                    events.append(
                        (event_id, at + 2, status, message_id, delivery_id, f'{{"tls": {tls}}}')
                    )
                if n == count // 2:
                    sample = {"id": message_id, "recipient": recipient, "domain": "@" + domain}
            await conn.exec_driver_sql(
                "INSERT INTO messages (id, created_at, source, sender, header_from, subject, "
                "size, content, eight_bit, smtputf8, requiretls) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                messages,
            )
            await conn.exec_driver_sql(
                "INSERT INTO deliveries (id, message_id, recipient, domain, status, attempts, "
                "created_at, updated_at, next_attempt_at, expires_at, reply_code, "
                "reply_enhanced, reply_text, mx_host, mx_ip, tls) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                deliveries,
            )
            await conn.exec_driver_sql(
                "INSERT INTO events (id, at, kind, message_id, delivery_id, data) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                events,
            )
    return sample


async def run(count: int, repeat: int, database_url: str | None) -> dict[str, Any]:
    folder = tempfile.mkdtemp(prefix="kakitome-ui-bench-")
    url = database_url or f"sqlite:///{Path(folder) / 'kakitome.db'}"
    store = await Database.open(url)
    now = time.time()
    started = time.perf_counter()
    sample = await fill(store, count, now=now)
    fill_seconds = time.perf_counter() - started
    web = WebStore(store.engine, hasher=PasswordHasher(time_cost=1, memory_cost=8192))
    started = time.perf_counter()
    counted = await web.catch_up(now=now)
    rollup_seconds = time.perf_counter() - started
    await web.create_user("bench", PASSWORD, "admin", now=now)
    settings = Settings.model_validate({"database": {"url": url}})
    app = create_app(build_services(settings, store, signing=None))
    pages = {
        "dashboard 24h": "/ui/",
        "dashboard 30d": "/ui/?range=30d",
        "messages": "/ui/messages",
        "messages by id": f"/ui/messages?q={sample['id']}",
        "messages by recipient": f"/ui/messages?q={sample['recipient']}",
        "messages by domain": f"/ui/messages?q={sample['domain'].replace('@', '%40')}",
        "messages bounced": "/ui/messages?status=bounced",
        "messages held (rare)": "/ui/messages?status=held",
        "messages date range": "/ui/messages?since=2000-01-01&until=2100-01-01",
        "messages subject words": "/ui/messages?q=Newsletter+999999",
        "messages subject (rare)": "/ui/messages?q=999997",
        "messages subject Japanese": "/ui/messages?q=12月のお知らせ",
        "messages subject 1 char": "/ui/messages?q=月",
        "message detail": f"/ui/messages/{sample['id']}",
        "queue": "/ui/queue",
        "queue deferred": "/ui/queue?status=deferred",
        "api keys": "/ui/api-keys",
        "settings": "/ui/settings",
        "metrics": "/metrics",
    }
    results: dict[str, dict[str, float]] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench.test") as client:
        login = await client.get("/ui/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
        assert token
        response = await client.post(
            "/ui/login",
            data={"csrf_token": token.group(1), "username": "bench", "password": PASSWORD},
        )
        assert response.status_code == 303, response.text
        for name, path in pages.items():
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                page = await client.get(path)
                times.append(time.perf_counter() - t0)
                assert page.status_code == 200, (path, page.status_code)
            results[name] = {
                "median_ms": statistics.median(times) * 1000,
                "max_ms": max(times) * 1000,
            }
    await store.close()
    slowest = max(results, key=lambda n: results[n]["median_ms"])
    return {
        "messages": count,
        "database": url.split(":")[0],
        "fill_seconds": round(fill_seconds, 1),
        "rollup_catch_up_seconds": round(rollup_seconds, 1),
        "rollup_events": counted,
        "pages": results,
        "slowest": {"page": slowest, **results[slowest]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = asyncio.run(run(args.messages, args.repeat, args.database_url))
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{report['messages']:,} messages on {report['database']}: filled in "
        f"{report['fill_seconds']} s; roll-up catch-up {report['rollup_catch_up_seconds']} s "
        f"({report['rollup_events']:,} events, once)"
    )
    for name, numbers in report["pages"].items():
        median, worst = numbers["median_ms"], numbers["max_ms"]
        print(f"  {name:<27} median {median:8.1f} ms   worst {worst:8.1f} ms")
    slow = report["slowest"]
    print(f"slowest page: {slow['page']} (median {slow['median_ms']:.1f} ms)")


if __name__ == "__main__":
    main()
