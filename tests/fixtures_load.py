"""Load beside a test: busy processes that keep the machine's CPUs occupied.

The crash tests promise that what a SIGKILL sends twice is bounded by what was in flight,
on a busy machine too. `cpu_hog` starts `KAKITOME_TEST_HOGS` (default 2) Python busy
loops for the length of one test. Each loop ends itself after HOG_SECONDS even if the test
run is killed before teardown, so a hog never outlives the test by more than that.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

HOG_SECONDS = 600
_LOOP = f"import time\nend = time.monotonic() + {HOG_SECONDS}\nwhile time.monotonic() < end: pass\n"


class CPUHog:
    """Busy-loop processes running for the length of one test."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.started = time.monotonic()
        self._procs = [
            subprocess.Popen([sys.executable, "-c", _LOOP], stdin=subprocess.DEVNULL)
            for _ in range(count)
        ]

    def alive(self) -> int:
        return sum(1 for p in self._procs if p.poll() is None)

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self._procs:
            proc.wait(timeout=10)

    def __str__(self) -> str:
        load = os.getloadavg()[0]
        return (f"{self.alive()}/{self.count} CPU hogs for "
                f"{time.monotonic() - self.started:.0f} s, load {load:.1f}")  # fmt: skip


@pytest.fixture
def cpu_hog() -> Iterator[CPUHog]:
    """Two busy loops (KAKITOME_TEST_HOGS to change; 0 for none) beside the test."""
    hog = CPUHog(int(os.environ.get("KAKITOME_TEST_HOGS", "2")))
    try:
        yield hog
    finally:
        hog.stop()
