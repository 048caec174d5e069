"""Settings changed at run time: the database overlay, what may be in it, and its reload.

Precedence, later ones winning (``kakitome.config`` reads the first three once at start):

1. the defaults (``kakitome.config``);
2. the TOML settings file;
3. **the database overlay** (``settings_overlay`` table), for the keys in ``EDITABLE`` only;
4. the environment (``KAKITOME_<SECTION>__<KEY>``).

The environment wins because it is how a deployment (a container, a unit file) pins a value
on purpose; a key it sets is shown as "environment" and cannot be changed from the UI or
the API. The overlay wins over the file because the person changing a value in the UI must
see it take effect; "reset" removes the key from the overlay and the file's value returns.

What may be changed at run time (``EDITABLE``), and why only that: operational policy that
an administrator adjusts while the service runs — inbound routes and domains, the TLS
policy table, STARTTLS-stripping handling, retry schedules and lifetimes, per-destination
concurrency, webhook retries, campaign and list defaults. Not editable here, shown read-only
with their source: secrets (DKIM key passphrase, token and link secrets: kept out of the
database whose contents they protect), the database URL and pool (the overlay lives in that
database), listener hosts and ports, certificate files and paths (they need the process to
rebind or reopen files, and a mistake there locks the administrator out of the UI that
would undo it), the resolver and ``dns.trust_ad`` (whether to trust DNSSEC answers is a
decision about the host's network), and logging.

Running processes: every ``serve`` process runs ``LiveSettings.run``, which reads the
overlay every ``RELOAD_INTERVAL`` seconds and, when it changed, makes new effective settings
and tells its subscribers. Keys marked ``live`` are then in force at once (the MX routes
each message by the current routes and domains; the delivery agent and its pool take the
TLS policy, stripping and per-destination concurrency for the next batch); the others are
read when a process starts (the worker's retry schedule, the webhook dispatcher, the
campaign runner): the UI and the API say so next to each key.

A value is validated by the same pydantic models as the file (``validate_changes``): an
invalid value is refused with ``SettingsInvalid`` (one ``Problem`` per mistake, with the
pydantic error type and context so the UI can say it in Japanese too) and nothing is
stored. A stored value that no longer validates (after an upgrade) is skipped with a
warning, and the file's value is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

import structlog
from pydantic import BaseModel, SecretStr, ValidationError
from sqlalchemy.engine import make_url

from kakitome.config import Settings
from kakitome.errors import InputError, StorageError
from kakitome.store.settings_store import OverlayEntry, SettingsStore

__all__ = [
    "EDITABLE",
    "REDACTED",
    "RELOAD_INTERVAL",
    "ROUTES",
    "Editable",
    "LiveSettings",
    "Problem",
    "SettingView",
    "SettingsInvalid",
    "apply_overlay",
    "before_overlay",
    "current_settings",
    "describe",
    "keep_route_secrets",
    "plain",
    "redact",
    "validate_changes",
    "validate_resets",
]

log = structlog.get_logger("kakitome.settings")

# Seconds between reads of the overlay by a running process: one small SELECT.
RELOAD_INTERVAL = 2.0
REDACTED = "••••••"
ROUTES = "inbound.routes"


@dataclass(frozen=True, slots=True)
class Editable:
    """A key that may be changed at run time; ``live``: running processes take it at once
    (within ``RELOAD_INTERVAL``), else when a process next starts."""

    key: str
    live: bool

    @property
    def section(self) -> str:
        return self.key.partition(".")[0]

    @property
    def name(self) -> str:
        return self.key.partition(".")[2]


EDITABLE: dict[str, Editable] = {
    e.key: e
    for e in (
        Editable("inbound.routes", live=True),
        Editable("inbound.domains", live=True),
        Editable("inbound.return_path_domains", live=True),
        Editable("inbound.forward_attempts", live=True),
        Editable("tls.policy", live=True),
        Editable("tls.default_level", live=True),
        Editable("stripping.enabled", live=True),
        Editable("stripping.defer", live=True),
        Editable("stripping.window", live=True),
        Editable("delivery.per_destination_concurrency", live=True),
        Editable("queue.retry_first", live=False),
        Editable("queue.retry_factor", live=False),
        Editable("queue.retry_max", live=False),
        Editable("queue.lifetime", live=False),
        Editable("webhooks.max_attempts", live=False),
        Editable("webhooks.retry_first", live=False),
        Editable("webhooks.retry_max", live=False),
        Editable("campaigns.tracking", live=False),
        Editable("campaigns.wrap_width", live=False),
        Editable("lists.confirmation_lifetime", live=False),
        Editable("lists.public_archive", live=False),
    )
}


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a change was refused. ``kind``: a pydantic error type
    (``greater_than_equal``, ``enum``, ...) or one of ours (``not_editable``,
    ``set_by_environment``, ``route_url``, ``route_match``); ``ctx``: its arguments."""

    key: str
    where: str
    kind: str
    message: str
    ctx: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class SettingsInvalid(InputError):
    """A change to the settings was refused; nothing was stored."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


# -- values -----------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """A value as JSON-ready data, secrets in the clear (for storing in the overlay)."""
    if isinstance(value, BaseModel):
        return {name: plain(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    return value


_SECRET_NAME = re.compile(r"pass|secret|token|private|credential", re.IGNORECASE)


def redact(value: Any, name: str = "") -> Any:
    """JSON-ready data with every secret replaced by ``REDACTED``."""
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, name) for v in value]
    if value is not None and _SECRET_NAME.search(name):
        return REDACTED
    if isinstance(value, str) and value.startswith("**********"):
        return REDACTED
    return value


def _shown(key: str, value: Any) -> Any:
    """The value of ``key`` as people may see it (secrets and URL passwords hidden)."""
    data = redact(plain(value), key.partition(".")[2])
    if key == "database.url" and isinstance(data, str):
        try:
            url = make_url(data)
            if url.password is not None:
                return url.render_as_string(hide_password=True)
        except Exception:
            return REDACTED
    return data


# -- validation -------------------------------------------------------------------------


def before_overlay(settings: Settings) -> Settings:
    """The settings from defaults, file and environment (without the database overlay)."""
    return settings._before_overlay or settings


def _route_problems(routes: tuple[Any, ...]) -> list[Problem]:
    problems = []
    seen: set[str] = set()
    for i, route in enumerate(routes):
        where = f"{ROUTES}.{i}"
        key = route.match.strip().lower()
        if key in seen:
            # The first matching route wins, so a second one could never be reached (and
            # the forwarder finds a route's URL and secret by its match).
            problems.append(
                Problem(ROUTES, f"{where}.match", "route_duplicate", "the same match twice")
            )
        seen.add(key)
        local, _, domain = route.match.strip().lower().rpartition("@")
        if route.match.strip() != "*" and (
            not domain or "@" in local or any(c.isspace() for c in route.match.strip())
        ):
            problems.append(
                Problem(ROUTES, f"{where}.match", "route_match", "not an address, @domain or *")
            )
        if route.action == "forward":
            parts = urlsplit(route.url or "")
            if parts.scheme not in ("http", "https") or not parts.hostname:
                problems.append(
                    Problem(
                        ROUTES,
                        f"{where}.url",
                        "route_url",
                        "a forward route needs an http:// or https:// URL",
                    )
                )
    return problems


def _number(value: Any) -> Any:
    """0.0 as 0 in messages (the models' bounds are floats)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _validate_key(base: Settings, key: str, value: Any) -> Any:
    """The validated value of one editable key (raises SettingsInvalid)."""
    section_name, _, name = key.partition(".")
    section = getattr(base, section_name)
    try:
        checked = type(section).model_validate({**dict(section), name: value})
    except ValidationError as exc:
        problems = [
            Problem(
                key,
                ".".join([section_name, *(str(p) for p in err["loc"])]),
                err["type"],
                err["msg"],
                {k: _number(plain(v)) for k, v in (err.get("ctx") or {}).items() if k != "error"},
            )
            for err in exc.errors()
        ]
        raise SettingsInvalid(problems) from exc
    result = getattr(checked, name)
    if key == ROUTES:
        problems = _route_problems(result)
        if problems:
            raise SettingsInvalid(problems)
    return result


def _key_problem(base: Settings, key: str) -> Problem | None:
    if key not in EDITABLE:
        return Problem(key, key, "not_editable", "this setting cannot be changed at run time")
    if key in base.env_keys:
        return Problem(
            key, key, "set_by_environment", "set by the environment, which wins; change it there"
        )
    return None


def validate_resets(settings: Settings, keys: list[str]) -> None:
    """Check that each key may be reset (editable, not set by the environment); raises
    SettingsInvalid otherwise."""
    base = before_overlay(settings)
    problems = [p for p in (_key_problem(base, key) for key in keys) if p is not None]
    if problems:
        raise SettingsInvalid(problems)


def validate_changes(settings: Settings, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``{"section.key": value}`` against the whitelist, the environment and the
    models; return the values to store (JSON-ready, normalised). Raises SettingsInvalid
    listing every problem; nothing should be stored then."""
    base = before_overlay(settings)
    out: dict[str, Any] = {}
    problems: list[Problem] = []
    for key, value in changes.items():
        problem = _key_problem(base, key)
        if problem is not None:
            problems.append(problem)
            continue
        try:
            out[key] = plain(_validate_key(base, key, value))
        except SettingsInvalid as exc:
            problems.extend(exc.problems)
    if problems:
        raise SettingsInvalid(problems)
    return out


def keep_route_secrets(
    routes: list[dict[str, Any]], current: tuple[Any, ...]
) -> list[dict[str, Any]]:
    """Routes as given, where a route without a ``secret`` key keeps the secret of the
    current route with the same ``match`` (secrets are never shown, so an edit that does
    not mention one keeps it; ``secret: null`` removes it)."""
    secrets = {
        r.match.strip().lower(): r.secret.get_secret_value()
        for r in current
        if r.secret is not None
    }
    out = []
    for route in routes:
        route = dict(route)
        if "secret" not in route:
            found = secrets.get(str(route.get("match", "")).strip().lower())
            if found is not None:
                route["secret"] = found
        out.append(route)
    return out


def apply_overlay(settings: Settings, overlay: Mapping[str, Any]) -> Settings:
    """The effective settings: ``overlay`` (stored values) over the file and defaults,
    under the environment. Keys not editable, set by the environment or no longer valid
    are skipped (with a warning for the last two)."""
    base = before_overlay(settings)
    sections: dict[str, dict[str, Any]] = {}
    for key, value in overlay.items():
        if key not in EDITABLE:
            continue
        if key in base.env_keys:
            continue
        try:
            checked = _validate_key(base, key, value)
        except SettingsInvalid as exc:
            log.warning("stored setting skipped: not valid", key=key, problem=str(exc))
            continue
        section, _, name = key.partition(".")
        sections.setdefault(section, {})[name] = checked
    if not sections:
        return base
    update = {
        section: getattr(base, section).model_copy(update=values)
        for section, values in sections.items()
    }
    effective = base.model_copy(update=update)
    effective._before_overlay = base
    return effective


async def current_settings(settings: Settings, overlay: SettingsStore) -> Settings:
    """``settings`` with the overlay as stored now: for code that runs once per request or
    command (the CLI, an API call) rather than in a process that reloads."""
    return apply_overlay(settings, await overlay.values())


# -- what the settings page and the API show --------------------------------------------


@dataclass(frozen=True, slots=True)
class SettingView:
    """One key: its effective value (secrets hidden), where it comes from (``default``,
    ``file``, ``database``, ``environment``), whether it may be changed here, and when
    a change takes effect."""

    key: str
    section: str
    name: str
    value: Any
    source: str
    editable: bool
    live: bool
    updated_at: float | None = None
    updated_by: str = ""


def describe(settings: Settings, entries: Mapping[str, OverlayEntry]) -> list[SettingView]:
    """Every key of the settings, in model order, with its source."""
    base = before_overlay(settings)
    effective = apply_overlay(base, {k: e.value for k, e in entries.items()})
    views = []
    for section_name in type(base).model_fields:
        section = getattr(base, section_name)
        if not isinstance(section, BaseModel):
            continue
        for name in type(section).model_fields:
            key = f"{section_name}.{name}"
            editable = EDITABLE.get(key)
            entry = entries.get(key)
            if key in base.env_keys:
                source = "environment"
            elif entry is not None and editable is not None:
                source = "database"
            elif name in section.model_fields_set:
                source = "file"
            else:
                source = "default"
            views.append(
                SettingView(
                    key=key,
                    section=section_name,
                    name=name,
                    value=_shown(key, getattr(getattr(effective, section_name), name)),
                    source=source,
                    editable=editable is not None and source != "environment",
                    live=editable is not None and editable.live,
                    updated_at=entry.updated_at if entry and source == "database" else None,
                    updated_by=entry.updated_by if entry and source == "database" else "",
                )
            )
    return views


# -- running processes ------------------------------------------------------------------


class LiveSettings:
    """The effective settings of a running process, re-read from the overlay every
    ``interval`` seconds by ``run``. ``current`` is always a complete, valid ``Settings``;
    subscribers are called (in the event loop) with the new one after each change."""

    def __init__(
        self, settings: Settings, store: SettingsStore, *, interval: float = RELOAD_INTERVAL
    ) -> None:
        self._base = before_overlay(settings)
        self._store = store
        self._interval = interval
        self._overlay: dict[str, Any] | None = None
        self._current = settings
        self._subscribers: list[Callable[[Settings], None]] = []

    @property
    def current(self) -> Settings:
        return self._current

    def subscribe(self, callback: Callable[[Settings], None]) -> None:
        self._subscribers.append(callback)

    async def refresh(self) -> bool:
        """Read the overlay; True when it changed (and ``current`` with it). Raises
        StorageError when the database cannot be read (``current`` stays as it was)."""
        overlay = await self._store.values()
        if overlay == self._overlay:
            return False
        changed = sorted(
            k
            for k in {*overlay, *(self._overlay or {})}
            if overlay.get(k) != (self._overlay or {}).get(k)
        )
        self._overlay = overlay
        self._current = apply_overlay(self._base, overlay)
        if changed:
            log.info("settings reloaded from the database", changed=changed)
        for callback in self._subscribers:
            try:
                callback(self._current)
            except Exception:
                log.exception("applying reloaded settings failed")
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh until ``stop``; a database outage only delays the next reload."""
        while not stop.is_set():
            try:
                await self.refresh()
            except StorageError as exc:
                log.warning("could not read the settings overlay", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)
