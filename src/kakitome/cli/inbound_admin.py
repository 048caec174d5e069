"""``kakitome inbound held|show|release|delete`` and ``kakitome tlsrpt list|show``.

Held mail is what the MX kept for an inbound domain whose route says ``hold`` (or that
has no route). ``release`` hands one held message to a ``forward`` route (the running
service's forwarder POSTs it within seconds); ``delete`` removes held messages for good.
TLS-RPT reports are those other senders sent to our reporting addresses (RFC 8460).

Thin over ``InboundStore`` (``services.inbound_store``) and ``kakitome.inbound.held``
(release and delete, shared with the HTTP API); the conventions of ``kakitome.cli.main``
(``--json`` prints one document, exit 2 for bad input, 1 when something named is not
there).
"""

# No `from __future__ import annotations`: Typer reads the annotations at run time.

import json
import sys
import time
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kakitome.cli.inbound import ConfigOption, JsonOption, _cli, _emit_json, _run, _say
from kakitome.inbound.held import delete_held, release_held
from kakitome.inbound.store import InboundRow, TLSReportRecord

if TYPE_CHECKING:
    from kakitome.services import Services

__all__ = ["inbound_app", "tlsrpt_app"]

inbound_app = typer.Typer(help="Mail the MX holds for people to read.", no_args_is_help=True)
tlsrpt_app = typer.Typer(help="TLS-RPT reports other senders sent us.", no_args_is_help=True)

LimitOption = Annotated[int, typer.Option("--limit", min=1, max=10_000)]
OffsetOption = Annotated[int, typer.Option("--offset", min=0)]


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _headers(content: bytes) -> dict[str, str]:
    head = BytesHeaderParser(policy=compat32).parsebytes(content)
    return {
        name: " ".join(str(head.get(name, "")).split())[:300]
        for name in ("From", "To", "Subject", "Date", "Message-ID")
        if head.get(name) is not None
    }


def _row_dict(row: InboundRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "received_at": _iso(row.received_at),
        "kind": row.kind,
        "status": row.status,
        "mail_from": row.mail_from,
        "recipients": list(row.recipients),
        "size": row.size,
        "route": row.route,
        "client_ip": row.client_ip,
        "helo": row.helo,
        "tls": row.tls,
        "attempts": row.attempts,
        "detail": row.detail,
    }


def _not_found(as_json: bool, what: str) -> None:
    _cli()._fail(as_json, "not_found", what, 1)


@inbound_app.command("held")
def inbound_held(
    limit: LimitOption = 100,
    offset: OffsetOption = 0,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """List held mail, newest first."""

    async def work(services: "Services") -> list[InboundRow]:
        return await services.inbound_store.list_inbound_page(
            status="held", limit=limit, offset=offset
        )

    rows = _run(config, as_json, work)
    if as_json:
        _emit_json({"held": [_row_dict(r) for r in rows]})
        return
    for r in rows:
        to = ",".join(r.recipients)
        _say(f"{r.id}\t{_iso(r.received_at)}\t<{r.mail_from}>\t{to}\t{r.size}", err=False)


@inbound_app.command("show")
def inbound_show(
    inbound_id: Annotated[str, typer.Argument(metavar="ID")],
    raw: Annotated[
        bool, typer.Option("--raw", help="Write the message as stored (bytes) to stdout.")
    ] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Show one received message: envelope, TLS, main header fields (or --raw)."""

    async def work(services: "Services") -> InboundRow | None:
        return await services.inbound_store.get_inbound(inbound_id)

    row = _run(config, as_json, work)
    if row is None:
        _not_found(as_json, f"no inbound message {inbound_id!r}")
        return
    if raw:
        sys.stdout.buffer.write(row.content)
        sys.stdout.flush()
        return
    document = _row_dict(row) | {"headers": _headers(row.content)}
    if as_json:
        _emit_json(document)
        return
    for key, value in document.items():
        if isinstance(value, dict | list):
            value = json.dumps(value, ensure_ascii=False)
        _say(f"{key}: {value}", err=False)


@inbound_app.command("release")
def inbound_release(
    inbound_id: Annotated[str, typer.Argument(metavar="ID")],
    route: Annotated[
        str | None,
        typer.Option("--route", help="The match of a forward route (default: by recipient)."),
    ] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Hand a held message to a forward route; the running service POSTs it."""

    async def work(services: "Services") -> str:
        chosen = await release_held(
            services.inbound_store,
            services.settings.inbound.routes,  # as changed at run time (settings overlay)
            inbound_id,
            route=route,
            now=time.time(),
        )
        return chosen.match

    match = _run(config, as_json, work)
    if as_json:
        _emit_json({"id": inbound_id, "released": True, "route": match})
    else:
        _say(f"{inbound_id} released to route {match!r}; the service forwards it.")


@inbound_app.command("delete")
def inbound_delete(
    inbound_ids: Annotated[list[str], typer.Argument(metavar="ID...")],
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Delete held messages for good."""

    async def work(services: "Services") -> dict[str, bool]:
        return await delete_held(services.inbound_store, inbound_ids)

    results = _run(config, as_json, work)
    missing = [i for i, done in results.items() if not done]
    if as_json:
        _emit_json({"deleted": [i for i, d in results.items() if d], "not_found": missing})
    else:
        for i, done in results.items():
            _say(f"{i} {'deleted' if done else 'is not a held message'}.")
    if missing:
        raise typer.Exit(1)


def _report_dict(record: TLSReportRecord, *, full: bool) -> dict[str, Any]:
    r = record.report
    out: dict[str, Any] = {
        "id": record.id,
        "received_at": _iso(record.received_at),
        "organization": r.organization,
        "report_id": r.report_id,
        "period_start": _iso(r.period_start),
        "period_end": _iso(r.period_end),
        "contact": r.contact,
        "successful": r.successful,
        "failed": r.failed,
        "inbound_message_id": record.inbound_message_id,
    }
    if full:
        out["report"] = r.report
    return out


@tlsrpt_app.command("list")
def tlsrpt_list(
    limit: LimitOption = 100,
    offset: OffsetOption = 0,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """List received TLS-RPT reports, newest first."""

    async def work(services: "Services") -> list[TLSReportRecord]:
        return await services.inbound_store.list_tls_report_records(limit=limit, offset=offset)

    records = _run(config, as_json, work)
    if as_json:
        _emit_json({"reports": [_report_dict(r, full=False) for r in records]})
        return
    for rec in records:
        r = rec.report
        _say(
            f"{rec.id}\t{_iso(rec.received_at)}\t{r.organization}\t{r.report_id}\t"
            f"ok={r.successful}\tfailed={r.failed}",
            err=False,
        )


@tlsrpt_app.command("show")
def tlsrpt_show(
    report_id: Annotated[int, typer.Argument(metavar="ID", help="The id from tlsrpt list.")],
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Show one TLS-RPT report, with its policies and failure details."""

    async def work(services: "Services") -> TLSReportRecord | None:
        return await services.inbound_store.get_tls_report(report_id)

    record = _run(config, as_json, work)
    if record is None:
        _not_found(as_json, f"no TLS report {report_id}")
        return
    document = _report_dict(record, full=True)
    if as_json:
        _emit_json(document)
        return
    report = document.pop("report")
    for key, value in document.items():
        _say(f"{key}: {value}", err=False)
    _say(json.dumps(report, ensure_ascii=False, indent=2), err=False)
