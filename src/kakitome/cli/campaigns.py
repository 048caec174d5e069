"""``kakitome campaign|sequence``: newsletters and step mail from the command line.

- ``campaign create|list|show|preview|test|schedule|send|pause|resume|cancel|stats``:
  campaigns on a list (or a segment of it), validated before anything is queued (template
  syntax, unknown names, the sandbox, the footer's sender identity); ``send`` and
  ``schedule`` hand the campaign to the worker role of ``kakitome serve``, which sends it
  in batches with a checkpoint;
- ``sequence create|list|show|add-step|update-step|remove-step``: step mail
  (ステップメール), each step ``--delay-days`` after a subscriber confirms, at ``--hour``
  o'clock in the list's time zone when given.

Bodies and subjects take ``@file`` for "read this UTF-8 file". Times for ``schedule --at``
are ISO 8601; one without a zone is read in the list's time zone (配信予約 at 09:00 means
09:00 where the subscribers are).

Thin over ``kakitome.campaigns.CampaignService``: ``services.campaigns``, whose test sends
go through the service's one injector (signed, VERP return paths). As every ``kakitome``
command (see ``kakitome.cli.main``): ``--config PATH`` and ``--json`` (then exactly one
JSON document on stdout, ``{"error": {"code", "message"}}`` on failure); exit status 0
success, 2 bad input (a template error, a bad time, a campaign in the wrong state), 1
anything else (unknown campaign, database unavailable).
"""

# No `from __future__ import annotations`: Typer reads the annotations at run time.

from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from kakitome.errors import InputError

if TYPE_CHECKING:
    from kakitome.services import Services

__all__ = ["campaign_app", "sequence_app"]

T = TypeVar("T")

campaign_app = typer.Typer(
    help="Campaigns (newsletters): create, preview, test, schedule, send, stats.",
    no_args_is_help=True,
)
sequence_app = typer.Typer(help="Step mail (ステップメール): sequences and their steps.",
                           no_args_is_help=True)  # fmt: skip

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Settings file (default: $KAKITOME_CONFIG or ./kakitome.toml)."),
]
CampaignArgument = Annotated[str, typer.Argument(help="The campaign (name or id).")]
SequenceArgument = Annotated[str, typer.Argument(help="The sequence (name or id).")]
StepArgument = Annotated[int, typer.Argument(help="The step id (see `sequence show`).")]
FormatOption = Annotated[
    str | None, typer.Option("--format", help="Body format: html, markdown or text.")
]
TrackingOption = Annotated[
    bool | None,
    typer.Option(
        "--tracking/--no-tracking", help="Open pixel and click redirects (default: settings)."
    ),
]
FooterOption = Annotated[
    bool,
    typer.Option(
        "--footer/--no-footer", help="The sender footer with the unsubscribe link (law: on)."
    ),
]

_TIME_FIELDS = ("scheduled_at", "next_run_at", "created_at", "updated_at", "started_at",
                "finished_at", "starts_at", "removed_at", "watermark")  # fmt: skip


# -- plumbing: the helpers of cli.main (imported when called: main imports this module) --


def _run(config: Path | None, as_json: bool, work: Callable[["Services"], Awaitable[T]]) -> T:
    from kakitome.cli.main import _run as run

    return run(config, as_json, work)


def _emit_json(document: Any) -> None:
    from kakitome.cli.main import _emit_json as emit

    emit(document)


def _text_or_file(value: str | None, what: str) -> str | None:
    from kakitome.cli.main import _text_or_file as read

    return read(value, what)


def _out() -> Console:
    return Console(soft_wrap=True, highlight=False)


def _err() -> Console:
    return Console(stderr=True, soft_wrap=True, highlight=False)


def _ref(value: str) -> int | str:
    """A name or an id: digits are an id."""
    return int(value) if value.isdigit() else value


def _times(document: dict[str, Any]) -> dict[str, Any]:
    from kakitome.receipts import iso_utc

    out = dict(document)
    for key in _TIME_FIELDS:
        if isinstance(out.get(key), int | float):
            out[key] = iso_utc(float(out[key]))
    return out


def _parse_at(value: str, time_zone: str) -> float:
    """ISO 8601 to epoch seconds; a time without a zone is in ``time_zone``."""
    from kakitome.campaigns.schedule import zone

    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InputError(f"--at {value!r}: not an ISO 8601 time (2030-04-01T09:00)") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone(time_zone))
    return moment.timestamp()


def _campaign_line(row: dict[str, Any]) -> str:
    return f"Campaign {row['id']} {row['name']!r}: {row['status']}"


def _print_campaigns(rows: list[dict[str, Any]]) -> None:
    table = Table(title=f"{len(rows)} campaigns")
    for column in ("Id", "Name", "List", "Status", "Sent", "Failed", "Scheduled", "Subject"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["name"],
            str(row["list_id"]),
            row["status"],
            str(row["sent"]),
            str(row["failed"]),
            row["scheduled_at"] or "",
            row["subject"],
        )
    _out().print(table)


def _print_campaign(row: dict[str, Any]) -> None:
    table = Table(title=_campaign_line(row), show_header=False)
    table.add_column("Field")
    table.add_column("Value")
    for key in ("list_id", "segment", "expression", "subject", "body_format", "tracking",
                "footer", "scheduled_at", "next_run_at", "checkpoint", "sent", "failed",
                "created_at", "started_at", "finished_at", "error"):  # fmt: skip
        value = row.get(key)
        if value is not None:
            table.add_row(key, str(value))
    _out().print(table)


# -- campaigns ----------------------------------------------------------------------------


@campaign_app.command("create")
def campaign_create(
    name: Annotated[str, typer.Argument(help="A name for the campaign.")],
    list_ref: Annotated[str, typer.Option("--list", "-l", help="The list (name or id).")],
    subject: Annotated[str, typer.Option("--subject", help="Subject template.")] = "",
    body: Annotated[str | None, typer.Option("--body", help="Body template (or @file).")] = None,
    body_format: FormatOption = None,
    text: Annotated[
        str | None,
        typer.Option("--text", help="Text part template (or @file); default: from the HTML."),
    ] = None,
    template: Annotated[
        str | None, typer.Option("--template", help="Start from this saved template.")
    ] = None,
    segment: Annotated[
        str | None, typer.Option("--segment", help="Send only to this saved segment.")
    ] = None,
    where: Annotated[
        str | None, typer.Option("--where", help="Send only to members matching this filter.")
    ] = None,
    tracking: TrackingOption = None,
    footer: FooterOption = True,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Create a draft campaign (checked now: template and sender identity)."""

    async def work(services: "Services") -> dict[str, Any]:
        if template is None and body is None:
            raise InputError("give --body (or @file) or --template")
        if segment is not None and where is not None:
            raise InputError("--segment and --where cannot be combined")
        service = services.campaigns
        fmt = body_format or ("markdown" if body and body.endswith(".md") else "html")
        row = await service.create(
            name,
            _ref(list_ref),
            subject=_text_or_file(subject, "--subject") or "",
            body=_text_or_file(body, "--body") or "",
            body_format=fmt,
            text=_text_or_file(text, "--text"),
            template=template,
            segment=segment,
            expression=where,
            tracking=tracking,
            footer=footer,
        )
        return _times(row.to_dict())

    result = _run(config, as_json, work)
    if as_json:
        _emit_json({"campaign": result})
    else:
        _out().print(f"Created campaign {result['id']} {result['name']!r} (draft).")


@campaign_app.command("list")
def campaign_list(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """Every campaign, oldest first."""

    async def work(services: "Services") -> list[dict[str, Any]]:
        service = services.campaigns
        return [_times(row.to_dict()) for row in await service.db.campaigns()]

    rows = _run(config, as_json, work)
    if as_json:
        _emit_json({"campaigns": rows})
    else:
        _print_campaigns(rows)


@campaign_app.command("show")
def campaign_show(
    campaign: CampaignArgument, as_json: JsonOption = False, config: ConfigOption = None
) -> None:
    """One campaign: its settings, state and progress."""

    async def work(services: "Services") -> dict[str, Any]:
        service = services.campaigns
        return _times((await service.get(_ref(campaign))).to_dict())

    result = _run(config, as_json, work)
    if as_json:
        _emit_json({"campaign": result})
    else:
        _print_campaign(result)


@campaign_app.command("preview")
def campaign_preview(
    campaign: CampaignArgument,
    subscriber: Annotated[
        str | None,
        typer.Option("--subscriber", help="Render for this subscriber (address or id)."),
    ] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Print the whole MIME message.")] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """The message as one subscriber (or a blank one) would get it. Nothing is sent."""

    async def work(services: "Services") -> dict[str, Any]:
        service = services.campaigns
        preview = await service.preview(
            _ref(campaign), _ref(subscriber) if subscriber is not None else None
        )
        document: dict[str, Any] = preview.to_dict()
        return document

    result = _run(config, as_json, work)
    if as_json:
        _emit_json({"preview": result})
        return
    if raw:
        _out().print(result["raw"].replace("\r\n", "\n"), markup=False, end="")
        return
    _out().print(f"Subject: {result['subject']}\n", markup=False)
    _out().print(result["text"] or "", markup=False)
    if result["lost_characters"]:
        _err().print(
            "ISO-2022-JP cannot carry: " + "".join(result["lost_characters"]), markup=False
        )


@campaign_app.command("test")
def campaign_test(
    campaign: CampaignArgument,
    to: Annotated[list[str], typer.Option("--to", help="Send the test here (repeatable).")],
    subscriber: Annotated[
        str | None,
        typer.Option("--subscriber", help="Render as this subscriber (address or id)."),
    ] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Send a test ([TEST] in the subject, untracked) to the given addresses only."""

    async def work(services: "Services") -> dict[str, Any]:
        service = services.campaigns
        ids = await service.test_send(
            _ref(campaign), to, subscriber=_ref(subscriber) if subscriber is not None else None
        )
        return {"messages": [{"id": i, "to": a} for i, a in zip(ids, to, strict=True)]}

    result = _run(config, as_json, work)
    if as_json:
        _emit_json(result)
    else:
        for item in result["messages"]:
            _out().print(f"Queued test message {item['id']} to {item['to']}.")


@campaign_app.command("schedule")
def campaign_schedule(
    campaign: CampaignArgument,
    at: Annotated[
        str,
        typer.Option(
            "--at", help="ISO 8601 time, e.g. 2030-04-01T09:00 (the list's zone) or ...+09:00."
        ),
    ],
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """配信予約: send the campaign at a time (checked now)."""

    async def work(services: "Services") -> dict[str, Any]:
        service = services.campaigns
        row = await service.get(_ref(campaign))
        mailing_list = await service.lists.get_list(row.list_id)
        when = _parse_at(at, mailing_list.time_zone)
        return _times((await service.schedule(row.id, when)).to_dict())

    result = _run(config, as_json, work)
    if as_json:
        _emit_json({"campaign": result})
    else:
        _out().print(f"{_campaign_line(result)} at {result['scheduled_at']}.")


def _transition(action: str, campaign: str, as_json: bool, config: Path | None, verb: str) -> None:
    async def work(services: "Services") -> dict[str, Any]:
        service = services.campaigns
        method = getattr(service, action)
        return _times((await method(_ref(campaign))).to_dict())

    result = _run(config, as_json, work)
    if as_json:
        _emit_json({"campaign": result})
    else:
        _out().print(f"{_campaign_line(result)} ({verb}).")


@campaign_app.command("send")
def campaign_send(
    campaign: CampaignArgument, as_json: JsonOption = False, config: ConfigOption = None
) -> None:
    """Send now: the worker role of `kakitome serve` starts at its next pass."""
    _transition("send_now", campaign, as_json, config, "the worker sends it now")


@campaign_app.command("pause")
def campaign_pause(
    campaign: CampaignArgument, as_json: JsonOption = False, config: ConfigOption = None
) -> None:
    """Pause a scheduled or sending campaign (it stops at a batch boundary)."""
    _transition("pause", campaign, as_json, config, "paused")


@campaign_app.command("resume")
def campaign_resume(
    campaign: CampaignArgument, as_json: JsonOption = False, config: ConfigOption = None
) -> None:
    """Resume a paused campaign where it stopped."""
    _transition("resume", campaign, as_json, config, "resumed")


@campaign_app.command("cancel")
def campaign_cancel(
    campaign: CampaignArgument, as_json: JsonOption = False, config: ConfigOption = None
) -> None:
    """Stop a campaign for good (messages already queued stay queued)."""
    _transition("cancel", campaign, as_json, config, "cancelled")


@campaign_app.command("stats")
def campaign_stats(
    campaign: CampaignArgument, as_json: JsonOption = False, config: ConfigOption = None
) -> None:
    """Sent, delivered, deferred, bounced, opened, clicked, unsubscribed, verified TLS."""

    async def work(services: "Services") -> dict[str, Any]:
        service = services.campaigns
        document: dict[str, Any] = (await service.stats(_ref(campaign))).to_dict()
        return document

    result = _run(config, as_json, work)
    if as_json:
        _emit_json({"stats": result})
        return
    table = Table(title=f"Campaign {result['campaign_id']} {result['name']!r}: {result['status']}",
                  show_header=False)  # fmt: skip
    table.add_column("What")
    table.add_column("Count")
    for key, value in result.items():
        if key in ("campaign_id", "name", "status"):
            continue
        if key == "verified_tls_share" and value is not None:
            value = f"{value:.1%}"
        table.add_row(key.replace("_", " "), "-" if value is None else str(value))
    _out().print(table)


# -- sequences ----------------------------------------------------------------------------


def _step_line(step: dict[str, Any]) -> str:
    hour = f" at {step['send_hour']:02d}:00" if step.get("send_hour") is not None else ""
    return f"step {step['id']} (#{step['position']}): day {step['delay_days']}{hour}"


@sequence_app.command("create")
def sequence_create(
    name: Annotated[str, typer.Argument(help="A name for the sequence.")],
    list_ref: Annotated[str, typer.Option("--list", "-l", help="The list (name or id).")],
    tracking: TrackingOption = None,
    footer: FooterOption = True,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Create a sequence: subscribers who confirm from now on start at step 1."""

    async def work(services: "Services") -> dict[str, Any]:
        service = services.campaigns
        row = await service.create_sequence(name, _ref(list_ref), tracking=tracking, footer=footer)
        return _times(row.to_dict())

    result = _run(config, as_json, work)
    if as_json:
        _emit_json({"sequence": result})
    else:
        _out().print(f"Created sequence {result['id']} {result['name']!r}; add steps with "
                     "`kakitome sequence add-step`.")  # fmt: skip


@sequence_app.command("list")
def sequence_list(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """Every sequence."""

    async def work(services: "Services") -> list[dict[str, Any]]:
        service = services.campaigns
        out = []
        for row in await service.db.sequences():
            item = _times(row.to_dict())
            item["steps"] = len(await service.db.steps(row.id))
            out.append(item)
        return out

    rows = _run(config, as_json, work)
    if as_json:
        _emit_json({"sequences": rows})
        return
    table = Table(title=f"{len(rows)} sequences")
    for column in ("Id", "Name", "List", "Status", "Steps", "Starts"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row["id"]), row["name"], str(row["list_id"]), row["status"],
                      str(row["steps"]), row["starts_at"] or "")  # fmt: skip
    _out().print(table)


@sequence_app.command("show")
def sequence_show(
    sequence: SequenceArgument, as_json: JsonOption = False, config: ConfigOption = None
) -> None:
    """A sequence and its steps, in order."""

    async def work(services: "Services") -> dict[str, Any]:
        service = services.campaigns
        row = await service.db.get_sequence(_ref(sequence))
        steps = [_times(step.to_dict()) for step in await service.db.steps(row.id)]
        return {"sequence": _times(row.to_dict()), "steps": steps}

    result = _run(config, as_json, work)
    if as_json:
        _emit_json(result)
        return
    info = result["sequence"]
    _out().print(f"Sequence {info['id']} {info['name']!r} on list {info['list_id']}: "
                 f"{info['status']}")  # fmt: skip
    for step in result["steps"]:
        _out().print(f"  {_step_line(step)}: {step['subject']}", markup=False)


def _check_hour(hour: int | None) -> None:
    if hour is not None and not 0 <= hour <= 23:
        raise InputError("--hour must be between 0 and 23")


@sequence_app.command("add-step")
def sequence_add_step(
    sequence: SequenceArgument,
    delay_days: Annotated[
        int, typer.Option("--delay-days", help="Days after the subscriber confirmed.")
    ],
    subject: Annotated[str, typer.Option("--subject", help="Subject template.")],
    body: Annotated[str, typer.Option("--body", help="Body template (or @file).")],
    hour: Annotated[
        int | None, typer.Option("--hour", help="Send at this hour (0-23, the list's zone).")
    ] = None,
    body_format: FormatOption = None,
    text: Annotated[
        str | None, typer.Option("--text", help="Text part template (or @file).")
    ] = None,
    position: Annotated[
        int | None, typer.Option("--position", help="Place (default: after the last step).")
    ] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Add a step (checked now)."""
    from kakitome.campaigns.store import NewStep

    async def work(services: "Services") -> dict[str, Any]:
        _check_hour(hour)
        service = services.campaigns
        step = NewStep(
            delay_days=delay_days,
            subject=_text_or_file(subject, "--subject") or "",
            body=_text_or_file(body, "--body") or "",
            body_format=body_format or "html",
            text=_text_or_file(text, "--text"),
            send_hour=hour,
            position=position,
        )
        return _times((await service.add_step(_ref(sequence), step)).to_dict())

    result = _run(config, as_json, work)
    if as_json:
        _emit_json({"step": result})
    else:
        _out().print(f"Added {_step_line(result)}.")


@sequence_app.command("update-step")
def sequence_update_step(
    step_id: StepArgument,
    delay_days: Annotated[int | None, typer.Option("--delay-days")] = None,
    hour: Annotated[
        int | None, typer.Option("--hour", help="Send at this hour (0-23); -1: any hour.")
    ] = None,
    subject: Annotated[str | None, typer.Option("--subject")] = None,
    body: Annotated[str | None, typer.Option("--body", help="Body template (or @file).")] = None,
    body_format: FormatOption = None,
    text: Annotated[str | None, typer.Option("--text", help="Text part (or @file).")] = None,
    position: Annotated[int | None, typer.Option("--position")] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Edit a step. Subscribers who already got it do not get it again."""

    async def work(services: "Services") -> dict[str, Any]:
        values: dict[str, Any] = {}
        if delay_days is not None:
            values["delay_days"] = delay_days
        if hour is not None:
            if hour != -1:
                _check_hour(hour)
            values["send_hour"] = None if hour == -1 else hour
        if subject is not None:
            values["subject"] = _text_or_file(subject, "--subject")
        if body is not None:
            values["body"] = _text_or_file(body, "--body")
        if body_format is not None:
            values["body_format"] = body_format
        if text is not None:
            values["text"] = _text_or_file(text, "--text") or None
        if position is not None:
            values["position"] = position
        if not values:
            raise InputError("nothing to change: give --subject, --body, --delay-days, ...")
        service = services.campaigns
        return _times((await service.update_step(step_id, **values)).to_dict())

    result = _run(config, as_json, work)
    if as_json:
        _emit_json({"step": result})
    else:
        _out().print(f"Updated {_step_line(result)}.")


@sequence_app.command("remove-step")
def sequence_remove_step(
    step_id: StepArgument, as_json: JsonOption = False, config: ConfigOption = None
) -> None:
    """Remove a step (nobody gets it from now on; what was sent is kept)."""

    async def work(services: "Services") -> bool:
        from kakitome.errors import NotFound

        service = services.campaigns
        if not await service.remove_step(step_id):
            raise NotFound(f"no step {step_id}")
        return True

    _run(config, as_json, work)
    if as_json:
        _emit_json({"removed": step_id})
    else:
        _out().print(f"Removed step {step_id}.")
