"""Tests: compose."""
