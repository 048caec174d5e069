"""``kakitome user create|list|passwd|remove``: people who log in to the admin UI.

Passwords are asked for twice without echo, or read from ``--password-file`` (first line;
``-`` reads standard input), never taken on the command line where ``ps`` would show it.
Exit status: 0 success, 2 bad input, 1 anything else (unknown user, database unavailable).
Thin over ``WebStore`` (``services.web_store``, opened by ``kakitome.cli.context``).
"""

# No `from __future__ import annotations`: Typer reads the annotations at run time.

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from kakitome.accounts.store import ROLES, WebStore
from kakitome.cli.context import services_for
from kakitome.config import Settings, load_settings
from kakitome.errors import ConfigError, InputError, KakitomeError, StorageError

T = TypeVar("T")

user_app = typer.Typer(help="Users of the admin web UI.", no_args_is_help=True)

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Settings file (default: $KAKITOME_CONFIG or ./kakitome.toml)."),
]
PasswordFileOption = Annotated[
    Path | None,
    typer.Option(
        "--password-file", help="Read the password from this file's first line (- for stdin)."
    ),
]


def _fail(as_json: bool, code: str, message: str, exit_code: int) -> NoReturn:
    print(f"kakitome: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message}}, ensure_ascii=False))
    raise typer.Exit(exit_code)


def _run(
    config: Path | None, as_json: bool, work: Callable[[Settings, WebStore], Awaitable[T]]
) -> T:
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        _fail(as_json, "invalid_settings", str(exc), 2)

    async def go() -> T:
        async with services_for(settings) as services:
            return await work(services.settings, services.web_store)

    try:
        return asyncio.run(go())
    except InputError as exc:
        _fail(as_json, "invalid_input", str(exc), 2)
    except LookupError as exc:
        _fail(as_json, "not_found", str(exc), 1)
    except StorageError as exc:
        _fail(as_json, "storage_unavailable", f"the database is unavailable: {exc}", 1)
    except KakitomeError as exc:  # e.g. the DKIM key secret (loaded with the services)
        _fail(as_json, "error", str(exc), 1)


def _password(password_file: Path | None, as_json: bool) -> str:
    if password_file is not None:
        try:
            text = (
                sys.stdin.read() if str(password_file) == "-" else password_file.read_text("utf-8")
            )
        except OSError as exc:
            _fail(as_json, "invalid_input", f"--password-file: {exc}", 2)
        lines = text.splitlines()
        return lines[0] if lines else ""
    value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    return value


def _user_json(user: Any) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "language": user.language,
        "disabled": user.disabled,
        "created_at": user.created_at,
        "last_login_at": user.last_login_at,
    }


@user_app.command("create")
def create(
    username: Annotated[str, typer.Argument(help="Login name (letters, digits, . _ @ -).")],
    role: Annotated[str, typer.Option("--role", help="admin, sender or viewer.")] = "viewer",
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Create a user (asks for the password unless --password-file is given)."""
    if role not in ROLES:
        _fail(as_json, "invalid_input", f"unknown role {role!r}: use admin, sender or viewer", 2)
    password = _password(password_file, as_json)

    async def work(settings: Settings, web: WebStore) -> Any:
        return await web.create_user(username, password, role, now=time.time())

    user = _run(config, as_json, work)
    if as_json:
        print(json.dumps(_user_json(user), ensure_ascii=False))
    else:
        print(f"user {user.username} ({user.role}) created", file=sys.stderr)


@user_app.command("list")
def list_users(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """List the users and their roles."""

    async def work(settings: Settings, web: WebStore) -> Any:
        return await web.list_users()

    users = _run(config, as_json, work)
    if as_json:
        print(json.dumps([_user_json(u) for u in users], ensure_ascii=False))
        return
    for user in users:
        state = "\tdisabled" if user.disabled else ""
        print(f"{user.username}\t{user.role}{state}")


@user_app.command("passwd")
def passwd(
    username: Annotated[str, typer.Argument(help="The user.")],
    password_file: PasswordFileOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Set a new password; the user's sessions end."""
    password = _password(password_file, as_json)

    async def work(settings: Settings, web: WebStore) -> bool:
        if not await web.set_password(username, password, now=time.time()):
            raise LookupError(f"no user {username!r}")
        return True

    _run(config, as_json, work)
    if as_json:
        print(json.dumps({"username": username.strip().lower(), "password_changed": True}))
    else:
        print(f"password of {username} changed", file=sys.stderr)


@user_app.command("remove")
def remove(
    username: Annotated[str, typer.Argument(help="The user.")],
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Remove a user (and end their sessions)."""

    async def work(settings: Settings, web: WebStore) -> bool:
        if not await web.remove_user(username):
            raise LookupError(f"no user {username!r}")
        return True

    _run(config, as_json, work)
    if as_json:
        print(json.dumps({"username": username.strip().lower(), "removed": True}))
    else:
        print(f"user {username} removed", file=sys.stderr)
