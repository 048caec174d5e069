"""``kakitome domain``: sending domains, thin over ``kakitome.domains.service``
(``services.domains``).

Commands: ``add``, ``dns``, ``verify``, ``rotate-dkim``, ``list``, ``show``, ``remove``.
Like every command they take ``--config`` and ``--json`` (one JSON document on stdout,
nothing else), and exit 0 on success, 2 on bad input (a name that is not a domain, a
key file that cannot be read), 1 otherwise (unknown domain, DNS not answering, database
unavailable). ``verify`` exits 0 when it could check, whatever it found; ``--strict``
makes a failing domain exit 3. Output never contains private keys. ``--lang ja`` prints
findings in Japanese (the JSON always has both).
"""

# No `from __future__ import annotations`: Typer reads the annotations at run time.

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from kakitome.services import Services

domain_app = typer.Typer(
    help="Sending domains: DKIM keys, DNS records to publish, verification.",
    no_args_is_help=True,
)

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Settings file (default: $KAKITOME_CONFIG or ./kakitome.toml)."),
]
DomainArgument = Annotated[str, typer.Argument(help="The domain, e.g. example.com or 例え.jp.")]
LangOption = Annotated[str, typer.Option("--lang", help="en or ja.")]

_MARKS = {"ok": "✓", "missing": "✗", "wrong": "✗", "warning": "!"}


def _run(config: Path | None, as_json: bool, work: Any) -> Any:
    # Imported here: kakitome.cli.main registers this app and imports this module.
    from kakitome.cli.main import _run as run

    return run(config, as_json, work)


def _emit(document: Any) -> None:
    from kakitome.cli.main import _emit_json

    _emit_json(document)


def _out() -> Console:
    return Console(soft_wrap=True, highlight=False)


def _print_records(records: dict[str, Any]) -> None:
    _out().print(records["zone_file"], markup=False, end="")


@domain_app.command("add")
def add(
    domain: DomainArgument,
    rsa_key: Annotated[
        Path | None, typer.Option("--rsa-key", help="Import this RSA private key (PEM).")
    ] = None,
    ed25519_key: Annotated[
        Path | None, typer.Option("--ed25519-key", help="Import this Ed25519 private key (PEM).")
    ] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Add a sending domain: make its DKIM keys and print the DNS records to publish."""

    async def work(services: "Services") -> dict[str, Any]:
        service = services.domains
        view = await service.add(domain, rsa_key_file=rsa_key, ed25519_key_file=ed25519_key)
        records = await service.records(view.name.ascii)
        return {"domain": view.to_dict(), "dns": records.to_dict()}

    result = _run(config, as_json, work)
    if as_json:
        _emit(result)
        return
    info = result["domain"]
    name = (
        info["domain"]
        if info["unicode"] == info["domain"]
        else (f"{info['unicode']} ({info['domain']})")
    )
    _out().print(f"Added {name}; signing with {', '.join(info['signing_selectors'])}.")
    _out().print("Publish these records, then run `kakitome domain verify`:\n")
    _print_records(result["dns"])


@domain_app.command("dns")
def dns(domain: DomainArgument, as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """The DNS records to publish for a domain (zone-file snippet, or JSON)."""

    async def work(services: "Services") -> dict[str, Any]:
        records = await services.domains.records(domain)
        document: dict[str, Any] = records.to_dict()
        return document

    result = _run(config, as_json, work)
    if as_json:
        _emit(result)
    else:
        _print_records(result)


@domain_app.command("verify")
def verify(
    domain: DomainArgument,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 3 when the domain is not verified.")
    ] = False,
    lang: LangOption = "en",
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Query DNS and judge every record: ok, missing or wrong, each with a remedy."""

    async def work(services: "Services") -> dict[str, Any]:
        document: dict[str, Any] = (await services.domains.verify(domain)).to_dict()
        return document

    result = _run(config, as_json, work)
    if as_json:
        _emit(result)
    else:
        language = "ja" if lang == "ja" else "en"
        table = Table(title=f"{result['unicode']}: {result['state']}", show_lines=True)
        for column in ("", "Check", "Name", "Finding", "Remedy"):
            table.add_column(column)
        for finding in result["findings"]:
            remedy = finding["remedy"][language] if finding["remedy"] else ""
            table.add_row(
                _MARKS.get(finding["status"], "?"),
                finding["check"],
                finding["name"] or "",
                finding["message"][language],
                remedy,
            )
        _out().print(table)
    if strict and result["state"] != "verified":
        raise typer.Exit(3)


@domain_app.command("rotate-dkim")
def rotate_dkim(
    domain: DomainArgument, as_json: JsonOption = False, config: ConfigOption = None
) -> None:
    """Make new DKIM keys; signing switches to them once `domain verify` sees them in DNS."""

    async def work(services: "Services") -> dict[str, Any]:
        service = services.domains
        view = await service.rotate_dkim(domain)
        records = await service.records(domain)
        return {"domain": view.to_dict(), "dns": records.to_dict()}

    result = _run(config, as_json, work)
    if as_json:
        _emit(result)
        return
    pending = [k["selector"] for k in result["domain"]["keys"] if k["state"] == "pending"]
    _out().print(
        f"New keys {', '.join(pending)} are pending. Publish their records; signing switches "
        "to them when `kakitome domain verify` sees them (the old keys stay published for "
        "the grace period).\n"
    )
    _print_records(result["dns"])


@domain_app.command("list")
def list_(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """The sending domains and their state."""

    async def work(services: "Services") -> list[dict[str, Any]]:
        return [view.to_dict() for view in await services.domains.list_domains()]

    rows = _run(config, as_json, work)
    if as_json:
        _emit({"domains": rows})
        return
    table = Table(title=f"{len(rows)} sending domain(s)")
    for column in ("Domain", "State", "Signing with", "Return path", "Verified"):
        table.add_column(column)
    for row in rows:
        name = (
            row["domain"]
            if row["unicode"] == row["domain"]
            else (f"{row['unicode']} ({row['domain']})")
        )
        table.add_row(
            name,
            row["state"],
            ", ".join(row["signing_selectors"]),
            row["return_path"],
            row["verified_at"] or "never",
        )
    _out().print(table)


@domain_app.command("show")
def show(domain: DomainArgument, as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """A domain's keys, state and last findings (never a private key)."""

    async def work(services: "Services") -> dict[str, Any]:
        document: dict[str, Any] = (await services.domains.show(domain)).to_dict()
        return document

    info = _run(config, as_json, work)
    if as_json:
        _emit(info)
        return
    out = _out()
    out.print(f"{info['unicode']} ({info['domain']})  state: {info['state']}", markup=False)
    out.print(f"return path: {info['return_path']}  verified: {info['verified_at'] or 'never'}")
    if info["failing"]:
        out.print(f"failing: {', '.join(info['failing'])}")
    table = Table(title="DKIM keys")
    for column in ("Selector", "Type", "State", "Created", "Retire at"):
        table.add_column(column)
    for key in info["keys"]:
        table.add_row(
            key["selector"], key["type"], key["state"], key["created_at"], key["retire_at"] or ""
        )
    out.print(table)


@domain_app.command("remove")
def remove(
    domain: DomainArgument,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Remove a sending domain and destroy its keys (its mail is refused afterwards)."""
    if not yes and not as_json:
        typer.confirm(f"Remove {domain} and destroy its DKIM keys?", abort=True)

    async def work(services: "Services") -> None:
        await services.domains.remove(domain)

    _run(config, as_json, work)
    if as_json:
        _emit({"removed": domain})
    else:
        _out().print(f"Removed {domain}. Its DNS records can go too.")
