"""``kakitome smtp-user create|list|remove`` and ``kakitome suppression list|add|remove``.

Thin over ``InboundStore`` (``services.inbound_store``: the one built with the configured
suppression thresholds); the same conventions as ``kakitome.cli.main`` (``--json`` prints
one document, exit 2 for bad input, 1 for anything else).
"""

# No `from __future__ import annotations`: Typer reads the annotations at run time.

import getpass
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from kakitome.errors import InputError
from kakitome.inbound.users import hash_password, validate_username
from kakitome.suppression import REASONS, suppression_key

if TYPE_CHECKING:
    from kakitome.services import Services

T = TypeVar("T")

# The shared plumbing lives in kakitome.cli.main, which imports this module to register
# the sub-apps; it is reached at call time to keep the import one-way.
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Settings file (default: $KAKITOME_CONFIG or ./kakitome.toml)."),
]


def _cli() -> Any:
    from kakitome.cli import main

    return main


def _run(config: Path | None, as_json: bool, work: Callable[["Services"], Awaitable[T]]) -> T:
    result: T = _cli()._run(config, as_json, work)
    return result


def _emit_json(document: Any) -> None:
    _cli()._emit_json(document)


def _say(text: str, *, err: bool = True) -> None:
    console = _cli()._stderr() if err else _cli()._stdout()
    console.print(text, markup=False, highlight=False)


def _failure(message: str) -> Exception:
    failure: Exception = _cli().CliFailure(message)
    return failure


smtp_user_app = typer.Typer(
    help="Credentials for SMTP submission (587, 465).", no_args_is_help=True
)
suppression_app = typer.Typer(help="Addresses delivery will not send to.", no_args_is_help=True)


@smtp_user_app.command("create")
def smtp_user_create(
    username: Annotated[str, typer.Argument(help="The login name.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Create a submission user (the password is kept only as an argon2id hash)."""
    if password_stdin:
        password = typer.get_text_stream("stdin").readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")

    async def work(services: "Services") -> int:
        name = validate_username(username)
        hashed = hash_password(password)
        inbound = services.inbound_store
        if await inbound.smtp_user_hash(name) is not None:
            raise _failure(f"user {name!r} exists already")
        return await inbound.create_smtp_user(name, hashed, now=time.time())

    user_id = _run(config, as_json, work)
    if as_json:
        _emit_json({"id": user_id, "username": username.strip()})
    else:
        _say(f"SMTP user {username.strip()!r} created.")


@smtp_user_app.command("list")
def smtp_user_list(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """List submission users."""

    async def work(services: "Services") -> list[dict[str, Any]]:
        users = await services.inbound_store.list_smtp_users()
        return [
            {
                "id": u.id,
                "username": u.username,
                "created_at": u.created_at,
                "last_login_at": u.last_login_at,
            }
            for u in users
        ]

    rows = _run(config, as_json, work)
    if as_json:
        _emit_json({"users": rows})
        return
    for row in rows:
        _say(row["username"], err=False)


@smtp_user_app.command("remove")
def smtp_user_remove(
    username: Annotated[str, typer.Argument()],
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Remove a submission user."""

    async def work(services: "Services") -> bool:
        return await services.inbound_store.remove_smtp_user(username)

    removed = _run(config, as_json, work)
    if not removed:
        _cli()._fail(as_json, "not_found", f"no SMTP user {username!r}", 1)
    if as_json:
        _emit_json({"removed": username})


@suppression_app.command("list")
def suppression_list(
    reason: Annotated[
        str | None, typer.Option("--reason", help="bounce, complaint or manual")
    ] = None,
    limit: Annotated[int, typer.Option("--limit")] = 100,
    offset: Annotated[int, typer.Option("--offset")] = 0,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """List suppressed addresses."""

    async def work(services: "Services") -> list[dict[str, Any]]:
        rows = await services.inbound_store.list_suppressions(
            limit=limit, offset=offset, reason=reason
        )
        return [
            {
                "address": r.address,
                "reason": r.reason,
                "detail": r.detail,
                "delivery_id": r.delivery_id,
                "created_at": r.created_at,
            }
            for r in rows
        ]

    rows = _run(config, as_json, work)
    if as_json:
        _emit_json({"suppressions": rows})
        return
    for row in rows:
        _say(f"{row['address']}\t{row['reason']}\t{row['detail']}", err=False)


@suppression_app.command("add")
def suppression_add(
    address: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option("--reason")] = "manual",
    detail: Annotated[str, typer.Option("--detail")] = "",
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Suppress an address (delivery to it bounces with 5.7.1 from now on)."""

    async def work(services: "Services") -> bool:
        if reason not in REASONS:
            raise _failure(f"reason must be one of {', '.join(REASONS)}")
        if "@" not in address:
            raise InputError(f"{address!r} is not an address")
        inbound = services.inbound_store
        return await inbound.add_suppression(address, reason=reason, detail=detail, now=time.time())

    added = _run(config, as_json, work)
    if as_json:
        _emit_json({"address": suppression_key(address), "added": added})
    else:
        state = "suppressed" if added else "was suppressed already"
        _say(f"{suppression_key(address)} {state}.")


@suppression_app.command("remove")
def suppression_remove(
    address: Annotated[str, typer.Argument()],
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Lift a suppression (and forget the address's bounce counts)."""

    async def work(services: "Services") -> bool:
        return await services.inbound_store.remove_suppression(address)

    removed = _run(config, as_json, work)
    if as_json:
        _emit_json({"address": suppression_key(address), "removed": removed})
    elif not removed:
        _say(f"{suppression_key(address)} was not suppressed.")


__all__ = ["register_inbound_admin", "smtp_user_app", "suppression_app"]


def register_inbound_admin(app: typer.Typer) -> None:
    """Add ``inbound`` and ``tlsrpt`` (kakitome.cli.inbound_admin) to the main app."""
    from kakitome.cli.inbound_admin import inbound_app, tlsrpt_app

    app.add_typer(inbound_app, name="inbound")
    app.add_typer(tlsrpt_app, name="tlsrpt")
