"""Shared test set-up: each helper module holds one family of fixtures.

Tests marked ``heavy`` (service processes, thousands of messages, CPU hogs) go to one
xdist group, so under ``pytest -n 2`` they run one after another on one worker while the
other tests share both workers: two of them at once would only measure each other.
"""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures_db",
    "tests.fixtures_world",
    "tests.fixtures_peers",
    "tests.fixtures_inbound",
    "tests.fixtures_load",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("heavy") is not None:
            item.add_marker(pytest.mark.xdist_group("heavy"))
