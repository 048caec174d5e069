"""``kakitome list|subscriber|segment``: newsletter lists from the command line.

- ``list create|list|show|remove``: lists (opt-in mode, sender identity, time zone...);
- ``subscriber import FILE --list NAME``: CSV import (UTF-8, UTF-8 with BOM, Shift_JIS /
  CP932 as Excel in Japan writes it; ``--map email=メール,name=氏名``) with a progress bar
  on stderr and the report of every rejected row (line number and reason);
  ``subscriber export|add|remove|list``;
- ``segment create|list|show|test|remove``: saved filters in the segment language.

Thin over ``kakitome.lists.ListService``: ``services.lists``, whose injector signs the
double opt-in confirmations and gives them a VERP return path, as every producer of mail.
As every ``kakitome`` command (see ``kakitome.cli.main``): ``--config PATH`` and ``--json``
(then exactly one JSON document on stdout, ``{"error": {"code", "message"}}`` on failure);
exit status 0 success, 2 bad input, 1 anything else (unknown list, database unavailable).
An import with rejected rows still exits 0: the report says which rows and why.
"""

# No `from __future__ import annotations`: Typer reads the annotations at run time.

import io
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from kakitome.errors import InputError
from kakitome.lists import STATUSES, ImportReport, NewList, OptIn

if TYPE_CHECKING:
    from kakitome.services import Services

__all__ = ["list_app", "segment_app", "subscriber_app"]

T = TypeVar("T")

list_app = typer.Typer(help="Newsletter lists.", no_args_is_help=True)
subscriber_app = typer.Typer(
    help="Subscribers of lists: import, export, add, remove.", no_args_is_help=True
)
segment_app = typer.Typer(help="Saved segments (filters) of subscribers.", no_args_is_help=True)

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Settings file (default: $KAKITOME_CONFIG or ./kakitome.toml)."),
]
ListOption = Annotated[str, typer.Option("--list", "-l", help="The list (name or id).")]

IMPORT_ENCODINGS = ("auto", "utf-8", "utf-8-sig", "shift_jis", "cp932")
MAP_TARGETS = ("email", "name", "-")
REJECTED_SHOWN = 200  # rejected rows printed in text mode (--json has them all)


# -- plumbing: the helpers of cli.main (imported when called: main imports this module) --


def _run(config: Path | None, as_json: bool, work: Callable[["Services"], Awaitable[T]]) -> T:
    from kakitome.cli.main import _run as run

    return run(config, as_json, work)


def _emit_json(document: Any) -> None:
    from kakitome.cli.main import _emit_json as emit

    emit(document)


def _failure(message: str) -> Exception:
    """A bad-input refusal found by the CLI (exit 2, code ``invalid_input``)."""
    from kakitome.cli.main import CliFailure

    return CliFailure(message)


def _list_ref(value: str) -> int | str:
    """``--list`` by id (digits) or name."""
    return int(value) if value.isdigit() else value


def _out() -> Console:
    return Console(soft_wrap=True)


def _err() -> Console:
    return Console(stderr=True, soft_wrap=True)


def parse_map(values: list[str] | None) -> dict[str, str]:
    """``--map email=メール,name=氏名,attr.plan=種別,-=メモ`` (repeatable) → the service's
    mapping (CSV header → field). InputError for a malformed item."""
    mapping: dict[str, str] = {}
    for value in values or []:
        for item in value.split(","):
            if not item.strip():
                continue
            target, equals, column = item.partition("=")
            target, column = target.strip(), column.strip()
            if not equals or not column:
                raise InputError(
                    f"--map {item!r}: expected FIELD=COLUMN, e.g. email=メールアドレス"
                )
            if target not in MAP_TARGETS and not (target.startswith("attr.") and len(target) > 5):
                raise InputError(
                    f"--map {item!r}: the field must be email, name, attr.<key> or - (skip), "
                    f"not {target!r}"
                )
            if column in mapping:
                raise InputError(f"--map: the column {column!r} is mapped twice")
            mapping[column] = target
    return mapping


def _attributes(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    out: dict[str, str] = {}
    for value in values:
        key, equals, text = value.partition("=")
        if not equals or not key.strip():
            raise InputError(f"--attr {value!r}: expected KEY=VALUE")
        out[key.strip()] = text
    return out


# -- lists ------------------------------------------------------------------------------


@list_app.command("create")
def list_create(
    name: Annotated[str, typer.Argument(help="Short name: a-z, 0-9, inner hyphens.")],
    title: Annotated[str, typer.Option("--title", help="Title shown to subscribers.")] = "",
    description: Annotated[str, typer.Option("--description")] = "",
    opt_in: Annotated[str, typer.Option("--opt-in", help="single or double.")] = "double",
    from_name: Annotated[str, typer.Option("--from-name")] = "",
    from_address: Annotated[str, typer.Option("--from-address")] = "",
    reply_to: Annotated[str, typer.Option("--reply-to")] = "",
    organization: Annotated[
        str, typer.Option("--organization", help="Sender's name for the footer (特定電子メール法).")
    ] = "",
    postal_address: Annotated[
        str, typer.Option("--postal-address", help="Sender's postal address for the footer.")
    ] = "",
    time_zone: Annotated[str, typer.Option("--time-zone")] = "Asia/Tokyo",
    quiet_start: Annotated[
        str | None, typer.Option("--quiet-start", help="Quiet hours start, HH:MM.")
    ] = None,
    quiet_end: Annotated[str | None, typer.Option("--quiet-end", help="Quiet hours end.")] = None,
    encoding: Annotated[str, typer.Option("--encoding", help="utf-8 or iso-2022-jp.")] = "utf-8",
    mail_domain: Annotated[
        str | None,
        typer.Option("--mail-domain", help="Domain of the list address (blank-mail sign-up)."),
    ] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Create a list."""

    async def work(services: "Services") -> dict[str, Any]:
        if opt_in not in ("single", "double"):
            raise _failure(f"--opt-in must be single or double, not {opt_in!r}")
        spec = NewList(
            name=name,
            title=title,
            description=description,
            opt_in=opt_in,  # type: ignore[arg-type]
            from_name=from_name,
            from_address=from_address,
            reply_to=reply_to,
            sender_organization=organization,
            sender_postal_address=postal_address,
            time_zone=time_zone,
            quiet_start=quiet_start,
            quiet_end=quiet_end,
            encoding=encoding,
            mail_domain=mail_domain,
        )
        return (await services.lists.create_list(spec)).to_dict()

    result = _run(config, as_json, work)
    if as_json:
        _emit_json({"list": result})
    else:
        where = f", address {result['address']}" if result["address"] else ""
        _out().print(
            f"Created list {result['name']} (id {result['id']}, {result['opt_in']} opt-in{where}).",
            highlight=False,
        )


@list_app.command("list")
def list_list(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """All lists with their member counts."""

    async def work(services: "Services") -> list[dict[str, Any]]:
        service = services.lists
        out = []
        for found in await service.lists():
            counts = await service.count_members(found.id)
            out.append({**found.to_dict(), "members": {s: counts.get(s, 0) for s in STATUSES}})
        return out

    rows = _run(config, as_json, work)
    if as_json:
        _emit_json({"lists": rows})
        return
    table = Table(title=f"{len(rows)} lists")
    for column in ("Id", "Name", "Title", "Opt-in", "Address", *STATUSES):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["name"],
            row["title"],
            row["opt_in"],
            row["address"] or "-",
            *(str(row["members"][s]) for s in STATUSES),
        )
    _out().print(table)


@list_app.command("show")
def list_show(
    name: Annotated[str, typer.Argument(help="The list (name or id).")],
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """One list: settings, member counts, its segments."""

    async def work(services: "Services") -> dict[str, Any]:
        service = services.lists
        found = await service.get_list(_list_ref(name))
        counts = await service.count_members(found.id)
        own = [s.to_dict() for s in await service.segments() if s.list_id in (None, found.id)]
        return {
            "list": found.to_dict(),
            "members": {s: counts.get(s, 0) for s in STATUSES},
            "audience": await service.count_audience(found.id),
            "segments": own,
        }

    result = _run(config, as_json, work)
    if as_json:
        _emit_json(result)
        return
    out = _out()
    table = Table(title=f"List {result['list']['name']}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for key, value in result["list"].items():
        table.add_row(key, "" if value is None else str(value))
    for status, count in result["members"].items():
        table.add_row(f"members: {status}", str(count))
    table.add_row("audience (subscribed, not bounced)", str(result["audience"]))
    out.print(table)
    for segment in result["segments"]:
        out.print(f"segment {segment['name']}: {segment['expression']}", highlight=False)


@list_app.command("remove")
def list_remove(
    name: Annotated[str, typer.Argument(help="The list (name or id).")],
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Delete a list with its memberships and segments (subscribers and history stay)."""

    async def work(services: "Services") -> dict[str, Any]:
        service = services.lists
        found = await service.get_list(_list_ref(name))
        await service.remove_list(found.id)
        return {"removed": found.name, "id": found.id}

    result = _run(config, as_json, work)
    if as_json:
        _emit_json(result)
    else:
        _out().print(f"Removed list {result['removed']}.", highlight=False)


# -- subscribers ------------------------------------------------------------------------


class _CountingReader(io.RawIOBase):
    """A binary file that reports how many bytes were read (for the progress bar)."""

    def __init__(self, inner: IO[bytes], on_read: Callable[[int], None]) -> None:
        self._inner = inner
        self._on_read = on_read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        buffer[: len(data)] = data
        self._on_read(len(data))
        return len(data)


@subscriber_app.command("import")
def subscriber_import(
    file: Annotated[Path, typer.Argument(help="CSV file (first line: the header).")],
    list_name: ListOption,
    encoding: Annotated[
        str,
        typer.Option("--encoding", help="auto, utf-8, utf-8-sig, shift_jis or cp932."),
    ] = "auto",
    mapping: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="FIELD=COLUMN pairs, comma-separated or repeated: email=メール,name=氏名,"
            "attr.plan=種別, -=メモ (skip). Unmapped columns: recognised email/name headers, "
            "the rest become attributes.",
        ),
    ] = None,
    status: Annotated[
        str, typer.Option("--status", help="subscribed, unconfirmed or unsubscribed.")
    ] = "subscribed",
    no_update: Annotated[
        bool,
        typer.Option("--no-update", help="Leave names and attributes of known subscribers."),
    ] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Import subscribers from CSV (upsert: never duplicates; an unsubscribed member stays
    unsubscribed). Every rejected row is reported with its line number and reason."""
    if encoding not in IMPORT_ENCODINGS:
        from kakitome.cli.main import _fail

        _fail(
            as_json,
            "invalid_input",
            f"--encoding must be one of {', '.join(IMPORT_ENCODINGS)}, not {encoding!r}",
            2,
        )

    async def work(services: "Services", progress: Callable[[int], None]) -> Any:
        columns = parse_map(mapping)
        service = services.lists
        found = await service.get_list(_list_ref(list_name))
        try:
            handle = file.open("rb")
        except FileNotFoundError:
            raise _failure(f"no such file {file}") from None
        except IsADirectoryError:
            raise _failure(f"{file} is a directory") from None
        with handle:
            source = io.BufferedReader(_CountingReader(handle, progress), buffer_size=1 << 20)
            report = await service.import_csv(
                found.id,
                source,
                mapping=columns or None,
                encoding=None if encoding == "auto" else encoding,
                optin=OptIn("import", source=file.name, detail="kakitome subscriber import"),
                status=status,
                update_existing=not no_update,
            )
        return found.name, report

    if as_json:
        name, report = _run(config, as_json, lambda services: work(services, lambda n: None))
        _emit_json({"list": name, "file": str(file), **report.to_dict()})
        return
    try:
        size = file.stat().st_size
    except OSError:
        size = 0
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task: TaskID = bar.add_task(f"Importing {file.name}", total=size or None)
        name, report = _run(
            config, as_json, lambda services: work(services, lambda n: bar.advance(task, n))
        )
    _print_import(name, report)


def _print_import(list_name: str, report: ImportReport) -> None:
    out = _out()
    out.print(
        f"{list_name}: {report.rows} rows read ({report.encoding}) in {report.seconds:.1f} s: "
        f"{report.inserted} new subscribers, {report.updated} updated, "
        f"{report.duplicates} duplicates, {len(report.rejected)} rejected.",
        highlight=False,
    )
    if not report.rejected:
        return
    table = Table(title="Rejected rows")
    table.add_column("Line", justify="right")
    table.add_column("Reason")
    table.add_column("Value")
    for row in report.rejected[:REJECTED_SHOWN]:
        table.add_row(str(row.line), row.reason, row.value)
    out.print(table)
    if len(report.rejected) > REJECTED_SHOWN:
        out.print(
            f"... and {len(report.rejected) - REJECTED_SHOWN} more (--json lists them all).",
            highlight=False,
        )


@subscriber_app.command("export")
def subscriber_export(
    list_name: ListOption,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="CSV file (default: stdout).")
    ] = None,
    status: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    segment: Annotated[str | None, typer.Option("--segment", help="A saved segment.")] = None,
    encoding: Annotated[
        str, typer.Option("--encoding", help="utf-8-sig (Excel), utf-8 or cp932.")
    ] = "utf-8-sig",
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Export members as CSV (formula-like cells neutralised for spreadsheets)."""

    async def work(services: "Services") -> dict[str, Any]:
        if as_json and output is None:
            raise _failure("--json needs -o FILE (stdout carries the JSON document)")
        service = services.lists
        found = await service.get_list(_list_ref(list_name))
        if output is None:
            count = await service.export_csv(
                found.id, sys.stdout.buffer, status=status, segment=segment, encoding=encoding
            )
            sys.stdout.flush()
        else:
            with output.open("wb") as handle:
                count = await service.export_csv(
                    found.id, handle, status=status, segment=segment, encoding=encoding
                )
        return {"list": found.name, "file": str(output) if output else None, "rows": count}

    result = _run(config, as_json, work)
    if as_json:
        _emit_json({**result, "encoding": encoding})
    elif output is not None:
        _err().print(f"Wrote {result['rows']} rows to {output}.", highlight=False)


@subscriber_app.command("add")
def subscriber_add(
    address: Annotated[str, typer.Argument(help="The address.")],
    list_name: ListOption,
    name: Annotated[str | None, typer.Option("--name")] = None,
    attr: Annotated[
        list[str] | None, typer.Option("--attr", help="KEY=VALUE attribute (repeatable).")
    ] = None,
    confirmed: Annotated[
        bool,
        typer.Option(
            "--confirmed", help="Consent already proven: subscribed at once, even on double."
        ),
    ] = False,
    no_mail: Annotated[
        bool, typer.Option("--no-confirmation-mail", help="Double opt-in: do not send it.")
    ] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Add (or re-subscribe) an address; on a double opt-in list a confirmation mail is
    queued unless --confirmed."""

    async def work(services: "Services") -> dict[str, Any]:
        service = services.lists
        found = await service.get_list(_list_ref(list_name))
        member = await service.add_subscriber(
            found.id,
            address,
            name=name,
            attributes=_attributes(attr),
            optin=OptIn("cli", source="kakitome subscriber add"),
            confirmed=confirmed,
            send_confirmation=not no_mail,
        )
        return {"list": found.name, "member": member.to_dict()}

    result = _run(config, as_json, work)
    if as_json:
        _emit_json(result)
    else:
        member = result["member"]
        _out().print(
            f"{member['subscriber']['address']} on {result['list']}: {member['status']}.",
            highlight=False,
        )


@subscriber_app.command("remove")
def subscriber_remove(
    address: Annotated[str, typer.Argument(help="The address.")],
    list_name: ListOption,
    delete: Annotated[
        bool,
        typer.Option("--delete", help="Delete the membership instead of unsubscribing."),
    ] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Unsubscribe an address from a list (the opt-in record and history are kept), or
    with --delete remove the membership altogether."""

    async def work(services: "Services") -> dict[str, Any]:
        service = services.lists
        found = await service.get_list(_list_ref(list_name))
        if delete:
            done = await service.remove_subscriber(found.id, address)
            if not done:
                from kakitome.errors import NotFound

                raise NotFound(f"{address} is not on the list {found.name}")
            return {"list": found.name, "address": address, "action": "deleted"}
        member = await service.membership(found.id, address)
        changed = await service.unsubscribe(
            found.id, member.subscriber.id, method="admin", detail="kakitome subscriber remove"
        )
        action = "unsubscribed" if changed else "already_unsubscribed"
        return {"list": found.name, "address": member.subscriber.address, "action": action}

    result = _run(config, as_json, work)
    if as_json:
        _emit_json(result)
    else:
        _out().print(f"{result['address']} on {result['list']}: {result['action']}.")


@subscriber_app.command("list")
def subscriber_list(
    list_name: ListOption,
    status: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    after: Annotated[int, typer.Option("--after", help="Subscriber id to page after.")] = 0,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Members of a list in subscriber-id order (page with --after)."""

    async def work(services: "Services") -> dict[str, Any]:
        service = services.lists
        found = await service.get_list(_list_ref(list_name))
        members = await service.members(
            found.id, status=status, after_subscriber_id=after, limit=limit
        )
        return {"list": found.name, "members": [m.to_dict() for m in members]}

    result = _run(config, as_json, work)
    if as_json:
        _emit_json(result)
        return
    table = Table(title=f"{len(result['members'])} members of {result['list']}")
    for column in ("Id", "Address", "Name", "Status", "Opt-in"):
        table.add_column(column)
    for member in result["members"]:
        person = member["subscriber"]
        table.add_row(
            str(person["id"]),
            person["address"],
            person["name"],
            member["status"],
            member["opt_in"]["method"],
        )
    _out().print(table)


# -- segments ---------------------------------------------------------------------------


def _expression(text: str) -> str | dict[str, Any]:
    """Segment text, JSON text, or ``@file`` holding either."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise _failure(f"cannot read {text[1:]}: {exc}") from None
    if text.lstrip().startswith("{"):
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _failure(f"the JSON segment does not parse: {exc}") from None
        if not isinstance(decoded, dict):
            raise _failure("a JSON segment is an object")
        return decoded
    return text


@segment_app.command("create")
def segment_create(
    name: Annotated[str, typer.Argument(help="Segment name.")],
    expression: Annotated[
        str, typer.Argument(help="Expression (segment language or JSON), or @file.")
    ],
    list_name: Annotated[
        str | None, typer.Option("--list", "-l", help="Tie the segment to one list.")
    ] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Save a segment (checked first: a bad expression is refused with its position)."""

    async def work(services: "Services") -> dict[str, Any]:
        service = services.lists
        ref = None if list_name is None else _list_ref(list_name)
        saved = await service.save_segment(name, _expression(expression), list_ref=ref)
        return saved.to_dict()

    result = _run(config, as_json, work)
    if as_json:
        _emit_json({"segment": result})
    else:
        _out().print(f"Saved segment {result['name']}: {result['expression']}", highlight=False)


@segment_app.command("list")
def segment_list(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """All saved segments."""

    async def work(services: "Services") -> list[dict[str, Any]]:
        return [s.to_dict() for s in await services.lists.segments()]

    rows = _run(config, as_json, work)
    if as_json:
        _emit_json({"segments": rows})
        return
    table = Table(title=f"{len(rows)} segments")
    for column in ("Id", "Name", "List", "Expression"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["name"],
            "-" if row["list_id"] is None else str(row["list_id"]),
            row["expression"],
        )
    _out().print(table)


@segment_app.command("show")
def segment_show(
    name: Annotated[str, typer.Argument(help="Segment name or id.")],
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """One segment, with its audience size when it belongs to a list."""

    async def work(services: "Services") -> dict[str, Any]:
        service = services.lists
        saved = await service.get_segment(_list_ref(name))
        audience = None
        if saved.list_id is not None:
            audience = await service.count_audience(saved.list_id, segment=saved.id)
        return {"segment": saved.to_dict(), "audience": audience}

    result = _run(config, as_json, work)
    if as_json:
        _emit_json(result)
        return
    segment = result["segment"]
    _out().print(f"{segment['name']}: {segment['expression']}", highlight=False)
    if result["audience"] is not None:
        _out().print(f"audience now: {result['audience']}", highlight=False)


@segment_app.command("test")
def segment_test(
    list_name: ListOption,
    expression: Annotated[
        str | None, typer.Argument(help="Expression to try (or use --segment).")
    ] = None,
    segment: Annotated[str | None, typer.Option("--segment", help="A saved segment.")] = None,
    sample: Annotated[int, typer.Option("--sample", min=0, max=1000)] = 10,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """How many members of a list an expression (or a saved segment) selects, with a
    sample of addresses. Saves nothing."""

    async def work(services: "Services") -> dict[str, Any]:
        if expression is None and segment is None:
            raise _failure("give an EXPRESSION or --segment NAME")
        service = services.lists
        found = await service.get_list(_list_ref(list_name))
        parsed = None if expression is None else _expression(expression)
        canonical = None
        if parsed is not None:
            canonical = await service.check_segment(parsed, list_ref=found.id)
        seg_ref = None if segment is None else _list_ref(segment)
        count = await service.count_audience(found.id, segment=seg_ref, expression=parsed)
        addresses: list[str] = []
        if sample:
            async for batch in service.iter_audience(
                found.id, segment=seg_ref, expression=parsed, batch_size=sample
            ):
                addresses = [m.address for m in batch]
                break
        return {
            "list": found.name,
            "expression": canonical,
            "segment": segment,
            "audience": count,
            "sample": addresses,
        }

    result = _run(config, as_json, work)
    if as_json:
        _emit_json(result)
        return
    out = _out()
    if result["expression"]:
        out.print(f"expression: {result['expression']}", highlight=False)
    out.print(f"{result['audience']} members of {result['list']} match.", highlight=False)
    for address in result["sample"]:
        out.print(f"  {address}", highlight=False)


@segment_app.command("remove")
def segment_remove(
    name: Annotated[str, typer.Argument(help="Segment name or id.")],
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Delete a saved segment."""

    async def work(services: "Services") -> dict[str, Any]:
        service = services.lists
        saved = await service.get_segment(_list_ref(name))
        await service.remove_segment(saved.id)
        return {"removed": saved.name, "id": saved.id}

    result = _run(config, as_json, work)
    if as_json:
        _emit_json(result)
    else:
        _out().print(f"Removed segment {result['removed']}.", highlight=False)
