"""Tests: kakitome.auth is a pure library — no storage, web or CLI imports — and every
module's ``__all__`` names what it defines."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

MODULES = [
    "kakitome.auth.dkim_keys",
    "kakitome.auth.dkim_canon",
    "kakitome.auth.dkim_sign",
    "kakitome.auth.dkim_verify",
    "kakitome.auth.dnsio",
    "kakitome.auth.spf",
    "kakitome.auth.dmarc",
    "kakitome.auth.results",
]


def test_no_storage_web_or_cli_imports() -> None:
    """Layering: importing every auth module loads nothing of store, web or cli."""
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + "bad = [m for m in sys.modules if m.split('.')[:2] in "
        "(['kakitome', 'store'], ['kakitome', 'web'], ['kakitome', 'cli'])]\n"
        "print(','.join(bad))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == ""


@pytest.mark.parametrize("name", MODULES)
def test_all_is_honest(name: str) -> None:
    """Every name in ``__all__`` exists in its module."""
    module = importlib.import_module(name)
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert missing == []
