"""The navigation registry: how an area of the admin UI joins the site.

An *area* is a router, a template folder and navigation entries. The core areas live in
``kakitome.web.ui.areas``; any module added to that package that defines ``AREA`` (a
``UIArea``) is found at start-up by ``discover_areas()``, so a new area (domains,
checker, lists, campaigns, ...) is one new module plus ``web/templates/<area>/`` and never
an edit to an existing file. Areas may also bring their own message catalogue entries.

The contract (a type alias, as structlog documents its extension points)::

    RouterFactory = Callable[[UI], APIRouter]

The router's paths are relative to ``/ui``; each route protects itself with
``ui.require(role)`` (``viewer`` < ``sender`` < ``admin``) and its POST forms with
``await ui.form(request, viewer)`` (which checks the CSRF token).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter

if TYPE_CHECKING:
    from kakitome.web.ui.context import UI

RouterFactory = Callable[["UI"], APIRouter]

ROLE_RANK = {"viewer": 0, "sender": 1, "admin": 2}


@dataclass(frozen=True, slots=True)
class NavItem:
    """One link in the header: ``label`` is a catalogue key; ``role`` the least role
    that sees it; ``order`` sorts the links (core areas use 10, 20, ... 90)."""

    key: str
    href: str
    label: str
    role: str = "viewer"
    order: int = 100


@dataclass(frozen=True, slots=True)
class UIArea:
    name: str
    router: RouterFactory
    nav: tuple[NavItem, ...] = ()
    templates: Path | None = None  # extra template folder (besides web/templates/<name>/)
    # Catalogue entries per language: {"en": {"key": "text"}, "ja": {...}}
    messages: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def role_allows(role: str, needed: str) -> bool:
    """True when ``role`` is at least ``needed``."""
    return ROLE_RANK.get(role, -1) >= ROLE_RANK[needed]


def discover_areas(package: str = "kakitome.web.ui.areas") -> list[UIArea]:
    """Every ``AREA`` defined by a module of ``package``, sorted by name."""
    found: list[UIArea] = []
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(module.__path__):
        sub = importlib.import_module(f"{package}.{info.name}")
        area = getattr(sub, "AREA", None)
        if isinstance(area, UIArea):
            found.append(area)
    return sorted(found, key=lambda a: a.name)


def navigation(areas: list[UIArea], role: str) -> list[NavItem]:
    """The links a user of ``role`` sees, in order."""
    items = [item for area in areas for item in area.nav if role_allows(role, item.role)]
    return sorted(items, key=lambda i: (i.order, i.key))
