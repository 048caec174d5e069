"""The finding catalog, the documentation and the tests stay in step."""

from __future__ import annotations

from pathlib import Path

from kakitome.checker.checks import REGISTRY
from kakitome.checker.findings import CATALOG, Finding

ROOT = Path(__file__).resolve().parents[2]


def test_every_code_is_documented() -> None:
    """docs/CHECKER.md lists every finding code and every registered check."""
    doc = (ROOT / "docs" / "CHECKER.md").read_text(encoding="utf-8")
    missing = [code for code in CATALOG if f"`{code}`" not in doc]
    assert not missing
    assert all(f"`{check.name}`" in doc for check in REGISTRY)


def test_every_code_has_a_test() -> None:
    """Each finding code is asserted by name in a checker test."""
    texts = "".join(
        p.read_text(encoding="utf-8") for p in Path(__file__).parent.glob("test_*.py")
        if p.name != "test_catalog.py"
    )
    assert [code for code in CATALOG if f'"{code}"' not in texts] == []


def test_every_code_has_both_languages() -> None:
    """Every message has English and Japanese text; every non-ok finding has a remedy."""
    for spec in CATALOG.values():
        assert spec.message_en and spec.message_ja, spec.code
        if spec.severity.value in ("warning", "error", "critical"):
            assert spec.remedy_en and spec.remedy_ja, spec.code


def test_finding_to_dict() -> None:
    """A finding renders its message and remedy in both languages from its params."""
    data = Finding("CERT_EXPIRED", "mx.example.test[127.0.0.1]", {"not_after": "2020-01-01"},
                   ).to_dict()
    assert data["severity"] == "error" and data["category"] == "certificate"
    assert "2020-01-01" in data["message"]["en"] and "2020-01-01" in data["message"]["ja"]
    assert data["remedy"]["en"]
