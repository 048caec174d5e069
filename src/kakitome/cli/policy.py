"""``kakitome policy``: the effective TLS policy of a destination, explained.

``kakitome policy explain example.com [--json]`` resolves the domain's MX hosts and, for
each, the level that delivery would use now and where every part came from: the table,
DANE (TLSA on DNSSEC-validated answers), MTA-STS (fetched or cached), the host's TLS
history, or the default. It uses the same resolver, policy code and database (MTA-STS
cache, history) as delivery, so what it prints is what the agent would do; discovering an
MTA-STS policy stores it in the cache as delivery would. The explanation itself is
``kakitome.tls.explain`` (shared with ``GET /api/v1/policy/{domain}``). Exit 0 when it
could resolve, 1 when DNS or the database failed, 2 on bad input.
"""

# No `from __future__ import annotations`: Typer reads the annotations at run time.

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from kakitome.services import Services

policy_app = typer.Typer(
    help="TLS policy of destinations: DANE, MTA-STS, history.", no_args_is_help=True
)

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Settings file (default: $KAKITOME_CONFIG or ./kakitome.toml)."),
]


@policy_app.command("explain")
def explain(
    domain: Annotated[str, typer.Argument(help="The destination domain, e.g. example.com.")],
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """The effective TLS policy for each MX of DOMAIN and where each part came from."""
    from kakitome.cli.main import _emit_json, _run

    async def work(services: "Services") -> dict[str, Any]:
        from kakitome.dns.resolver import Resolver
        from kakitome.tls.explain import explain_policy

        settings = services.settings
        return await explain_policy(settings, Resolver(settings.dns), services.tls_store, domain)

    result = _run(config, as_json, work)
    if as_json:
        _emit_json(result)
        return
    out = Console(soft_wrap=True, highlight=False)
    if result.get("error"):
        out.print(f"{result['domain']}: {result['error']}", markup=False)
        raise typer.Exit(1)
    if result.get("null_mx"):
        out.print(f"{result['domain']} accepts no mail (null MX).", markup=False)
        return
    base = result["base"]
    out.print(f"{result['domain']}: base level {base['level']} ({base['source']})", markup=False)
    for note in result.get("notes", []):
        out.print(f"  note: {note}", markup=False)
    table = Table("MX", "level", "source", "how it was decided")
    for host in result["hosts"]:
        level = host["level"] + (" (skipped)" if host["skip"] else "")
        lines = [f"{p['source']}: {p['what']} — {p['detail']}" for p in host["explanation"]]
        if host["skip"]:
            lines.append(f"skip: {host['skip']}")
        if host["tlsa"]:
            lines.append("TLSA: " + "; ".join(t[:40] for t in host["tlsa"]))
        table.add_row(host["mx_host"], level, host["source"], "\n".join(lines))
    out.print(table)
