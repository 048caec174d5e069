"""Fixtures: fixtures_db (filled in by its owner)."""
