"""``kakitome check``: the security checker from the command line.

``kakitome check DOMAIN [--json] [--sending]`` reports the receiving side of a domain (and
the sending side when the domain is one of ours, or with ``--sending``);
``kakitome check --addresses FILE [--json] [--no-cache]`` reports on a whole list, and
``kakitome check --list NAME [--json]`` on the subscribed (not bounced) addresses of a
stored newsletter list.

With ``--json`` exactly one JSON document goes to stdout and nothing else (no progress
bar); on failure it is ``{"error": {"code", "message"}}``. Exit status: 0 when a report was
made (whatever its grade), 2 for bad input (no domain, unreadable file, bad settings),
1 for anything else.

A domain check needs no database: the receiving side is made on the file's settings first;
the sending side then opens the services (``kakitome.cli.context``) to ask
``services.domains`` whether the domain is ours, and without a database (or its DKIM key
secret) the report goes without it. ``--list`` reads the list through ``services.lists``.
"""

# No `from __future__ import annotations`: Typer reads the annotations at run time.

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from kakitome.config import Settings, load_settings
from kakitome.errors import ConfigError

_STYLE = {
    "ok": "green",
    "info": "cyan",
    "warning": "yellow",
    "error": "red",
    "critical": "bold red",
}


def _emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def _fail(as_json: bool, code: str, message: str, exit_code: int) -> NoReturn:
    Console(stderr=True, soft_wrap=True).print(
        f"kakitome: {message}", markup=False, highlight=False
    )
    if as_json:
        _emit_json({"error": {"code": code, "message": message}})
    raise typer.Exit(exit_code)


def check(
    domain: Annotated[str | None, typer.Argument(help="The domain to check.")] = None,
    addresses: Annotated[
        Path | None,
        typer.Option(
            "--addresses",
            help="A list to check: CSV with an email column, or one address per line.",
        ),
    ] = None,
    list_name: Annotated[
        str | None,
        typer.Option("--list", help="A stored list (name or id): its subscribed addresses."),
    ] = None,
    sending: Annotated[
        bool, typer.Option("--sending", help="Also check the sending side (T39, domain verify).")
    ] = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="List checks: ignore and do not write the cache.")
    ] = False,
    lang: Annotated[str, typer.Option("--lang", help="en or ja (text output).")] = "en",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="Settings file (default: $KAKITOME_CONFIG or ./kakitome.toml)."
        ),
    ] = None,
) -> None:
    """Can a domain receive encrypted mail? What share of a list can? (STARTTLS, TLS
    versions, certificates, DANE, MTA-STS, TLS-RPT, REQUIRETLS, reverse DNS.)"""
    if sum(x is not None for x in (domain, addresses, list_name)) != 1:
        _fail(as_json, "invalid_input", "give one of a DOMAIN, --addresses FILE or --list NAME", 2)
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        _fail(as_json, "invalid_settings", str(exc), 2)
    try:
        if list_name is not None:
            _check_list(
                settings, None, as_json=as_json, use_cache=not no_cache, lang=lang, stored=list_name
            )
        elif addresses is not None:
            _check_list(settings, addresses, as_json=as_json, use_cache=not no_cache, lang=lang)
        else:
            assert domain is not None
            _check_domain(settings, domain, as_json=as_json, sending=sending, lang=lang)
    except OSError as exc:
        _fail(as_json, "os_error", str(exc), 2 if addresses is not None else 1)


# -- one domain -------------------------------------------------------------------------


def _check_domain(
    settings: Settings, domain: str, *, as_json: bool, sending: bool, lang: str
) -> None:
    from kakitome.checker.sending import domain_service_verifier, sending_findings
    from kakitome.checker.service import Checker
    from kakitome.cli.context import services_for
    from kakitome.errors import StorageError

    async def work() -> Any:
        checker = Checker(settings)
        report = await checker.check_domain(domain)
        async with contextlib.AsyncExitStack() as stack:
            try:
                services = await stack.enter_async_context(services_for(settings))
            except (StorageError, ConfigError, OSError):
                # No database (or no DKIM key secret, or a database URL this build
                # cannot use): the report has the receiving side (and T39).
                services = None
            verifier = domain_service_verifier(services.domains) if services else None
            side = await sending_findings(
                report.domain,
                services.settings if services else settings,
                checker.resolver,
                verifier,
                force=sending,
            )
        if side is not None:
            from dataclasses import replace

            report = replace(report, sending=tuple(side))
        return report

    if as_json:
        report = asyncio.run(work())
        _emit_json(report.to_dict())
        return
    console = Console(stderr=True)
    with console.status(f"Checking {domain} ..."):
        report = asyncio.run(work())
    _print_domain(report, lang)


def _print_domain(report: Any, lang: str) -> None:
    out = Console(soft_wrap=True)
    letter, why = report.grade
    kind, reason = report.transport
    out.print(f"[bold]{report.domain}[/bold]  grade [bold]{letter or '-'}[/bold] ({why})")
    out.print(f"mail would travel: {kind.value} ({reason})")
    for host in report.facts.hosts:
        for probe in host.probes:
            versions = ", ".join(v.version for v in probe.versions if v.accepted) or "-"
            cert = probe.certificate
            key = f"{cert.key_type} {cert.key_bits}" if cert else "-"
            days = cert.days_left if cert else "-"
            out.print(
                f"  MX {host.preference} {host.name} [{probe.address}]: "
                f"{'reachable' if probe.reachable else 'unreachable'}, "
                f"STARTTLS {'yes' if probe.starttls_offered else 'no'}, "
                f"{probe.tls_version or '-'} {probe.cipher or ''}, {probe.verification}, "
                f"versions {versions}, key {key}, days left {days}",
                highlight=False,
            )
    _print_findings(out, "Receiving side", report.findings, lang)
    if report.sending is not None:
        _print_findings(out, "Sending side", report.sending, lang)


def _print_findings(out: Console, title: str, findings: Any, lang: str) -> None:
    table = Table(title=title, show_lines=False)
    table.add_column("severity")
    table.add_column("code")
    table.add_column("finding")
    table.add_column("remedy")
    for finding in findings:
        severity = finding.effective_severity.value
        table.add_row(
            f"[{_STYLE[severity]}]{severity}[/]",
            finding.code,
            finding.message(lang),
            finding.remedy(lang),
        )
    out.print(table)


# -- a list -----------------------------------------------------------------------------


def _stored_list(settings: Settings, ref: str, as_json: bool) -> tuple[dict[str, Any], Any]:
    """The subscribed, not bounced addresses of a stored list, counted per domain (read in
    batches: memory grows with the domains, not the addresses)."""
    from kakitome.checker.bulk import collect_addresses
    from kakitome.cli.context import services_for
    from kakitome.errors import InputError, KakitomeError, NotFound, StorageError

    async def work() -> tuple[dict[str, Any], Any]:
        async with services_for(settings) as services:
            service = services.lists
            found = await service.get_list(int(ref) if ref.isdigit() else ref)

            async def addresses() -> Any:
                async for batch in service.iter_audience(found.id, batch_size=5_000):
                    for member in batch:
                        yield member.address

            collected = await collect_addresses(addresses())
            return {"id": found.id, "name": found.name}, collected

    try:
        return asyncio.run(work())
    except NotFound as exc:
        _fail(as_json, "not_found", str(exc), 1)
    except InputError as exc:
        _fail(as_json, "invalid_input", str(exc), 2)
    except StorageError as exc:
        _fail(as_json, "storage_unavailable", f"the database is unavailable: {exc}", 1)
    except KakitomeError as exc:  # e.g. the DKIM key secret (loaded with the services)
        _fail(as_json, "error", str(exc), 1)


def _check_list(
    settings: Settings,
    path: Path | None,
    *,
    as_json: bool,
    use_cache: bool,
    lang: str,
    stored: str | None = None,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from kakitome.checker.bulk import check_list, read_address_file
    from kakitome.checker.cache import FILE_NAME, CheckerCache
    from kakitome.checker.service import Checker

    source: dict[str, Any] | None = None
    if stored is not None:
        source, addresses = _stored_list(settings, stored, as_json)
    else:
        assert path is not None
        addresses = read_address_file(path)
    cache = None
    if use_cache:
        cache = CheckerCache.open(
            settings.data_dir / FILE_NAME,
            ttl=settings.checker.cache_ttl,
            max_entries=settings.checker.cache_entries,
        )

    async def work(progress: Any) -> Any:
        checker = Checker(settings, cache=cache)
        return await check_list(addresses, checker, progress=progress)

    if as_json:
        report = asyncio.run(work(None))
    else:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as bar:
            task = bar.add_task("Checking domains", total=len(addresses.domains))

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done)

            report = asyncio.run(work(progress))
    if cache is not None:
        cache.save()
    if as_json:
        document = report.to_dict()
        if source is not None:
            document = {"list": source, **document}
        _emit_json(document)
        return
    if source is not None:
        Console(soft_wrap=True).print(f"List [bold]{source['name']}[/bold] (subscribed members)")
    _print_list(report)


def _print_list(report: Any) -> None:
    out = Console(soft_wrap=True)
    data = report.to_dict()
    out.print(f"[bold]{data['recipients']}[/bold] recipients at {data['domains']} domains")
    table = Table(title="How their mail would travel")
    table.add_column("transport")
    table.add_column("recipients", justify="right")
    table.add_column("share", justify="right")
    for kind, row in data["transport"].items():
        table.add_row(kind, str(row["recipients"]), f"{row['share'] * 100:.1f}%")
    out.print(table)
    for name, row in data["coverage"].items():
        out.print(
            f"{name.upper().replace('_', '-')}: {row['recipients']} recipients "
            f"({row['share'] * 100:.1f}%) at {row['domains']} domains"
        )
    plain = data["without_starttls"]
    if plain:
        ranked = Table(title="Domains without STARTTLS (most recipients first)")
        ranked.add_column("domain")
        ranked.add_column("recipients", justify="right")
        ranked.add_column("why")
        for row in plain[:50]:
            ranked.add_row(row["domain"], str(row["recipients"]), row["reason"])
        out.print(ranked)
    bad = data["invalid_lines"]
    if bad["count"]:
        out.print(f"[yellow]{bad['count']} lines are not addresses:[/yellow]")
        for row in bad["lines"][:20]:
            out.print(f"  line {row['line']}: {row['text']!r}: {row['reason']}", highlight=False)
    stats = data["stats"]
    out.print(
        f"probes {stats['probes']}, cache hits {stats['cache_hits']}, MX sites {stats['mx_sites']}",
        style="dim",
    )
