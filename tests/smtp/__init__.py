"""Tests: smtp."""
