"""The services a ``kakitome`` command runs on: ``services_for(settings)``.

Every command that touches the database runs inside ``async with services_for(settings)
as services`` and calls ``services.<part>`` (``services.lists``, ``services.queue``,
``services.injector`` ...): the same wiring as ``kakitome serve``
(``kakitome.services.open_services``: the settings overlay applied, the DKIM keys loaded,
one injector that signs and sets VERP return paths). No command builds a store class, a
service or an injector of its own: the CLI once queued double opt-in confirmations
unsigned because its list commands wired an injector without the signer.

``kakitome.services`` (and with it every service) is imported when a command opens it,
not when the CLI starts: ``kakitome --help`` and commands that need no database stay quick.

Logs: what the services log while a command runs (the overlay read, a key that does not
open) goes to stderr, warnings and worse unless ``log.level`` asks for less: stdout carries
the command's output only (one JSON document with ``--json``). Unconfigured, structlog
printed to stdout, and the first command to read a non-empty overlay broke ``--json``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import structlog

from kakitome.config import Settings

if TYPE_CHECKING:
    from kakitome.services import Services

__all__ = ["cli_logging", "services_for"]


class _Stderr:
    """``sys.stderr`` as it is when a line is written (a test runner swaps it per command;
    a logger holding the stream of the time would write to a closed one later)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def cli_logging(settings: Settings) -> None:
    """structlog to stderr for a one-shot command: ``log.format`` (json or console), at
    ``log.level`` but not below warning. Only structlog: the stdlib's root logger is left
    alone (``kakitome serve`` configures both, ``kakitome.logs``)."""
    levels = logging.getLevelNamesMapping()
    level = max(levels.get(settings.log.level.upper(), logging.INFO), logging.WARNING)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if settings.log.format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


@asynccontextmanager
async def services_for(settings: Settings) -> AsyncIterator[Services]:
    """Open the database and build every service over it (``open_services``), yield them,
    close the database on the way out.

    ``settings`` are the file's and the environment's; ``services.settings`` are the
    effective ones (with the database overlay, as the running service uses them).
    ``StorageError`` when the database cannot be opened."""
    from kakitome.services import open_services

    cli_logging(settings)
    services = await open_services(settings)
    try:
        yield services
    finally:
        await services.close()
