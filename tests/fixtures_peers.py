"""Fixtures: fixtures_peers (filled in by its owner)."""
