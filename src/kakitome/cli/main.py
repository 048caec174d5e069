"""``kakitome``: thin commands over the services (``kakitome.services.Services``).

Every command takes ``--config PATH`` and ``--json``. With ``--json`` exactly one JSON
document goes to stdout (on failure: ``{"error": {"code", "message"}}``) and nothing else;
messages for people go to stderr. Exit status: 0 success, 2 bad input (addresses,
messages, settings, usage), 1 anything else (unknown id, database unavailable).

Commands run on one ``Services`` opened by ``_run`` (``kakitome.cli.context.services_for``):
the effective settings (file, environment, the database overlay), the one injector (DKIM
signer, VERP return path), the parts' stores and services. None builds its own.
"""

# No `from __future__ import annotations`: Typer reads the parameter annotations at run
# time, and the Annotated aliases below must be real objects.

import asyncio
import json
import mimetypes
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from kakitome.cli.campaigns import campaign_app, sequence_app
from kakitome.cli.check import check as check_command
from kakitome.cli.context import services_for
from kakitome.cli.domain import domain_app
from kakitome.cli.inbound import register_inbound_admin, smtp_user_app, suppression_app
from kakitome.cli.lists import list_app, segment_app, subscriber_app
from kakitome.cli.policy import policy_app
from kakitome.cli.users import user_app
from kakitome.config import load_settings
from kakitome.errors import (
    AddressError,
    ConfigError,
    InputError,
    KakitomeError,
    MessageError,
    NotFound,
    StorageError,
)
from kakitome.message import Attachment, MessageTooLarge
from kakitome.receipts import is_settled, iso_utc, queue_row_to_dict, receipt_to_dict

if TYPE_CHECKING:
    # Imported when a command opens them (kakitome.cli.context): every service comes
    # with it, and `kakitome --help` needs none.
    from kakitome.services import Services

T = TypeVar("T")

app = typer.Typer(
    name="kakitome",
    help="Kakitome: email delivery that is encrypted, authenticated, and provably so.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
queue_app = typer.Typer(help="Look at and act on the delivery queue.", no_args_is_help=True)
apikey_app = typer.Typer(help="API keys for the HTTP API.", no_args_is_help=True)
app.add_typer(queue_app, name="queue")
app.add_typer(apikey_app, name="apikey")
app.add_typer(user_app, name="user")
app.add_typer(domain_app, name="domain")
app.add_typer(smtp_user_app, name="smtp-user")
app.add_typer(suppression_app, name="suppression")
register_inbound_admin(app)
app.add_typer(policy_app, name="policy")
app.add_typer(list_app, name="list")
app.add_typer(subscriber_app, name="subscriber")
app.add_typer(segment_app, name="segment")
app.add_typer(campaign_app, name="campaign")
app.add_typer(sequence_app, name="sequence")
app.command("check")(check_command)

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Settings file (default: $KAKITOME_CONFIG or ./kakitome.toml)."),
]

ALL_SCOPES = ("send", "read", "admin")
SETTLED_POLL_SECONDS = 0.5


class CliFailure(Exception):
    """A refusal found by the CLI itself; ``exit_code`` 2 for bad input."""

    def __init__(self, message: str, code: str = "invalid_input", exit_code: int = 2) -> None:
        super().__init__(message)
        self.code = code
        self.exit_code = exit_code


def main() -> None:
    """Entry point of the ``kakitome`` command."""
    app()


# -- plumbing -------------------------------------------------------------------------


def _stdout() -> Console:
    return Console(soft_wrap=True)


def _stderr() -> Console:
    return Console(stderr=True, soft_wrap=True)


def _emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def _fail(as_json: bool, code: str, message: str, exit_code: int) -> NoReturn:
    _stderr().print(f"kakitome: {message}", markup=False, highlight=False)
    if as_json:
        _emit_json({"error": {"code": code, "message": message}})
    raise typer.Exit(exit_code)


def _run(config: Path | None, as_json: bool, work: Callable[["Services"], Awaitable[T]]) -> T:
    """Read settings once, open the services (the database, the settings overlay, the DKIM
    keys: ``services_for``), run ``work`` on them, close them; map errors to exit codes.
    ``work`` reads the effective settings as ``services.settings``: what the running
    service uses (keys changed in the UI or the API over file and defaults, under the
    environment)."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        _fail(as_json, "invalid_settings", str(exc), 2)

    async def go() -> T:
        async with services_for(settings) as services:
            return await work(services)

    try:
        return asyncio.run(go())
    except CliFailure as exc:
        _fail(as_json, exc.code, str(exc), exc.exit_code)
    except InputError as exc:
        _fail(as_json, _input_code(exc), str(exc), 2)
    except NotFound as exc:
        _fail(as_json, "not_found", str(exc) or "not found", 1)
    except StorageError as exc:
        _fail(as_json, "storage_unavailable", f"the database is unavailable: {exc}", 1)
    except KakitomeError as exc:
        _fail(as_json, "error", str(exc), 1)
    except OSError as exc:
        _fail(as_json, "os_error", str(exc), 1)


def _input_code(exc: InputError) -> str:
    """The same codes as the HTTP API uses."""
    if isinstance(exc, MessageTooLarge):
        return "message_too_large"
    if isinstance(exc, AddressError):
        return "invalid_address"
    return "invalid_message" if isinstance(exc, MessageError) else "invalid_input"


def _text_or_file(value: str | None, what: str) -> str | None:
    """``--text "..."`` or ``--text @file``."""
    if value is None or not value.startswith("@"):
        return value
    path = Path(value[1:])
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CliFailure(f"{what}: no such file {path}") from exc
    except UnicodeDecodeError as exc:
        raise CliFailure(f"{what}: {path} is not UTF-8 text") from exc


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise CliFailure(f"{what}: no such file {path}") from exc
    except IsADirectoryError as exc:
        raise CliFailure(f"{what}: {path} is a directory") from exc


def _parse_header(value: str) -> tuple[str, str]:
    name, colon, rest = value.partition(":")
    if not colon or not name.strip():
        raise CliFailure(f"--header {value!r}: expected 'Name: value'")
    return name.strip(), rest.strip()


def _receipt_table(receipt: dict[str, Any]) -> Table:
    table = Table(
        title=f"Message {receipt['id']}  ·  {receipt['subject'] or '(no subject)'}",
        caption=_tls_notes(receipt),
        caption_justify="left",
    )
    for column in ("Recipient", "Status", "Tries", "MX", "Reply", "TLS", "Updated"):
        table.add_column(column)
    for row in receipt["recipients"]:
        table.add_row(
            row["address"],
            row["status"],
            str(row["attempts"]),
            _mx_text(row["mx"]),
            _reply_text(row["reply"]),
            _tls_text(row["tls"]),
            row["updated_at"] or "",
        )
    return table


def _mx_text(mx: dict[str, Any] | None) -> str:
    return f"{mx['host']} [{mx['ip']}]" if mx else "-"


def _reply_text(reply: dict[str, Any] | None) -> str:
    if not reply:
        return "-"
    return " ".join(str(p) for p in (reply["code"], reply["enhanced"], reply["text"]) if p)


def _tls_text(tls: dict[str, Any] | None) -> str:
    if not tls:
        return "-"
    if not tls.get("used"):
        text = f"plaintext ({tls.get('level')})"
    else:
        trust = "verified" if tls.get("verified") else tls.get("verification", "unverified")
        text = f"{tls.get('version')} {tls.get('cipher')} {trust} ({tls.get('level')})"
    if tls.get("downgraded"):
        text += " downgraded"
    return text


def _tls_notes(receipt: dict[str, Any]) -> str | None:
    """Below the table, in full: why a recipient's mail went in plaintext (T43) and any
    suspected STARTTLS stripping."""
    notes = []
    for row in receipt["recipients"]:
        tls = row["tls"] or {}
        if tls.get("stripping_suspected"):
            notes.append(
                f"{row['address']}: possible STARTTLS stripping: {tls['stripping_suspected']}"
            )
        if not tls.get("used") and tls.get("plaintext_reason"):
            notes.append(f"{row['address']}: plaintext allowed: {tls['plaintext_reason']}")
    return "\n".join(notes) or None


# -- commands -------------------------------------------------------------------------


@app.command()
def send(
    from_: Annotated[
        str | None, typer.Option("--from", help="From: 'Name <addr>' or addr.")
    ] = None,
    to: Annotated[list[str] | None, typer.Option("--to", help="Recipient (repeatable).")] = None,
    cc: Annotated[list[str] | None, typer.Option("--cc", help="Cc (repeatable).")] = None,
    bcc: Annotated[list[str] | None, typer.Option("--bcc", help="Bcc (repeatable).")] = None,
    subject: Annotated[str, typer.Option("--subject")] = "",
    text: Annotated[str | None, typer.Option("--text", help="Text body, or @file.")] = None,
    html: Annotated[str | None, typer.Option("--html", help="HTML body, or @file.")] = None,
    attach: Annotated[
        list[Path] | None, typer.Option("--attach", help="Attach a file (repeatable).")
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", help="Extra header 'Name: value'.")
    ] = None,
    raw: Annotated[
        Path | None,
        typer.Option("--raw", help="Send this RFC 5322 file; --from/--to set the envelope."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until every recipient is settled.")
    ] = False,
    requiretls: Annotated[
        bool, typer.Option("--requiretls", help="Deliver only over verified TLS (RFC 8689).")
    ] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits.")] = 60.0,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Queue a message; print its id (or, with --wait, its receipt)."""

    async def work(services: "Services") -> dict[str, Any]:
        # The service's injector: the same signing and return path as every producer.
        injector = services.injector
        if raw is not None:
            if subject or text or html or attach or header:
                raise CliFailure("--raw cannot be combined with --subject/--text/--html/...")
            recipients = [*(to or []), *(cc or []), *(bcc or [])]
            message = injector.prepare_raw(
                _read_bytes(raw, "--raw"),
                sender=from_,
                recipients=recipients or None,
                source="cli",
                requiretls=requiretls,
            )
        else:
            if from_ is None:
                raise CliFailure("--from is required (or give --raw FILE)")
            attachments = [
                Attachment(
                    path.name,
                    mimetypes.guess_type(path.name)[0] or "application/octet-stream",
                    _read_bytes(path, "--attach"),
                )
                for path in attach or []
            ]
            message = injector.prepare_fields(
                from_=from_,
                to=to or [],
                cc=cc or [],
                bcc=bcc or [],
                subject=subject,
                text=_text_or_file(text, "--text"),
                html=_text_or_file(html, "--html"),
                attachments=attachments,
                headers=[_parse_header(h) for h in header or []],
                source="cli",
                requiretls=requiretls,
            )
        message_id = await injector.submit(message)
        if not wait:
            return {"id": message_id, "recipients": len(message.recipients)}
        deadline = time.monotonic() + timeout
        while True:
            receipt = await services.queue.receipt(message_id)
            if is_settled(receipt):
                return receipt_to_dict(receipt)
            if time.monotonic() >= deadline:
                raise CliFailure(
                    f"message {message_id} queued, but not every recipient was settled "
                    f"within {timeout:g} s; see `kakitome receipt {message_id}`",
                    code="timeout",
                    exit_code=1,
                )
            await asyncio.sleep(SETTLED_POLL_SECONDS)

    result = _run(config, as_json, work)
    if as_json:
        _emit_json(result)
    elif "created_at" in result:
        _stdout().print(_receipt_table(result))
    else:
        _stdout().print(
            f"Queued message {result['id']} for {result['recipients']} recipient(s).",
            highlight=False,
        )


@app.command()
def receipt(
    message_id: Annotated[str, typer.Argument(help="Message id.")],
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Show how a message travelled to each recipient (status, MX, reply, TLS)."""

    async def work(services: "Services") -> dict[str, Any]:
        return receipt_to_dict(await services.queue.receipt(message_id))

    result = _run(config, as_json, work)
    if as_json:
        _emit_json(result)
    else:
        _stdout().print(_receipt_table(result))


@queue_app.command("list")
def queue_list(
    status: Annotated[str | None, typer.Option("--status", help="queued, deferred, ...")] = None,
    domain: Annotated[str | None, typer.Option("--domain")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000)] = 100,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """List deliveries, newest state first."""

    async def work(services: "Services") -> list[dict[str, Any]]:
        rows = await services.queue.list_deliveries(status=status, domain=domain, limit=limit)
        return [queue_row_to_dict(row) for row in rows]

    rows = _run(config, as_json, work)
    if as_json:
        _emit_json({"deliveries": rows})
        return
    table = Table(title=f"{len(rows)} deliveries")
    table.add_column("Message", no_wrap=True)
    for column in ("Recipient", "Status", "Tries", "Next attempt", "Reply"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["message_id"],
            row["address"],
            row["status"],
            str(row["attempts"]),
            row["next_attempt_at"] or "",
            _reply_text(row["reply"]),
        )
    _stdout().print(table)


@queue_app.command("show")
def queue_show(
    message_id: Annotated[str, typer.Argument(help="Message id.")],
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """A message's receipt and its events."""

    async def work(services: "Services") -> dict[str, Any]:
        found = receipt_to_dict(await services.queue.receipt(message_id))
        events = await services.queue.events_for(message_id)
        return {"receipt": found, "events": [_event(e) for e in events]}

    result = _run(config, as_json, work)
    if as_json:
        _emit_json(result)
        return
    _stdout().print(_receipt_table(result["receipt"]))
    table = Table(title="Events")
    for column in ("When", "Kind", "Data"):
        table.add_column(column)
    for event in result["events"]:
        data = {k: v for k, v in event.items() if k not in ("at", "kind")}
        table.add_row(str(event.get("at", "")), str(event.get("kind", "")), json.dumps(data))
    _stdout().print(table)


def _event(event: dict[str, Any]) -> dict[str, Any]:
    out = dict(event)
    for key in ("at", "created_at", "time"):
        if isinstance(out.get(key), int | float):
            out[key] = iso_utc(float(out[key]))
    return out


def _queue_action(
    action: str,
    message_ids: list[str] | None,
    domain: str | None,
    everything: bool,
    as_json: bool,
    config: Path | None,
) -> None:
    async def work(services: "Services") -> int:
        if not message_ids and domain is None and not everything:
            raise CliFailure(f"say what to {action}: message ids, --domain D, or --all")
        if everything and (message_ids or domain is not None):
            raise CliFailure("--all cannot be combined with ids or --domain")
        return await services.queue.queue_action(
            action, now=time.time(), message_ids=message_ids or None, domain=domain
        )

    count = _run(config, as_json, work)
    if as_json:
        _emit_json({"action": action, "count": count})
    else:
        _stdout().print(f"{action}: {count} deliveries", highlight=False)


IdsArgument = Annotated[list[str] | None, typer.Argument(help="Message ids.")]
DomainOption = Annotated[str | None, typer.Option("--domain", help="Recipient domain.")]
AllOption = Annotated[bool, typer.Option("--all", help="Every matching delivery.")]


@queue_app.command("retry")
def queue_retry(
    message_ids: IdsArgument = None,
    domain: DomainOption = None,
    everything: AllOption = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Make queued and deferred deliveries due now."""
    _queue_action("retry", message_ids, domain, everything, as_json, config)


@queue_app.command("hold")
def queue_hold(
    message_ids: IdsArgument = None,
    domain: DomainOption = None,
    everything: AllOption = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Hold queued and deferred deliveries until released."""
    _queue_action("hold", message_ids, domain, everything, as_json, config)


@queue_app.command("release")
def queue_release(
    message_ids: IdsArgument = None,
    domain: DomainOption = None,
    everything: AllOption = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Release held deliveries; they are due at once."""
    _queue_action("release", message_ids, domain, everything, as_json, config)


@queue_app.command("delete")
def queue_delete(
    message_ids: IdsArgument = None,
    domain: DomainOption = None,
    everything: AllOption = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Delete deliveries that are not final (and messages left without any)."""
    _queue_action("delete", message_ids, domain, everything, as_json, config)


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Argument(help="A name to recognise the key by.")],
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="send, read or admin (repeatable; default: all)."),
    ] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Create an API key and print it once (only its hash is kept)."""
    scopes = tuple(dict.fromkeys(scope or ALL_SCOPES))

    async def work(services: "Services") -> str:
        unknown = [s for s in scopes if s not in ALL_SCOPES]
        if unknown:
            raise CliFailure(f"unknown scope(s) {', '.join(unknown)}; use send, read or admin")
        if not name.strip():
            raise CliFailure("the key needs a name")
        return await services.api_keys.create_api_key(name, scopes, now=time.time())

    key = _run(config, as_json, work)
    if as_json:
        _emit_json({"name": name, "scopes": list(scopes), "key": key})
    else:
        _stdout().print(key, markup=False, highlight=False)
        _stderr().print(
            f"API key {name!r} ({', '.join(scopes)}). It is shown only this once.",
            markup=False,
        )


@app.command()
def serve(
    role: Annotated[
        list[str] | None,
        typer.Option("--role", help="web, smtp or worker (repeatable; default: all)."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run the service (HTTP API, SMTP listeners, delivery workers) until stopped."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        _fail(False, "invalid_settings", str(exc), 2)
    unknown = [r for r in role or [] if r not in ("web", "smtp", "worker")]
    if unknown:
        _fail(False, "invalid_input", f"unknown role(s): {', '.join(unknown)}", 2)
    from kakitome import runtime  # the runtime pulls in every service; only serve needs it

    runtime.serve(settings, roles=tuple(role or ()))


if __name__ == "__main__":  # pragma: no cover
    main()
