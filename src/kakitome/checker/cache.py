"""The checker's result cache: one JSON file in the data directory, entries with a TTL.

Talks to: the file system only — ``<data_dir>/checker-cache.json`` (mode 0600, written to
a temporary file and renamed, so a crash never leaves half a file). We chose a file over a
database table because cached probe results are disposable (losing them costs one more
probe), the checker must work without a database, and a file needs no migration.

Trusts: nothing in the file beyond its shape: an unreadable or malformed file is ignored
(and replaced at the next save), never an error.

Limits: entries older than ``checker.cache_ttl`` are never returned and are dropped when
the file is read or written; at most ``checker.cache_entries`` entries are kept (the
oldest go first). The clock is injected.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
FILE_NAME = "checker-cache.json"


class CheckerCache:
    """Key -> JSON value, each stored with the time it was stored."""

    def __init__(
        self,
        path: Path | None,
        *,
        ttl: float,
        max_entries: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[float, Any]] = {}
        self._dirty = False
        self.hits = 0
        self.misses = 0

    @classmethod
    def open(
        cls,
        path: Path | None,
        *,
        ttl: float,
        max_entries: int,
        clock: Callable[[], float] = time.time,
    ) -> CheckerCache:
        """Load ``path`` when it exists and holds a cache of this format."""
        cache = cls(path, ttl=ttl, max_entries=max_entries, clock=clock)
        if path is None or ttl <= 0:
            return cache
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cache
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            return cache
        now = clock()
        entries = data.get("entries")
        if isinstance(entries, dict):
            for key, item in entries.items():
                if (
                    isinstance(item, list)
                    and len(item) == 2
                    and isinstance(item[0], int | float)
                    and now - item[0] < ttl
                ):
                    cache._entries[key] = (float(item[0]), item[1])
        return cache

    def get(self, key: str) -> Any | None:
        item = self._entries.get(key)
        if item is None or self._clock() - item[0] >= self.ttl:
            self.misses += 1
            return None
        self.hits += 1
        return item[1]

    def put(self, key: str, value: Any) -> None:
        if self.ttl <= 0 or self.max_entries <= 0:
            return
        self._entries[key] = (self._clock(), value)
        self._dirty = True

    def __len__(self) -> int:
        return len(self._entries)

    def save(self) -> None:
        """Write the file (atomically) when something changed; OSError propagates."""
        if self.path is None or not self._dirty:
            return
        now = self._clock()
        live = sorted(
            ((k, v) for k, v in self._entries.items() if now - v[0] < self.ttl),
            key=lambda kv: kv[1][0],
        )[-self.max_entries :]
        self._entries = dict(live)
        document = {
            "version": FORMAT_VERSION,
            "entries": {k: [t, v] for k, (t, v) in self._entries.items()},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".checker-cache-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(document, out, ensure_ascii=False, separators=(",", ":"))
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._dirty = False
