"""CSV import jobs live in the database: another web process (a second app on the same
database) follows the progress, the report outlives the process, and a job whose process
died is shown as interrupted."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest

from kakitome.accounts.store import WebStore
from kakitome.config import Settings
from kakitome.lists import service as list_service_module
from kakitome.lists.import_jobs_store import ImportJobStore
from kakitome.lists.model import NewList
from kakitome.lists.service import ListService
from kakitome.services import build_services
from kakitome.store.database import Database
from kakitome.web import create_app
from kakitome.web.ui.areas import lists as lists_area

from .conftest import PASSWORD, csrf_of, login_as

PERCENT = re.compile(r'<progress id="import-progress" max="100" value="(\d+)">')


async def _list(store: Database) -> int:
    created = await ListService(store, Settings()).create_list(
        NewList(name="news", title="ニュース", opt_in="single", from_address="n@example.com")
    )
    return created.id


async def _client(store: Database) -> AsyncIterator[httpx.AsyncClient]:
    # Batches of 1,000 rows, so the import commits (and yields) several times.
    settings = Settings.model_validate({"lists": {"import_batch_size": 1000}})
    app = create_app(build_services(settings, store, signing=None))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://kakitome.test") as c:
        assert (await login_as(c, "importer")).status_code == 303
        yield c


async def _start_import(client: httpx.AsyncClient, list_id: int, csv: bytes) -> str:
    """Upload ``csv`` on the list's import page; the job's progress URL."""
    token = csrf_of((await client.get(f"/ui/lists/{list_id}/import")).text)
    started = await client.post(
        f"/ui/lists/{list_id}/import",
        data={"csrf_token": token},
        files={"file": ("a.csv", csv, "text/csv")},
    )
    assert started.status_code == 303, started.text
    return started.headers["location"]


@pytest.fixture
async def second_store(database_url: str, store: Database) -> AsyncIterator[Database]:
    """Another Database on the same database: what a second web process would open."""
    other = await Database.open(database_url)
    yield other
    await other.close()


async def test_second_app_follows_progress_and_report_survives(
    store: Database, second_store: Database, database_url: str, web: WebStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """App A imports; app B (same database) sees it running part-way, then the report with
    the rejected rows; after A's process is gone a third app still shows the report."""
    monkeypatch.setattr(lists_area, "PROGRESS_INTERVAL", 0.02)
    monkeypatch.setattr(list_service_module, "IMPORT_ROWS_PER_TRANSACTION", 100)
    await web.create_user("importer", PASSWORD, "sender", now=time.time())
    list_id = await _list(store)
    # Wide rows: the CSV reader reads ahead 1 MiB at a time, so progress moves per MiB.
    name = "山田" * 60
    lines = ["email,name"] + [f"user{n}@example.com,{name}{n}" for n in range(15_000)]
    lines[5] = "not-an-address,x"
    lines[9] = "also bad@,y"
    csv = ("\n".join(lines) + "\n").encode()
    first = _client(store)
    second = _client(second_store)
    a = await anext(first)
    b = await anext(second)
    progress = await _start_import(a, list_id, csv)
    seen: list[int] = []
    body = ""
    for _ in range(3000):
        body = (await b.get(progress, headers={"HX-Request": "true"})).text
        match = PERCENT.search(body)
        assert match, body
        seen.append(int(match.group(1)))
        if "import-summary" in body:
            break
        await asyncio.sleep(0.01)
    assert "import-summary" in body, body
    # B saw A's import while it ran (the job row exists from the moment A answered 303).
    # How far the heartbeat had got by then depends on scheduling: in a full run the
    # import can finish between two heartbeats, so part-way values are not required.
    assert seen[0] < 100, seen
    assert seen[-1] == 100
    assert "not-an-address" in body and "also bad@" in body
    await first.aclose()
    await second.aclose()
    await second_store.close()
    # A new process on the same database: the report, with its rejected rows, is there.
    third_store = await Database.open(database_url)
    try:
        third = _client(third_store)
        c = await anext(third)
        page = (await c.get(progress)).text
        assert "import-summary" in page
        assert re.search(r"<td>6</td><td>[^<]+</td><td>not-an-address</td>", page), page
        assert "also bad@" in page
        await third.aclose()
    finally:
        await third_store.close()


async def test_job_of_a_dead_process_is_interrupted(store: Database, web: WebStore) -> None:
    """A running job without a heartbeat for a minute is shown interrupted, with what to do;
    one with a fresh heartbeat (another live process) keeps running."""
    await web.create_user("importer", PASSWORD, "sender", now=time.time())
    list_id = await _list(store)
    jobs = ImportJobStore(store.engine)
    now = time.time()
    await jobs.create("deadjob", list_id, size=1000, started_by="x", owner="gone:1", now=now - 120)
    await jobs.progress("deadjob", position=400, now=now - 90)
    await jobs.create("livejob", list_id, size=1000, started_by="x", owner="other:2", now=now - 5)
    await jobs.progress("livejob", position=300, now=now - 1)
    assert await jobs.interrupt_stale(now=now) == 1
    client = _client(store)
    c = await anext(client)
    dead = (await c.get(f"/ui/lists/{list_id}/import/deadjob")).text
    assert "The import was interrupted" in dead and "after reading 40% of the file" in dead
    assert 'hx-get="' not in dead  # the page stops polling
    live = (await c.get(f"/ui/lists/{list_id}/import/livejob")).text
    assert "Importing" in live and 'value="30"' in live
    record = await jobs.get("deadjob", now=now)
    assert record is not None and record.status == "interrupted"
    assert record.finished_at == pytest.approx(now - 90)
    await client.aclose()


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # a row lock holds it
async def test_import_ends_even_when_its_last_heartbeat_waits(
    store: Database, database_url: str, web: WebStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's end is recorded although the heartbeat's write was still waiting when
    the import ended. (A loaded CI run lost it: the heartbeat was cancelled inside its
    write, the connection was invalidated, the rollback hook raised over the error, and
    the job was later shown interrupted.) Here another session holds the job's row, so
    the heartbeat is surely waiting in its UPDATE when the last batch commits."""
    monkeypatch.setattr(lists_area, "PROGRESS_INTERVAL", 0.02)
    monkeypatch.setattr(list_service_module, "IMPORT_ROWS_PER_TRANSACTION", 100)
    await web.create_user("importer", PASSWORD, "sender", now=time.time())
    list_id = await _list(store)
    total = 8000
    csv = ("email,name\n" + "".join(f"u{n}@example.com,名前{n}\n" for n in range(total))).encode()
    clients = _client(store)
    a = await anext(clients)
    holder = await psycopg.AsyncConnection.connect(database_url)
    try:
        progress = await _start_import(a, list_id, csv)
        job_id = progress.rpartition("/")[2]
        await holder.execute("SELECT 1 FROM list_import_jobs WHERE id = %s FOR UPDATE", (job_id,))
        counted = 0
        deadline = time.monotonic() + 60
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as probe:
            while counted < total:
                assert time.monotonic() < deadline, f"{counted} of {total} imported"
                await asyncio.sleep(0.05)
                row = await (
                    await probe.execute(
                        "SELECT count(*) FROM list_members WHERE list_id = %s", (list_id,)
                    )
                ).fetchone()
                counted = int(row[0]) if row else 0
        await asyncio.sleep(0.5)  # the import ends; its heartbeat waits on the row
        await holder.commit()
        body = ""
        for _ in range(400):
            body = (await a.get(progress, headers={"HX-Request": "true"})).text
            if "import-summary" in body:
                break
            await asyncio.sleep(0.05)
        assert "import-summary" in body, body
    finally:
        await holder.close()
        await clients.aclose()
