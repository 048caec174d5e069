"""Indexed search of message subjects: case-insensitive substrings, any script.

Japanese subjects have no spaces between words, so the index is of character trigrams,
not words: 「お知らせ」 is found inside 「【重要】12月のお知らせ」.

- SQLite: an FTS5 table with the ``trigram`` tokenizer, contentless (the subject is not
  stored twice), whose rowid is ``message_search.id`` — a stable INTEGER PRIMARY KEY
  beside each message id (the rowid of ``messages`` itself is not stable: VACUUM may
  renumber it). Triggers on ``messages`` keep both in step with every insert and delete,
  whatever path writes the row (injection, campaigns, DSNs). Indexing is batched
  (migration 0013): an insert only numbers the message; every ``SQLITE_BATCH`` numbered
  messages the insert that completes the batch indexes them in one statement, and
  ``message_search_state.indexed_upto`` says how far the FTS5 table goes. A search reads
  the index up to there and filters the newer (fewer than ``SQLITE_BATCH``) messages
  directly, so it sees every message as soon as it is committed. Tokenizing each subject
  in its own small commit cost 100-300 µs per injected message; batched, the cost is a
  few tens (bench/search_index_cost.py). Results come newest first in numbering
  (insertion) order; the page cursor is turned into a ``message_search.id`` bound, so
  pages never skip or repeat a message.
- PostgreSQL: a GIN ``gin_trgm_ops`` index on ``messages.subject`` (extension pg_trgm),
  searched with ``ILIKE``; newest first by id. Without pg_trgm (migration 0011 logs it)
  the same query runs as a scan. pg_trgm only takes trigrams of characters the
  database's LC_CTYPE calls letters or digits: under ``C`` Japanese yields none and the
  index cannot narrow the search (still correct, not fast); ``C.UTF-8`` or any UTF-8
  locale works.

Words are separated by white space and all must occur. A trigram index cannot find a
word of one or two characters, so words that short only filter: with at least one longer
word the index finds the candidates; when every word is that short, one page examines at
most ``SHORT_QUERY_WINDOW`` messages (newest first) and says so (``MessagePage.window``),
and the next page continues below the last message examined.

Objects here live outside ``schema.metadata`` (they differ per engine); migration 0011
creates them and ``is_search_object`` lets schema comparisons leave them out.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    func,
    literal_column,
    select,
)

__all__ = [
    "MIN_INDEXED_LENGTH",
    "SHORT_QUERY_WINDOW",
    "fts_query",
    "is_search_object",
    "like_pattern",
    "subject_words",
]

# The trigram tokenizer (and pg_trgm) index runs of three characters.
MIN_INDEXED_LENGTH = 3
# Messages one page of a query of only short words examines (about 20-60 ms).
SHORT_QUERY_WINDOW = 20_000
MAX_WORDS = 8

SQLITE_MAP = "message_search"  # (id INTEGER PRIMARY KEY, message_id UNIQUE)
SQLITE_FTS = "message_search_fts"  # FTS5, rowid = message_search.id
SQLITE_STATE = "message_search_state"  # (k = 1, indexed_upto)
# Messages indexed together (the literal in migration 0013's trigger).
SQLITE_BATCH = 500
PG_INDEX = "ix_messages_subject_trgm"

# Not in schema.metadata; described here so queries can be built with SQLAlchemy Core.
_search_metadata = MetaData()
message_search = Table(
    SQLITE_MAP,
    _search_metadata,
    Column("id", Integer, primary_key=True),
    Column("message_id", String(32), nullable=False, unique=True),
)
message_search_fts = Table(SQLITE_FTS, _search_metadata, Column("rowid", Integer))
message_search_state = Table(
    SQLITE_STATE,
    _search_metadata,
    Column("k", Integer, primary_key=True),
    Column("indexed_upto", Integer, nullable=False),
)


def is_search_object(name: str | None) -> bool:
    """Whether a table or index name is one of this module's (for schema comparisons)."""
    return bool(name) and (str(name).startswith(SQLITE_MAP) or name == PG_INDEX)


def subject_words(q: str) -> list[str]:
    """The distinct words of a query, longest first (at most ``MAX_WORDS``)."""
    words = sorted(set(q.split()), key=lambda w: (-len(w), w))
    return words[:MAX_WORDS]


def like_pattern(word: str) -> str:
    """``%word%`` with LIKE's wildcards escaped (escape character ``\\``)."""
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def fts_query(words: list[str]) -> str:
    """An FTS5 MATCH expression requiring every indexed word as an exact phrase."""
    return " AND ".join('"' + w.replace('"', '""') + '"' for w in words)


# Matches counted per word when choosing the rarest (a bounded probe of the index).
_PROBE = 1000


async def sqlite_rarest(conn: Any, words: list[str]) -> str:
    """Of ``words`` (each at least 3 characters), the one with the fewest matches, counted
    up to ``_PROBE``: an FTS5 AND of a common and a rare phrase walks the common one's
    whole posting list (1 s at a million subjects); the rare one alone takes ms."""
    if len(words) == 1:
        return words[0]
    counts = {}
    for word in words:
        probe = (
            select(message_search_fts.c.rowid)
            .where(literal_column(SQLITE_FTS).op("MATCH")(fts_query([word])))
            .limit(_PROBE)
            .subquery()
        )
        counts[word] = int(await conn.scalar(select(func.count()).select_from(probe)) or 0)
    return min(words, key=lambda w: counts[w])


async def pg_rarest(conn: Any, words: list[str]) -> str:
    """PostgreSQL: of ``words``, the one the planner expects in the fewest subjects (its
    estimate from pg_trgm's statistics; planning only, well under a millisecond). Counting
    matches instead cost 25-40 ms per word at a million messages."""
    from kakitome.store.schema import messages as m

    if len(words) == 1:
        return words[0]
    estimates = {}
    for word in words:
        probe = select(m.c.id).where(m.c.subject.ilike(like_pattern(word), escape="\\"))
        sql = str(probe.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        plan = await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}")
        document = plan.scalar()
        if isinstance(document, str):
            document = json.loads(document)
        estimates[word] = float(document[0]["Plan"]["Plan Rows"])
    return min(words, key=lambda w: estimates[w])


def sqlite_cursor(message_id: str) -> Any:
    """The index position of a page cursor (None when that message is not indexed)."""
    return select(message_search.c.id).where(message_search.c.message_id == message_id)


def sqlite_indexed_upto() -> Any:
    """How far the FTS5 table goes (``message_search.id``)."""
    return select(message_search_state.c.indexed_upto)


def sqlite_pending(*, upto: int, below: int | None, limit: int, where: list[Any]) -> Any:
    """Messages numbered after ``upto`` (not in the FTS5 table yet) that meet ``where``
    (conditions on ``schema.messages``, the words among them), newest first."""
    from kakitome.store.schema import messages as m

    s = message_search
    stmt = (
        select(m.c.id)
        .select_from(s.join(m, m.c.id == s.c.message_id))
        .where(s.c.id > upto, *where)
        .order_by(s.c.id.desc())
        .limit(limit)
    )
    if below is not None:
        stmt = stmt.where(s.c.id < below)
    return stmt


def sqlite_candidates(
    words: list[str],
    *,
    below: int | None,
    limit: int,
    where: list[Any],
    upto: int | None = None,
) -> Any:
    """Message ids whose subject holds every word of ``words`` (all of them at least
    ``MIN_INDEXED_LENGTH`` long), newest first; ``where`` are further conditions on
    ``schema.messages``; ``below`` the index position of the previous page's last id;
    ``upto`` where the index ends (``sqlite_indexed_upto``)."""
    from kakitome.store.schema import messages as m

    s, f = message_search, message_search_fts
    stmt = (
        select(m.c.id)
        .select_from(f.join(s, s.c.id == f.c.rowid).join(m, m.c.id == s.c.message_id))
        .where(literal_column(SQLITE_FTS).op("MATCH")(fts_query(words)), *where)
        .order_by(f.c.rowid.desc())
        .limit(limit)
    )
    if below is not None:
        stmt = stmt.where(f.c.rowid < below)
    if upto is not None:
        stmt = stmt.where(f.c.rowid <= upto)
    return stmt
