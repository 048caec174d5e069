"""The set-based import over many batches (the next one read while the previous one is
written), on SQLite and PostgreSQL: upsert, no duplicates, unsubscribed members stay out,
attributes merged, opt-in records kept, rejected rows with their line numbers."""

from __future__ import annotations

import asyncio
import io

import psycopg
import pytest

from kakitome.config import Settings
from kakitome.lists import ListService, OptIn, TokenSigner
from kakitome.lists import service as service_module
from kakitome.store.database import Database
from tests.lists.conftest import Clock, make_list


@pytest.fixture
def small_batches(
    service: ListService,
    store: Database,
    clock: Clock,
    tmp_path: object,
    monkeypatch: pytest.MonkeyPatch,
) -> ListService:
    """A service that commits every 100 rows (the fixture ``service`` empties the db)."""
    monkeypatch.setattr(service_module, "IMPORT_ROWS_PER_TRANSACTION", 100)
    settings = Settings.model_validate(
        {
            "http": {"public_url": "https://news.example.jp"},
            "paths": {"data_dir": str(tmp_path)},
            "lists": {"import_batch_size": 100},
        }
    )
    return ListService(
        store, settings, clock=clock, signer=TokenSigner(b"0123456789abcdef0123456789abcdef")
    )


def _csv(count: int) -> bytes:
    lines = ["email,name,plan"]
    lines += [f"u{i}@example.jp,N{i},gold" for i in range(count)]
    lines += ["U3@EXAMPLE.JP,dup,x", "broken@,x,y", "u.@example.jp,x,y"]
    return ("\n".join(lines) + "\n").encode()


async def test_many_batches_upsert(small_batches: ListService) -> None:
    service = small_batches
    lst = await make_list(service)
    gone = await service.add_subscriber(lst.id, "u5@example.jp", optin=OptIn("form"))
    await service.unsubscribe(lst.id, gone.subscriber.id, method="link")
    await service.add_subscriber(
        lst.id,
        "u7@example.jp",
        name="Old",
        attributes={"keep": "1", "plan": "old"},
        optin=OptIn("form", source="https://shop.example.jp/form"),
    )

    report = await service.import_csv(lst.id, io.BytesIO(_csv(1050)))
    assert report.rows == 1053
    assert report.inserted == 1048 and report.updated == 2 and report.duplicates == 1
    assert [(r.line, r.reason.split(":")[0]) for r in report.rejected] == [
        (1052, "duplicate"),
        (1053, "invalid address"),
        (1054, "invalid address"),
    ]
    assert await service.count_members(lst.id) == {"subscribed": 1049, "unsubscribed": 1}

    u5 = await service.membership(lst.id, "u5@example.jp")
    assert u5.status == "unsubscribed" and u5.optin_method == "form"
    u7 = await service.membership(lst.id, "u7@example.jp")
    assert u7.optin_source == "https://shop.example.jp/form"  # the opt-in record is kept
    assert u7.subscriber.name == "N7"
    assert u7.subscriber.attributes == {"keep": "1", "plan": "gold"}
    u8 = await service.membership(lst.id, "u8@example.jp")
    assert u8.optin_method == "import" and u8.subscriber.attributes == {"plan": "gold"}

    # New subscribers get ids in file order.
    first = await service.members(lst.id, limit=5)
    assert [m.subscriber.address for m in first] == [
        "u5@example.jp",
        "u7@example.jp",
        "u0@example.jp",
        "u1@example.jp",
        "u2@example.jp",
    ]

    # The same file again changes nothing.
    again = await service.import_csv(lst.id, io.BytesIO(_csv(1050)))
    assert (again.inserted, again.updated, again.duplicates) == (0, 0, 1)
    assert await service.count_members(lst.id) == {"subscribed": 1049, "unsubscribed": 1}

    # A changed attribute updates only the rows that change.
    changed = _csv(1050).replace(b"u9@example.jp,N9,gold", b"u9@example.jp,N9,silver")
    third = await service.import_csv(lst.id, io.BytesIO(changed))
    assert (third.inserted, third.updated) == (0, 1)
    assert (await service.get_subscriber("u9@example.jp")).attributes == {"plan": "silver"}


@pytest.mark.postgres
async def test_parallel_batches_keep_file_order_for_ids(
    pg_database: str, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL writes two batches at once; when the first is held up (a row it updates
    is locked by another transaction) the second still draws its new ids after it."""
    monkeypatch.setattr(service_module, "IMPORT_ROWS_PER_TRANSACTION", 100)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE segments, subscriber_events, list_members, subscribers, mailing_lists "
            "RESTART IDENTITY CASCADE"
        )
    settings = Settings.model_validate(
        {
            "http": {"public_url": "https://news.example.jp"},
            "paths": {"data_dir": str(tmp_path)},
            "lists": {"import_batch_size": 100},
        }
    )
    store = await Database.open(pg_database, pool_size=5)
    try:
        service = ListService(
            store, settings, clock=Clock(), signer=TokenSigner(b"0123456789abcdef0123456789abcdef")
        )
        lst = await make_list(service)
        # u50 exists with another name: the first batch's UPDATE waits for its row lock.
        await service.add_subscriber(lst.id, "u50@example.jp", name="Old", optin=OptIn("form"))
        lines = ["email,name,plan"] + [f"u{i}@example.jp,N{i},gold" for i in range(300)]
        data = ("\n".join(lines) + "\n").encode()
        with psycopg.connect(pg_database) as blocker:
            blocker.execute(
                "SELECT id FROM subscribers WHERE address = 'u50@example.jp' FOR UPDATE"
            )
            task = asyncio.create_task(service.import_csv(lst.id, io.BytesIO(data)))
            # Without the ordering, the second batch (u100-u199) commits while the first
            # waits; with it, the second waits too. Either way the lock goes after 3 s.
            with psycopg.connect(pg_database, autocommit=True) as probe:
                for _ in range(60):
                    row = probe.execute(
                        "SELECT 1 FROM subscribers WHERE address = 'u150@example.jp'"
                    ).fetchone()
                    if row is not None or task.done():
                        break
                    await asyncio.sleep(0.05)
            blocker.rollback()
        report = await task
        assert report.inserted == 299 and report.updated == 1
        members = await service.members(lst.id, limit=1000)
        addresses = [m.subscriber.address for m in members]
        assert addresses == ["u50@example.jp"] + [
            f"u{i}@example.jp" for i in range(300) if i != 50
        ]
    finally:
        await store.close()
