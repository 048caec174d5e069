"""``/api/v1``: settings changed at run time, and the inbound routes (one of them).

What may be changed, the precedence (environment > database > file > defaults) and when a
change takes effect are ``kakitome.settings_overlay``'s; this router is thin over it.

- ``GET /settings`` (admin): every key with its effective value (secrets hidden), its
  ``source`` (``environment``, ``database``, ``file``, ``default``), whether it is
  ``editable`` here and when a change ``applies`` (``at_once``: running processes take it
  within a few seconds; ``at_next_start``).
- ``PATCH /settings`` (admin): a JSON object ``{"section.key": value}``; ``null`` removes
  the key from the database (the file's or default value returns). Every value is checked
  by the same models as the settings file; one bad value refuses the whole change (422,
  code ``invalid_settings``, each problem named) and nothing is stored.
- ``GET /routes`` (read): the inbound routes in the order they are tried (first match
  wins), without secrets (``has_secret``), with the inbound domains.
- ``PUT /routes`` (admin): the whole ordered list (add, edit, delete and reorder are one
  PUT). A route that leaves ``secret`` out keeps the secret of the current route with the
  same ``match``; ``"secret": null`` removes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from kakitome.accounts.api_keys import ApiKeyInfo
from kakitome.receipts import iso_utc
from kakitome.settings_overlay import (
    ROUTES,
    SettingsInvalid,
    apply_overlay,
    describe,
    keep_route_secrets,
    validate_changes,
    validate_resets,
)
from kakitome.web.api_lists import Model, Text
from kakitome.web.auth import require_scope
from kakitome.web.deps import ServicesDep
from kakitome.web.errors import ApiError

if TYPE_CHECKING:
    from kakitome.services import Services

PRECEDENCE = ["environment", "database", "file", "default"]


class SettingOut(BaseModel):
    key: str
    value: Any
    source: Literal["environment", "database", "file", "default"]
    editable: bool
    applies: Literal["at_once", "at_next_start"] | None = Field(
        description="when a change takes effect; null when the key is not editable here"
    )
    updated_at: str | None
    updated_by: str


class SettingsOut(BaseModel):
    precedence: list[str] = Field(description="sources, the first wins")
    settings: list[SettingOut]


class RouteOut(BaseModel):
    match: str
    action: str
    url: str | None
    has_secret: bool


class RoutesOut(BaseModel):
    routes: list[RouteOut] = Field(description="in the order they are tried; first match wins")
    source: Literal["environment", "database", "file", "default"]
    editable: bool
    domains: list[str]
    return_path_domains: list[str]


class RouteIn(Model):
    match: Text = Field(
        min_length=1,
        max_length=320,
        description="user@example.com, @example.com or example.com, or * (anything else)",
    )
    action: Literal["forward", "hold", "reject"]
    url: Text | None = Field(default=None, max_length=2000)
    secret: Text | None = Field(
        default=None,
        max_length=500,
        description="signs forwarded POSTs; left out: the current route's is kept",
    )


class RoutesIn(Model):
    routes: list[RouteIn] = Field(max_length=1000)


def _refused(exc: SettingsInvalid) -> ApiError:
    return ApiError(422, "invalid_settings", str(exc))


router = APIRouter(prefix="/api/v1", tags=["settings"])
can_read = Depends(require_scope("read"))
can_admin = Depends(require_scope("admin"))


async def settings_out(services: Services) -> SettingsOut:
    views = describe(services.settings, await services.settings_store.entries())
    return SettingsOut(
        precedence=PRECEDENCE,
        settings=[
            SettingOut(
                key=v.key,
                value=v.value,
                source=v.source,  # type: ignore[arg-type]
                editable=v.editable,
                applies=("at_once" if v.live else "at_next_start") if v.editable else None,
                updated_at=iso_utc(v.updated_at),
                updated_by=v.updated_by,
            )
            for v in views
        ],
    )


async def routes_out(services: Services) -> RoutesOut:
    settings = services.settings
    entries = await services.settings_store.entries()
    current = apply_overlay(settings, {k: e.value for k, e in entries.items()})
    view = next(v for v in describe(settings, entries) if v.key == ROUTES)
    inbound = current.inbound
    return RoutesOut(
        routes=[
            RouteOut(match=r.match, action=r.action, url=r.url, has_secret=r.secret is not None)
            for r in inbound.routes
        ],
        source=view.source,  # type: ignore[arg-type]
        editable=view.editable,
        domains=list(inbound.domains),
        return_path_domains=list(inbound.return_path_domains),
    )


@router.get("/settings", response_model=SettingsOut)
async def get_settings(services: ServicesDep, key: ApiKeyInfo = can_admin) -> SettingsOut:
    """Every setting: effective value (secrets hidden), source, editable, applies."""
    return await settings_out(services)


@router.patch("/settings", response_model=SettingsOut)
async def patch_settings(
    body: dict[str, Any], services: ServicesDep, key: ApiKeyInfo = can_admin
) -> SettingsOut:
    """Change editable settings: ``{"section.key": value}``; ``null`` resets a key to
    the file's or default value. All or nothing."""
    settings = services.settings
    changes = {k: v for k, v in body.items() if v is not None}
    reset = [k for k, v in body.items() if v is None]
    try:
        values = validate_changes(settings, changes)
        validate_resets(settings, reset)
    except SettingsInvalid as exc:
        raise _refused(exc) from exc
    await services.settings_store.change(
        values, reset, now=services.clock(), by=f"api key {key.name}"
    )
    return await settings_out(services)


@router.get("/routes", response_model=RoutesOut)
async def get_routes(services: ServicesDep, key: ApiKeyInfo = can_read) -> RoutesOut:
    """The inbound routes in the order they are tried, and the inbound domains."""
    return await routes_out(services)


@router.put("/routes", response_model=RoutesOut)
async def put_routes(
    body: RoutesIn, services: ServicesDep, key: ApiKeyInfo = can_admin
) -> RoutesOut:
    """Replace the routes (the whole ordered list). Leaving ``secret`` out keeps the
    current secret of the route with the same ``match``."""
    settings = services.settings
    overlay = services.settings_store
    current = apply_overlay(settings, await overlay.values())
    routes = keep_route_secrets(
        [r.model_dump(exclude_unset=True) for r in body.routes], current.inbound.routes
    )
    try:
        values = validate_changes(settings, {ROUTES: routes})
    except SettingsInvalid as exc:
        raise _refused(exc) from exc
    await overlay.change(values, now=services.clock(), by=f"api key {key.name}")
    return await routes_out(services)
