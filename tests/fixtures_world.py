"""Fixtures: fixtures_world (filled in by its owner)."""
