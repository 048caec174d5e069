"""Load beside a test: busy processes that keep the machine's CPUs occupied.

The crash tests promise that what a SIGKILL sends twice is bounded by what was in flight,
on a busy machine too. `cpu_hog` gives a test `KAKITOME_TEST_HOGS` (default 2) Python busy
loops that it starts for the phase that matters (delivering, up to the kill) and that stop
at the latest when the test ends. Each loop ends itself after HOG_SECONDS even if the test
run is killed before teardown, so a hog never outlives its test by more than that.
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
    """Busy-loop processes beside a test, from ``start()`` to ``stop()`` (or its end)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._procs: list[subprocess.Popen[bytes]] = []
        self._started = 0.0
        self._ran = 0.0
        self._load = 0.0

    def start(self) -> CPUHog:
        """Start the loops (at the phase the test is about, not for its whole length)."""
        if not self._procs:
            self._started = time.monotonic()
            self._procs = [
                subprocess.Popen([sys.executable, "-c", _LOOP], stdin=subprocess.DEVNULL)
                for _ in range(self.count)
            ]
        return self

    def alive(self) -> int:
        return sum(1 for p in self._procs if p.poll() is None)

    def stop(self) -> None:
        """Stop the loops; what they did is kept for ``str``."""
        if not self._procs:
            return
        self._load = os.getloadavg()[0]
        self._ran = time.monotonic() - self._started
        if self.alive() < self.count:
            self._ran = -self._ran  # one ended on its own: said below
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self._procs:
            proc.wait(timeout=10)
        self._procs = []

    def __str__(self) -> str:
        if self._procs:
            return (f"{self.alive()}/{self.count} CPU hogs running for "
                    f"{time.monotonic() - self._started:.0f} s, "
                    f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
        if not self._ran:
            return "no CPU hogs"
        ended = " (one ended early)" if self._ran < 0 else ""
        return (f"{self.count} CPU hogs ran {abs(self._ran):.0f} s{ended}, "
                f"load {self._load:.1f} when stopped")  # fmt: skip


@pytest.fixture
def cpu_hog() -> Iterator[CPUHog]:
    """Two busy loops (KAKITOME_TEST_HOGS to change; 0 for none), started by the test
    with ``cpu_hog.start()`` and stopped at its end at the latest."""
    hog = CPUHog(int(os.environ.get("KAKITOME_TEST_HOGS", "2")))
    try:
        yield hog
    finally:
        hog.stop()
