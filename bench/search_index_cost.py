"""What the subject search index costs the injection path: µs per message of
``QueueStore.inject_many``, with and without the index, in the same minutes.

Two fresh databases of one engine: one at the newest schema, one the same but without the
search objects of migrations 0011 and 0013 (SQLite: FTS5 table, its id map, batch state
and triggers; PostgreSQL: the pg_trgm GIN index). Batches of ``--batch`` messages (subjects half
English, half Japanese, ~2 KB content) go to each in turn, so load from other processes
falls on both alike; the median and mean per-message time of each is reported, after
``--warmup`` batches (the mean carries SQLite's batched indexing, one commit in about
eight of 64 messages). Usage::

    .venv/bin/python -m bench.search_index_cost [--batches 200] [--batch 64]
    .venv/bin/python -m bench.search_index_cost --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from kakitome.queue.store import QueueStore
from kakitome.queue.types import NewMessage, NewRecipient
from kakitome.store.database import Database

SUBJECTS = [
    "【重要】{n}月のお知らせ：サービスメンテナンスのご案内",
    "Your order #{n} has shipped - track your parcel",
    "年末年始の営業時間について（ご注文番号 {n}）",
    "Weekly digest {n}: what changed in your account",
]
_DROP = {
    "sqlite": [
        "DROP TRIGGER message_search_flush",
        "DROP TRIGGER message_search_update",
        "DROP TRIGGER message_search_delete",
        "DROP TRIGGER message_search_insert",
        "DROP TABLE message_search_state",
        "DROP TABLE message_search_fts",
        "DROP TABLE message_search",
    ],
    "postgresql": ["DROP INDEX ix_messages_subject_trgm"],
}


def _batch(size: int, start: int) -> list[NewMessage]:
    body = ("本文です。This is the body of the message. " * 40).encode()
    out = []
    for n in range(start, start + size):
        subject = SUBJECTS[n % len(SUBJECTS)].format(n=n)
        address = f"user{n}@d{n % 50}.example"
        out.append(
            NewMessage(
                source="api",
                sender="news@sender.example",
                header_from="news@sender.example",
                subject=subject,
                content=b"Subject: x\r\n\r\n" + body,
                recipients=(NewRecipient(address, address.rpartition("@")[2]),),
            )
        )
    return out


async def run(batches: int, size: int, warmup: int, database_url: str | None) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="kakitome-search-cost-"))
    created: list[str] = []
    if database_url and database_url.startswith("postgres"):
        base, _, _ = database_url.rpartition("/")
        urls = {}
        with psycopg.connect(database_url, autocommit=True) as admin:
            for variant in ("with", "without"):
                name = f"kakitome_search_cost_{variant}_{secrets.token_hex(3)}"
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                created.append(name)
                urls[variant] = f"{base}/{name}"
    else:
        urls = {v: f"sqlite:///{folder / v / 'kakitome.db'}" for v in ("with", "without")}
    stores = {v: await Database.open(u) for v, u in urls.items()}
    try:
        async with stores["without"].engine.begin() as conn:
            for statement in _DROP[stores["without"].dialect]:
                await conn.exec_driver_sql(statement)
        times: dict[str, list[float]] = {"with": [], "without": []}
        n = 0
        for round_ in range(warmup + batches):
            order = ("with", "without") if round_ % 2 else ("without", "with")
            for variant in order:
                messages = _batch(size, n)
                n += size
                started = time.perf_counter()
                queue = QueueStore(stores[variant])
                await queue.inject_many(messages, now=time.time(), lifetime=3600)
                elapsed = time.perf_counter() - started
                if round_ >= warmup:
                    times[variant].append(elapsed / size * 1e6)
    finally:
        for store in stores.values():
            await store.close()
        if created and database_url:
            with psycopg.connect(database_url, autocommit=True) as admin:
                for name in created:
                    admin.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )
    result = {
        v: {
            "median_us_per_message": round(statistics.median(t), 1),
            "mean_us_per_message": round(statistics.mean(t), 1),
            "p90_us_per_message": round(statistics.quantiles(t, n=10)[-1], 1),
        }
        for v, t in times.items()
    }
    return {
        "database": stores["with"].dialect,
        "batch": size,
        "batches": batches,
        **result,
        "index_cost_us_per_message": {
            kind: round(
                result["with"][f"{kind}_us_per_message"]
                - result["without"][f"{kind}_us_per_message"],
                1,
            )
            for kind in ("median", "mean")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    report = asyncio.run(run(args.batches, args.batch, args.warmup, args.database_url))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
