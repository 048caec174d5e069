"""Benchmark: import a CSV of N subscribers (default 1,000,000) into one list.

Usage: python bench/import_csv.py [--rows N] [--database URL] [--encoding cp932|utf-8]

Writes the file to a temporary folder (Shift_JIS names and a Japanese attribute), imports
it with ``ListService.import_csv`` and prints rows/s, seconds and the peak resident set
size (ru_maxrss) as one JSON line, with the process's CPU seconds during the import and
the load average (the machine may be shared: wall time then says less than CPU time).
The target is 1,000,000 rows in under 60 s with memory under 500 MB, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from kakitome.config import Settings
from kakitome.lists import ListService, NewList, TokenSigner
from kakitome.store.database import Database


def write_csv(path: Path, rows: int, encoding: str) -> None:
    with path.open("w", encoding=encoding, newline="") as out:
        out.write("メールアドレス,氏名,会員種別,年齢\r\n")
        for i in range(rows):
            out.write(f"user{i}@example{i % 997}.jp,山田 太郎{i},ゴールド,{20 + i % 50}\r\n")


async def run(rows: int, url: str, encoding: str, folder: Path) -> dict[str, object]:
    csv_path = folder / "subscribers.csv"
    started = time.perf_counter()
    write_csv(csv_path, rows, encoding)
    written = time.perf_counter() - started
    store = await Database.open(url, pool_size=4)
    try:
        settings = Settings.model_validate({"paths": {"data_dir": str(folder)}})
        service = ListService(store, settings, signer=TokenSigner(b"bench-secret-0123456789"))
        name = f"bench{int(time.time()) % 100000}"
        lst = await service.create_list(NewList(name=name, opt_in="single"))
        cpu_before = _cpu()
        report = await service.import_csv(lst.id, csv_path)
        cpu = _cpu() - cpu_before
        count = await service.count_audience(lst.id)
    finally:
        await store.close()
    return {
        "database": url.split(":", 1)[0],
        "rows": rows,
        "file_mb": round(csv_path.stat().st_size / 1e6, 1),
        "write_seconds": round(written, 1),
        "import_seconds": round(report.seconds, 1),
        "rows_per_second": round(rows / report.seconds),
        "cpu_seconds": round(cpu, 1),
        "load_average": round(os.getloadavg()[0], 1),
        "inserted": report.inserted,
        "rejected": len(report.rejected),
        "audience": count,
        "encoding": report.encoding,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def _cpu() -> float:
    """CPU seconds of this process (all threads: the SQLite driver's too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--encoding", default="cp932")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = args.database or f"sqlite:///{folder / 'bench.db'}"
        result = asyncio.run(run(args.rows, url, args.encoding, folder))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
