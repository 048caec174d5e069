"""Settings (admins only): every key's effective value and source; the editable ones change.

What may be changed at run time, the precedence (environment > database > file >
defaults) and when a change applies are ``kakitome.settings_overlay``'s. The page shows
each key with its source; keys in ``EDITABLE`` that the environment does not set get an
input and a "reset" box (back to the file's or default value). One form saves every
section; only values that differ from the effective ones are stored, after all of them
have been checked by the settings models (a bad value: 422, each problem in the viewer's
language, nothing saved).

Redacted: every ``SecretStr``, any key whose name says password, secret, token or
passphrase, and the password in the database URL (``kakitome.settings_overlay.redact``).
Routes are edited on their own page (``/ui/routes``).
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any, Protocol

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from kakitome.config import Settings
from kakitome.settings_overlay import (
    EDITABLE,
    ROUTES,
    Problem,
    SettingsInvalid,
    SettingView,
    apply_overlay,
    describe,
    plain,
    validate_changes,
    validate_resets,
)
from kakitome.web.ui.context import UI, Form, Viewer
from kakitome.web.ui.nav import NavItem, UIArea

# pydantic error types (and ours) with a message of their own in the catalogues; any
# other is shown as "settings.error.other" with pydantic's English text.
KNOWN_PROBLEMS = frozenset(
    {
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "int_parsing",
        "int_from_float",
        "float_parsing",
        "bool_parsing",
        "string_pattern_mismatch",
        "string_too_long",
        "enum",
        "missing",
        "extra_forbidden",
        "not_editable",
        "set_by_environment",
        "route_url",
        "route_match",
        "route_duplicate",
    }
)



class OverlayValues(Protocol):
    """What ``_changes`` reads of the overlay store (``services.settings_store``)."""

    async def values(self) -> dict[str, Any]: ...


def problem_text(viewer: Viewer, problem: Problem) -> str:
    """One problem in the viewer's language."""
    if problem.kind in KNOWN_PROBLEMS:
        return viewer.t(f"settings.error.{problem.kind}", where=problem.where, **problem.ctx)
    return viewer.t("settings.error.other", where=problem.where, detail=problem.message)


def by(viewer: Viewer) -> str:
    return f"user {viewer.user.username}" if viewer.user is not None else ""


def field_kind(value: Any) -> str:
    """How a value is edited: ``bool`` (yes/no), ``choice`` (an enum), ``lines`` (one item
    a line), ``table`` ("name value" a line), ``text``."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Enum):
        return "choice"
    if isinstance(value, list | tuple):
        return "lines"
    if isinstance(value, dict):
        return "table"
    return "text"


def as_text(value: Any) -> str:
    """The value as it is shown in its input."""
    data = plain(value)
    if isinstance(data, list):
        return "\n".join(str(v) for v in data)
    if isinstance(data, dict):
        return "\n".join(f"{k} {v}" for k, v in data.items())
    if isinstance(data, bool):
        return "true" if data else "false"
    return "" if data is None else str(data)


def parse_field(kind: str, text: str) -> Any:
    """What the form sent, as the models take it (they check and convert the rest)."""
    if kind == "lines":
        return [part.strip() for part in re.split(r"[\n,]", text) if part.strip()]
    if kind == "table":
        table: dict[str, str] = {}
        for line in text.splitlines():
            name, _, value = line.strip().replace("=", " ").partition(" ")
            if name:
                table[name] = value.strip()
        return table
    return text.strip()


class Field:
    """An editable key on the page."""

    def __init__(self, view: SettingView, value: Any) -> None:
        self.view = view
        self.kind = field_kind(value)
        self.text = as_text(value)
        self.choices = [c.value for c in type(value)] if isinstance(value, Enum) else []


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    need_admin = Depends(ui.require("admin"))
    overlay = ui.services.settings_store

    async def page(
        request: Request,
        viewer: Viewer,
        status: int = 200,
        *,
        sent: dict[str, str] | None = None,
        **extra: object,
    ) -> Response:
        entries = await overlay.entries()
        effective = apply_overlay(ui.settings, {k: e.value for k, e in entries.items()})
        sections: dict[str, list[SettingView]] = {}
        fields: dict[str, Field] = {}
        for view in describe(ui.settings, entries):
            sections.setdefault(view.section, []).append(view)
            if view.editable and view.key != ROUTES:
                field = Field(view, getattr(getattr(effective, view.section), view.name))
                if sent is not None and view.key in sent:
                    field.text = sent[view.key]  # what was typed, when it was refused
                fields[view.key] = field
        return ui.render(
            request,
            viewer,
            "settings/index.html",
            status,
            sections=sections,
            fields=fields,
            editable_keys=EDITABLE,
            **extra,
        )

    @r.get("/settings", include_in_schema=False)
    async def settings_page(request: Request, viewer: Viewer = need_admin) -> Response:
        return await page(request, viewer)

    @r.post("/settings", include_in_schema=False)
    async def save(request: Request, viewer: Viewer = need_admin) -> Response:
        form = await ui.form(request, viewer)
        changes, resets, sent = await _changes(form, ui.settings, overlay)
        try:
            values = validate_changes(ui.settings, changes)
            validate_resets(ui.settings, resets)
        except SettingsInvalid as exc:
            errors = [problem_text(viewer, p) for p in exc.problems]
            return await page(
                request,
                viewer,
                422,
                sent=sent,
                error=viewer.t("settings.refused"),
                problems=errors,
            )
        entries = await overlay.entries()
        effective = apply_overlay(ui.settings, {k: e.value for k, e in entries.items()})
        stored = {
            key: value for key, value in values.items() if value != plain(_value(effective, key))
        }
        if stored or resets:
            await overlay.change(stored, resets, now=ui.clock(), by=by(viewer))
        changed = sorted({*stored, *resets})
        notice = (
            viewer.t("settings.saved", keys=", ".join(changed))
            if changed
            else viewer.t("settings.unchanged")
        )
        return await page(request, viewer, notice=notice)

    return r


def _value(settings: Settings, key: str) -> Any:
    section, _, name = key.partition(".")
    return getattr(getattr(settings, section), name)


async def _changes(
    form: Form, settings: Settings, overlay: OverlayValues
) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """(values to check, keys to reset, what was typed) from the form. Values are those
    of editable keys the form sent; a key both reset and sent is reset."""
    effective = apply_overlay(settings, await overlay.values())
    resets = [key for key in form.getlist("reset") if key]
    changes: dict[str, Any] = {}
    sent: dict[str, str] = {}
    for key in EDITABLE:
        if key == ROUTES or key in resets:
            continue
        text = form.get(f"v:{key}", "\0")
        if text == "\0":
            continue
        sent[key] = text
        changes[key] = parse_field(field_kind(_value(effective, key)), text)
    return changes, resets, sent


AREA = UIArea(
    name="settings",
    router=router,
    nav=(NavItem("settings", "/ui/settings", "nav.settings", "admin", 90),),
)
