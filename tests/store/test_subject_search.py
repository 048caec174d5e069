"""Subject search through the trigram index, on SQLite (FTS5) and PostgreSQL (pg_trgm)."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from kakitome.accounts.store import MessageQuery, WebStore
from kakitome.store import search
from kakitome.store.database import Database
from kakitome.store.migrate import alembic_config, upgrade_to_head
from tests.fixtures_db import queue_store
from tests.store.helpers import LIFETIME, NOW, message


async def _inject(store: Database, *subjects: str, now: float = NOW) -> list[str]:
    batch = [message(f"r{n}@dest.example", subject=s) for n, s in enumerate(subjects)]
    return await queue_store(store).inject_many(batch, now=now, lifetime=LIFETIME)


async def _find(store: Database, q: str, **kwargs: object) -> list[str]:
    page = await WebStore(store.engine).search_messages(MessageQuery(q=q, **kwargs))  # type: ignore[arg-type]
    assert page.kind == "subject"
    return [item.id for item in page.items]


async def test_english_word_any_case_no_false_positives(store: Database) -> None:
    """A word is found in any case inside longer subjects; near misses are not returned."""
    ids = await _inject(
        store,
        "Monthly NEWSLETTER for December",
        "Your newsletter preferences",
        "News letter (two words)",
        "Newslet",
        "abcxbcd",  # has the trigrams of "abcd" but not "abcd" itself
    )
    assert await _find(store, "newsletter") == [ids[1], ids[0]]
    assert await _find(store, "abcd") == []
    assert await _find(store, "bcd") == [ids[4]]
    # Quotes, LIKE wildcards and FTS5 syntax are text, not syntax.
    ids += await _inject(store, 'Say "100%" O\'Reilly_x AND NOT', now=NOW + 1)
    assert await _find(store, '"100%" o\'reilly_x') == [ids[5]]
    assert await _find(store, "100_ AND") == []
    assert await _find(store, "NOT 'reilly") == [ids[5]]


async def test_japanese_substring(store: Database) -> None:
    """「お知らせ」 is found inside 「【重要】12月のお知らせ」, not in subjects that only
    share characters with it."""
    ids = await _inject(
        store,
        "【重要】12月のお知らせ",
        "お知り合いの方へ",
        "知らせる前に",
        "年末年始の営業のお知らせ（ご案内）",
        "12月の請求書",
    )
    assert await _find(store, "お知らせ") == [ids[3], ids[0]]
    assert await _find(store, "【重要】") == [ids[0]]
    # Every word must occur, in any order.
    assert await _find(store, "お知らせ 12月") == [ids[0]]
    assert await _find(store, "請求書 お知らせ") == []


async def test_new_and_deleted_messages(store: Database) -> None:
    """Messages injected after a search are found by the next one; deleted ones are gone."""
    first = await _inject(store, "Invoice 2026-001")
    assert await _find(store, "invoice") == first
    second = await _inject(store, "Invoice 2026-002", "請求書のお知らせ", now=NOW + 1)
    assert await _find(store, "invoice") == [second[0], first[0]]
    assert await _find(store, "請求書") == [second[1]]
    assert await queue_store(store).queue_action("delete", now=NOW + 1, message_ids=[first[0]]) == 1
    assert await _find(store, "invoice") == [second[0]]
    third = await _inject(store, "Invoice 2026-003", now=NOW + 2)
    assert await _find(store, "invoice") == [third[0], second[0]]


async def test_pages_neither_skip_nor_repeat(store: Database) -> None:
    """Following next_before walks every match once, newest first, with status filter."""
    ids: list[str] = []
    for n in range(7):
        ids += await _inject(store, f"Receipt {n}", f"Other {n}", now=NOW + n)
    matching = [i for n, i in enumerate(ids) if n % 2 == 0]
    web = WebStore(store.engine)
    seen: list[str] = []
    before: str | None = None
    while True:
        page = await web.search_messages(MessageQuery(q="receipt", before=before, limit=3))
        seen += [item.id for item in page.items]
        before = page.next_before
        if before is None:
            break
    assert seen == sorted(matching, reverse=True)
    queued = await web.search_messages(MessageQuery(q="receipt", status="queued"))
    assert len(queued.items) == 7
    held = await web.search_messages(MessageQuery(q="receipt", status="held"))
    assert held.items == []


async def test_short_words_search_a_window(
    store: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Words under three characters cannot use the index: a page examines a bounded window
    of the newest messages, says so, and the next page continues below it."""
    monkeypatch.setattr(search, "SHORT_QUERY_WINDOW", 3)
    ids: list[str] = []
    for n, subject in enumerate(["月次レポート", "x", "y", "月報", "z", "w", "月"]):
        ids += await _inject(store, subject, now=NOW + n)
    web = WebStore(store.engine)
    page = await web.search_messages(MessageQuery(q="月"))
    assert [i.id for i in page.items] == [ids[6]]
    assert page.window == 3 and page.next_before == ids[4]
    page = await web.search_messages(MessageQuery(q="月", before=page.next_before))
    assert [i.id for i in page.items] == [ids[3]] and page.window == 3
    page = await web.search_messages(MessageQuery(q="月", before=page.next_before))
    assert [i.id for i in page.items] == [ids[0]]
    assert page.window == 0 and page.next_before is None
    # A long word with a short one: the index finds, the short word filters.
    assert await _find(store, "レポート 月次") == [ids[0]]
    assert await _find(store, "レポート 週次") == []


def _downgrade(connection: Connection) -> None:
    command.downgrade(alembic_config(connection), "0010")


async def test_migration_indexes_existing_messages(store: Database) -> None:
    """Messages stored before the search migration are found after it (backfill); the
    index exists on both engines."""
    async with store.engine.begin() as conn:
        await conn.run_sync(_downgrade)
    before = await _inject(store, "Before the index: お知らせ")
    async with store.engine.begin() as conn:
        await conn.run_sync(upgrade_to_head)
    after = await _inject(store, "After the index: お知らせ", now=NOW + 1)
    assert await _find(store, "お知らせ") == [after[0], before[0]]
    async with store.engine.connect() as conn:
        if store.dialect == "sqlite":
            rows = await conn.execute(text("SELECT count(*) FROM message_search"))
            assert rows.scalar() == 2
        else:
            rows = await conn.execute(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"),
                {"n": search.PG_INDEX},
            )
            assert "gin_trgm_ops" in (rows.scalar() or "")


async def test_sqlite_query_uses_the_fts_index(store: Database) -> None:
    """On SQLite the search is driven by the FTS5 table, not a scan of messages."""
    if store.dialect != "sqlite":
        pytest.skip("SQLite query plan")
    stmt = search.sqlite_candidates(["お知らせ"], below=None, limit=51, where=[])
    async with store.engine.connect() as conn:
        compiled = stmt.compile(conn.sync_engine, compile_kwargs={"literal_binds": True})
        plan = (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")).all()
    details = " | ".join(str(row[-1]) for row in plan)
    assert "VIRTUAL TABLE INDEX" in details and "SCAN messages" not in details, details


async def test_the_index_serves_the_rarest_word(store: Database) -> None:
    """With several words, the index is walked for the rarest one (an AND with a common
    word walks all of its matches); the other words only filter. Results are the same."""
    # On SQLite enough messages for the FTS5 table to hold a batch (the rest wait).
    ids = await _inject(store, *[f"Newsletter {n}" for n in range(600)], "Newsletter 999999")
    ids += await _inject(store, *[f"Newsletter {n}" for n in range(600, 1100)], now=NOW + 1)
    async with store.engine.connect() as conn:
        rarest = search.sqlite_rarest if store.dialect == "sqlite" else search.pg_rarest
        if store.dialect == "postgresql":
            await conn.exec_driver_sql("ANALYZE messages")  # the planner's estimates
        assert await rarest(conn, ["Newsletter", "999999"]) == "999999"
        assert await rarest(conn, ["999999", "Newsletter"]) == "999999"
    assert await _find(store, "Newsletter 999999") == [ids[600]]
    assert await _find(store, "newsletter 599") == [ids[599]]


async def test_sqlite_indexes_in_batches_and_searches_the_rest(store: Database) -> None:
    """On SQLite the FTS5 table takes messages a batch at a time; a search sees indexed
    and not yet indexed messages alike, pages across the boundary, and deletes of both
    kinds leave no trace."""
    if store.dialect != "sqlite":
        pytest.skip("SQLite batched indexing")
    ids: list[str] = []
    for chunk in range(11):  # 1,100 messages in commits of 100
        subjects = [f"Order {chunk * 100 + n:04d} お知らせ" for n in range(100)]
        ids += await _inject(store, *subjects, now=NOW + chunk)
    async with store.engine.connect() as conn:
        upto = (await conn.execute(text("SELECT indexed_upto FROM message_search_state"))).scalar()
        fts = (
            await conn.execute(
                text("SELECT count(*) FROM message_search_fts WHERE message_search_fts MATCH :q"),
                {"q": '"お知らせ"'},
            )
        ).scalar()
    assert upto is not None and search.SQLITE_BATCH <= upto < len(ids)
    assert fts == upto  # indexed: exactly the first ``upto`` messages
    web = WebStore(store.engine)
    seen: list[str] = []
    before: str | None = None
    while True:
        page = await web.search_messages(MessageQuery(q="お知らせ", before=before, limit=97))
        seen += [item.id for item in page.items]
        before = page.next_before
        if before is None:
            break
    assert seen == sorted(ids, reverse=True)
    indexed, waiting = ids[10], ids[-1]
    assert await _find(store, "order 0010") == [indexed]
    deleted = await queue_store(store).queue_action(
        "delete", now=NOW + 20, message_ids=[indexed, waiting]
    )
    assert deleted == 2
    assert await _find(store, "order 0010") == []
    assert await _find(store, "1099") == []
    assert len(await _find(store, "お知らせ", limit=500)) == 500
    more = await _inject(store, *[f"Late {n}" for n in range(600)], now=NOW + 30)
    assert await _find(store, "Late 599") == [more[-1]]
    assert await _find(store, "0011") == [ids[11]]
