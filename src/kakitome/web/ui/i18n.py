"""Languages of the admin UI: English and Japanese, one message catalogue per language.

A page asks ``t("key", name=value)``; the text is looked up in the viewer's language,
then English, then the key itself is shown (so a missing entry is visible, never an
error). Values are ``str.format`` templates; the arguments are escaped by the template
engine like any other text. Areas add their own entries (``UIArea.messages``).

The language is, in order: the user's profile, the ``kakitome_lang`` cookie, the browser's
``Accept-Language``, English.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from kakitome.web.ui.messages_en import EN
from kakitome.web.ui.messages_ja import JA

if TYPE_CHECKING:
    from kakitome.web.ui.nav import UIArea

LANGUAGES: dict[str, str] = {"en": "English", "ja": "日本語"}
DEFAULT = "en"


def negotiate(chosen: str | None, accept_language: str | None) -> str:
    """The language to use: ``chosen`` when supported, else the best of Accept-Language."""
    if chosen in LANGUAGES:
        return chosen
    best, best_q = DEFAULT, 0.0
    for part in (accept_language or "").split(",")[:20]:
        tag, _, params = part.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        base = tag.strip().lower().split("-")[0]
        if base in LANGUAGES and q > best_q:
            best, best_q = base, q
    return best


class Catalogue:
    """Messages per language; ``translator(lang)`` gives the ``t`` of a page."""

    def __init__(self, messages: Mapping[str, Mapping[str, str]]) -> None:
        self.messages = {lang: dict(entries) for lang, entries in messages.items()}

    @classmethod
    def with_areas(cls, areas: list[UIArea]) -> Catalogue:
        merged: dict[str, dict[str, str]] = {"en": dict(EN), "ja": dict(JA)}
        for area in areas:
            for lang, entries in area.messages.items():
                merged.setdefault(lang, {}).update(entries)
        return cls(merged)

    def translator(self, lang: str) -> Callable[..., str]:
        primary = self.messages.get(lang, {})
        fallback = self.messages.get(DEFAULT, {})

        def t(key: str, **kwargs: Any) -> str:
            text = primary.get(key) or fallback.get(key) or key
            if kwargs:
                try:
                    return text.format(**kwargs)
                except (KeyError, IndexError, ValueError):
                    return text
            return text

        return t
