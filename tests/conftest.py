"""Shared test set-up: each helper module holds one family of fixtures."""

pytest_plugins = [
    "tests.fixtures_db",
    "tests.fixtures_world",
    "tests.fixtures_peers",
    "tests.fixtures_inbound",
]
