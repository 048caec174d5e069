"""``CampaignService``: campaigns, step mail, previews, test sends, the runner and statistics.

The one entry point for the CLI, the web and the worker. It reads lists and subscribers
only through ``kakitome.lists.ListService``, stores through
``kakitome.campaigns.store.CampaignStore`` and hands every message to the
``Injector`` (``prepare_raw`` with source ``campaign``: validation and DKIM signing, which
covers List-Unsubscribe and List-Unsubscribe-Post); the batch is then committed with its
checkpoint in one transaction (see campaigns/store.py for why).

Life of a campaign::

    draft ──schedule(at)──> scheduled ──(at ≤ now)──> sending ──(audience done)──> finished
      │                        │                     │  ▲
      └──send_now─────────────────────────────────────┘  │ resume
                               pause ───────> paused ────┘
    any state but finished ──cancel──> cancelled

Before a campaign leaves ``draft`` its template is compiled (syntax, unknown names, the
sandbox) and rendered for the first member of its audience (or a blank stand-in), and the
list is checked for the sender identity the footer needs: every such error is raised
then, before anything is queued. A template that still fails for one subscriber later (an
attribute only some have) is recorded for that subscriber in ``campaign_sends.error`` and
counted as ``failed``; the others are sent.

Quiet hours (夜間配信停止): before each batch the runner asks the list's quiet hours;
inside them it sets ``next_run_at`` to their end and stops, and the campaign continues from
its checkpoint then. Step mail waits the same way.

Step mail: a subscriber enters a sequence when confirmed at or after the sequence was
created (people who joined before are not mailed a welcome series out of the blue) and
starts at step 1; each step is due ``delay_days`` after confirmation (at ``send_hour``
local time when set). ``sequence_sends`` has one row per (step, subscriber), written in
the transaction that queues the message, so editing a step never sends it again.

Time comes from the injected clock; nothing here sleeps except ``run`` between passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from kakitome.campaigns.compose import (
    ComposedMail,
    Composer,
    Mailing,
    check_mailing,
    sample_member,
)
from kakitome.campaigns.schedule import QuietHours, step_due_at, zone
from kakitome.campaigns.stats import CampaignStats, build_stats
from kakitome.campaigns.store import (
    CampaignRow,
    CampaignStore,
    NewCampaign,
    NewStep,
    Outgoing,
    SequenceRow,
    StepRow,
)
from kakitome.campaigns.templates import (
    BODY_FORMATS,
    CompiledTemplate,
    TemplateSource,
    compile_template,
)
from kakitome.campaigns.tracking import LinkSigner
from kakitome.config import Settings
from kakitome.errors import InputError, KakitomeError, NotFound, StorageError
from kakitome.injection import Injector
from kakitome.lists.model import AudienceMember, MailingList
from kakitome.lists.service import ListService
from kakitome.store.database import Database

__all__ = ["CampaignService", "Preview", "RunReport"]

log = structlog.get_logger("kakitome.campaigns")

SEQUENCE_STATUSES = ("active", "paused")

Clock = Callable[[], float]

EDITABLE = ("draft", "scheduled")
STOPPABLE = ("draft", "scheduled", "sending", "paused")
# A step added to a running sequence reaches the subscribers for whom it falls due from
# this long before it was added onwards; those further along skip it rather than get it
# out of order (and a step added right after the sequence still reaches early joiners).
STEP_GRACE = 86_400.0
# Messages composed and signed between two turns of the event loop (see _outgoing_yielding).
COMPOSE_SLICE = 16


@dataclass(frozen=True, slots=True)
class Preview:
    subject: str
    text: str | None
    html: str | None
    content: bytes
    lost_characters: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "text": self.text,
            "html": self.html,
            "raw": self.content.decode("utf-8", "replace"),
            "lost_characters": list(self.lost_characters),
        }


@dataclass(slots=True)
class RunReport:
    """What one pass of the runner did."""

    queued: int = 0
    failed: int = 0
    finished: list[int] | None = None
    held_for_quiet_hours: list[int] | None = None


def _source(row: CampaignRow | StepRow) -> TemplateSource:
    if row.body_format not in BODY_FORMATS:
        raise InputError(f"unknown body format {row.body_format!r}")
    return TemplateSource(
        subject=row.subject,
        body=row.body,
        body_format=row.body_format,
        text=row.text,
    )


class CampaignService:
    """Campaigns and sequences over one store. One per process; share between tasks."""

    def __init__(
        self,
        store: Database,
        settings: Settings,
        lists: ListService,
        injector: Injector,
        *,
        clock: Clock = time.time,
        signer: LinkSigner | None = None,
    ) -> None:
        self._db = CampaignStore(store)
        self._settings = settings
        self._config = settings.campaigns
        self._lists = lists
        self._injector = injector
        self._clock = clock
        self._signer = signer or LinkSigner.from_settings(settings, lists.public_url)
        self._composer = Composer(
            lists,
            self._signer,
            wrap_width=self._config.wrap_width,
            feedback_sender=self._config.feedback_id_sender,
        )

    @property
    def db(self) -> CampaignStore:
        return self._db

    @property
    def signer(self) -> LinkSigner:
        return self._signer

    @property
    def lists(self) -> ListService:
        return self._lists

    # -- campaigns -----------------------------------------------------------------------

    async def create(
        self,
        name: str,
        list_ref: int | str,
        *,
        subject: str = "",
        body: str = "",
        body_format: str = "html",
        text: str | None = None,
        template: str | None = None,
        segment: str | None = None,
        expression: str | None = None,
        tracking: bool | None = None,
        footer: bool = True,
    ) -> CampaignRow:
        """A draft campaign; from a saved ``template`` or from the given parts. The
        template is checked now (TemplateError), and so is the list (InputError)."""
        if template is not None:
            saved = await self._db.get_template(template)
            subject = subject or saved.subject
            body, body_format, text = saved.body, saved.body_format, saved.text
        mailing_list = await self._lists.get_list(list_ref)
        source = TemplateSource(subject, body, body_format, text)  # type: ignore[arg-type]
        compiled = compile_template(source)
        mailing = Mailing("campaign", 0, name, footer=footer)
        check_mailing(compiled, mailing_list, mailing)
        return await self._db.create_campaign(
            NewCampaign(
                name=name,
                list_id=mailing_list.id,
                subject=subject,
                body=body,
                body_format=body_format,
                text=text,
                segment=segment,
                expression=expression,
                tracking=self._config.tracking if tracking is None else tracking,
                footer=footer,
            ),
            now=self._clock(),
        )

    async def get(self, ref: int | str) -> CampaignRow:
        return await self._db.get_campaign(ref)

    async def campaigns(self, *, status: str | None = None) -> list[CampaignRow]:
        """Every campaign (of one status), oldest first."""
        rows = await self._db.campaigns()
        return [r for r in rows if status is None or r.status == status]

    async def update(self, ref: int | str, **values: Any) -> CampaignRow:
        """Edit a draft or scheduled campaign: name, subject, body, body_format, text,
        segment, expression, tracking, footer. The result is compiled and checked against
        the list first (as ``create``); a broken edit leaves the campaign as it was."""
        row = await self._db.get_campaign(ref)
        for name in ("name", "subject", "body", "body_format", "tracking", "footer"):
            if name in values and values[name] is None:
                raise InputError(f"{name} cannot be null")
        if not values:
            return row
        merged = {**row.to_dict(), **values}
        if merged["body_format"] not in BODY_FORMATS:
            raise InputError(f"unknown body format {merged['body_format']!r}")
        compiled = compile_template(
            TemplateSource(merged["subject"], merged["body"], merged["body_format"], merged["text"])
        )
        mailing_list = await self._lists.get_list(row.list_id)
        check_mailing(
            compiled,
            mailing_list,
            Mailing("campaign", row.id, merged["name"], footer=merged["footer"]),
        )
        return await self._db.update_campaign(row.id, now=self._clock(), **values)

    async def delete(self, ref: int | str) -> None:
        """Delete a draft or cancelled campaign; InputError otherwise (cancel it first)."""
        row = await self._db.get_campaign(ref)
        if not await self._db.delete_campaign(row.id):
            raise InputError(
                f"campaign {row.name!r} is {row.status}; only a draft or cancelled one is deleted"
            )

    async def save_template(
        self, name: str, *, subject: str, body: str, body_format: str = "html",
        text: str | None = None,
    ) -> None:  # fmt: skip
        """Save a reusable template (checked first)."""
        compile_template(TemplateSource(subject, body, body_format, text))  # type: ignore[arg-type]
        await self._db.save_template(name, subject, body, body_format, text, now=self._clock())

    async def _prepared(self, row: CampaignRow) -> tuple[CompiledTemplate, MailingList, Mailing]:
        mailing_list = await self._lists.get_list(row.list_id)
        compiled = compile_template(_source(row))
        mailing = Mailing("campaign", row.id, row.name, tracking=row.tracking, footer=row.footer)
        check_mailing(compiled, mailing_list, mailing)
        return compiled, mailing_list, mailing

    async def validate(self, ref: int | str) -> CampaignRow:
        """Every check that can fail before sending, including a render for the first
        member of the audience (or a blank stand-in). Raises TemplateError/InputError."""
        row = await self._db.get_campaign(ref)
        compiled, mailing_list, mailing = await self._prepared(row)
        member: AudienceMember | None = None
        async for batch in self._lists.iter_audience(
            mailing_list.id, **self._audience(row), batch_size=1
        ):
            member = batch[0] if batch else None
            break
        for candidate in (member, sample_member(mailing_list)):
            if candidate is not None:
                self._composer.compose(
                    compiled, mailing, mailing_list, candidate, now=self._clock()
                )
                break
        return row

    def _audience(self, row: CampaignRow) -> dict[str, Any]:
        if row.expression:
            return {"expression": row.expression}
        if row.segment:
            segment: int | str = int(row.segment) if row.segment.isdigit() else row.segment
            return {"segment": segment}
        return {}

    async def preview(
        self, ref: int | str, subscriber: int | str | None = None, *, tracking: bool = False
    ) -> Preview:
        """The message as one subscriber (by id or address) would get it; without one, as
        a subscriber with no name and no attributes would."""
        row = await self._db.get_campaign(ref)
        compiled, mailing_list, mailing = await self._prepared(row)
        if not tracking:
            mailing = Mailing(mailing.kind, mailing.id, mailing.name, False, mailing.footer)
        member = await self._member(mailing_list, subscriber)
        mail = self._composer.compose(compiled, mailing, mailing_list, member, now=self._clock())
        # The parts as sent (footer included, text part generated when the template has
        # none), read back from the message itself.
        parsed = email.message_from_bytes(mail.content, policy=email.policy.default)
        text_part = parsed.get_body(("plain",))
        html_part = parsed.get_body(("html",))
        return Preview(
            mail.subject,
            None if text_part is None else str(text_part.get_content()).replace("\r\n", "\n"),
            None if html_part is None else str(html_part.get_content()).replace("\r\n", "\n"),
            mail.content,
            mail.lost_characters,
        )

    async def _member(self, mailing_list: MailingList, ref: int | str | None) -> AudienceMember:
        if ref is None:
            return sample_member(mailing_list)
        person = await self._lists.get_subscriber(ref)
        return AudienceMember(
            subscriber_id=person.id,
            list_id=mailing_list.id,
            address=person.address,
            name=person.name,
            attributes=dict(person.attributes),
            confirmed_at=None,
        )

    async def test_send(
        self, ref: int | str, to: Sequence[str], *, subscriber: int | str | None = None
    ) -> list[str]:
        """Send the campaign, marked [TEST] and untracked, to ``to`` (rendered as
        ``subscriber``, or as a blank one). Returns the message ids."""
        row = await self._db.get_campaign(ref)
        compiled, mailing_list, mailing = await self._prepared(row)
        member = await self._member(mailing_list, subscriber)
        ids: list[str] = []
        for address in to:
            mail = self._composer.compose(
                compiled, mailing, mailing_list, member, now=self._clock(), test=True
            )
            ids.append(
                await self._injector.submit_raw(
                    mail.content, recipients=[address], source="campaign"
                )
            )
        return ids

    async def schedule(self, ref: int | str, at: float) -> CampaignRow:
        """配信予約: send at ``at`` (epoch seconds). Validated now."""
        row = await self.validate(ref)
        if not await self._db.transition(
            row.id, from_=EDITABLE, to="scheduled", now=self._clock(), scheduled_at=at
        ):
            raise InputError(
                f"campaign {row.name!r} is {row.status}; only a draft can be scheduled"
            )
        return await self._db.get_campaign(row.id)

    async def send_now(self, ref: int | str) -> CampaignRow:
        """Start sending at the runner's next pass. Validated now."""
        return await self.schedule(ref, self._clock())

    async def pause(self, ref: int | str) -> CampaignRow:
        row = await self._db.get_campaign(ref)
        if not await self._db.transition(
            row.id, from_=("scheduled", "sending"), to="paused", now=self._clock()
        ):
            raise InputError(f"campaign {row.name!r} is {row.status}; it cannot be paused")
        return await self._db.get_campaign(row.id)

    async def resume(self, ref: int | str) -> CampaignRow:
        row = await self._db.get_campaign(ref)
        target = "sending" if row.started_at is not None else "scheduled"
        if not await self._db.transition(
            row.id, from_=("paused",), to=target, now=self._clock(), next_run_at=None
        ):
            raise InputError(f"campaign {row.name!r} is {row.status}; only a paused one resumes")
        return await self._db.get_campaign(row.id)

    async def cancel(self, ref: int | str) -> CampaignRow:
        """Stop for good. Messages already queued stay queued (see ``kakitome queue``)."""
        row = await self._db.get_campaign(ref)
        if not await self._db.transition(
            row.id, from_=STOPPABLE, to="cancelled", now=self._clock(), finished_at=self._clock()
        ):
            raise InputError(f"campaign {row.name!r} is {row.status}; it cannot be cancelled")
        return await self._db.get_campaign(row.id)

    async def stats(self, ref: int | str) -> CampaignStats:
        row = await self._db.get_campaign(ref)
        return build_stats(row, await self._db.campaign_stats(row.id))

    # -- the runner ----------------------------------------------------------------------

    async def run_due(self, *, max_batches: int | None = None) -> RunReport:
        """One pass: start due scheduled campaigns and send batches of sending ones until
        each is done, paused, held by quiet hours, or ``max_batches`` batches were sent
        (in all). For the worker's loop and for tests with an injected clock."""
        report = RunReport(finished=[], held_for_quiet_hours=[])
        budget = max_batches
        for row in await self._db.due_campaigns(self._clock()):
            if budget is not None and budget <= 0:
                break
            used = await self._run_campaign(row, report, budget)
            if budget is not None:
                budget -= used
        return report

    async def _run_campaign(self, row: CampaignRow, report: RunReport, budget: int | None) -> int:
        now = self._clock()
        if row.status == "scheduled":
            if not await self._db.transition(
                row.id, from_=("scheduled",), to="sending", now=now, started_at=now
            ):
                return 0
            row = await self._db.get_campaign(row.id)
        try:
            compiled, mailing_list, mailing = await self._prepared(row)
            quiet = QuietHours.of(
                mailing_list.quiet_start, mailing_list.quiet_end, mailing_list.time_zone
            )
        except (KakitomeError, NotFound) as exc:
            # A list removed or broken since validation: stop, say why; nothing was sent
            # for the batch at hand.
            await self._db.transition(
                row.id, from_=("sending",), to="failed", now=now, error=str(exc)
            )
            log.error("campaign failed", campaign=row.id, error=str(exc))
            return 0
        checkpoint = row.checkpoint
        batches = 0
        audience = self._lists.iter_audience(
            mailing_list.id,
            **self._audience(row),
            batch_size=self._config.batch_size,
            after_subscriber_id=checkpoint,
        )
        try:
            async for batch in audience:
                if not batch:
                    continue
                now = self._clock()
                if quiet is not None and quiet.is_quiet(now):
                    await self._db.transition(
                        row.id, from_=("sending",), to="sending", now=now,
                        next_run_at=quiet.resume_at(now),
                    )  # fmt: skip
                    assert report.held_for_quiet_hours is not None
                    report.held_for_quiet_hours.append(row.id)
                    log.info("campaign held for quiet hours", campaign=row.id)
                    return batches
                outgoing = await self._outgoing_yielding(
                    compiled, mailing, mailing_list, batch, now
                )
                committed = await self._db.commit_campaign_batch(
                    row.id,
                    old_checkpoint=checkpoint,
                    new_checkpoint=batch[-1].subscriber_id,
                    outgoing=outgoing,
                    now=now,
                    lifetime=self._settings.queue.lifetime,
                )
                if not committed:
                    log.info("campaign stopped or taken over", campaign=row.id)
                    return batches
                checkpoint = batch[-1].subscriber_id
                batches += 1
                sent = sum(1 for o in outgoing if o.message is not None)
                report.queued += sent
                report.failed += len(outgoing) - sent
                if budget is not None and batches >= budget:
                    return batches
                await asyncio.sleep(0)  # let the web and the worker breathe
        finally:
            with contextlib.suppress(Exception):
                await audience.aclose()  # type: ignore[attr-defined]
        if await self._db.transition(
            row.id, from_=("sending",), to="finished", now=self._clock(),
            finished_at=self._clock(), next_run_at=None,
        ):  # fmt: skip
            assert report.finished is not None
            report.finished.append(row.id)
            log.info("campaign finished", campaign=row.id)
        return batches

    async def _outgoing_yielding(
        self,
        compiled: CompiledTemplate,
        mailing: Mailing,
        mailing_list: MailingList,
        batch: Sequence[AudienceMember],
        now: float,
    ) -> list[Outgoing]:
        """``_outgoing`` in slices of ``COMPOSE_SLICE``, giving the event loop a turn
        between them: rendering and DKIM signing take a few milliseconds per message, and
        a batch of 500 in one go would stall the worker's deliveries (and hold up any
        transaction they have open) for seconds."""
        out: list[Outgoing] = []
        for start in range(0, len(batch), COMPOSE_SLICE):
            out += self._outgoing(
                compiled, mailing, mailing_list, batch[start : start + COMPOSE_SLICE], now
            )
            await asyncio.sleep(0)
        return out

    def _outgoing(
        self,
        compiled: CompiledTemplate,
        mailing: Mailing,
        mailing_list: MailingList,
        batch: Sequence[AudienceMember],
        now: float,
    ) -> list[Outgoing]:
        out: list[Outgoing] = []
        for member in batch:
            try:
                mail: ComposedMail = self._composer.compose(
                    compiled, mailing, mailing_list, member, now=now
                )
                message = self._injector.prepare_raw(
                    mail.content, recipients=[mail.address], source="campaign"
                )
            except InputError as exc:
                out.append(Outgoing(member.subscriber_id, member.address, None, str(exc)))
                continue
            if mail.lost_characters:
                log.warning(
                    "ISO-2022-JP could not carry some characters",
                    ref=mailing.ref,
                    subscriber=member.subscriber_id,
                    characters="".join(mail.lost_characters),
                )
            out.append(Outgoing(member.subscriber_id, member.address, message))
        return out

    # -- step mail -----------------------------------------------------------------------

    async def create_sequence(
        self, name: str, list_ref: int | str, *, tracking: bool | None = None, footer: bool = True
    ) -> SequenceRow:
        """A sequence on a list: subscribers confirmed from now on enter it at step 1."""
        mailing_list = await self._lists.get_list(list_ref)
        return await self._db.create_sequence(
            name,
            mailing_list.id,
            tracking=self._config.tracking if tracking is None else tracking,
            footer=footer,
            now=self._clock(),
        )

    async def sequences(self) -> list[SequenceRow]:
        """Every sequence, oldest first."""
        return await self._db.sequences()

    async def get_sequence(self, ref: int | str) -> SequenceRow:
        """A sequence by id or name; NotFound otherwise."""
        return await self._db.get_sequence(ref)

    async def steps(self, sequence_ref: int | str) -> list[StepRow]:
        """The sequence's steps (not removed), in order."""
        sequence = await self._db.get_sequence(sequence_ref)
        return await self._db.steps(sequence.id)

    async def step(self, sequence_ref: int | str, step_id: int) -> StepRow:
        """One step of the sequence; NotFound when it is not (or no longer) one of them."""
        sequence = await self._db.get_sequence(sequence_ref)
        missing = NotFound(f"no step {step_id} in sequence {sequence_ref}")
        try:
            step = await self._db.get_step(step_id)
        except NotFound:
            raise missing from None
        if step.sequence_id != sequence.id:
            raise missing
        return step

    async def update_sequence(
        self,
        ref: int | str,
        *,
        name: str | None = None,
        status: str | None = None,
        tracking: bool | None = None,
        footer: bool | None = None,
    ) -> SequenceRow:
        """Rename, pause (``status="paused"``) or reactivate (``"active"``: steps that
        fell due meanwhile go out at the next pass), or change tracking or footer. Turning
        the footer off is refused while a step's body lacks ``{{ unsubscribe_url }}``."""
        sequence = await self._db.get_sequence(ref)
        values: dict[str, Any] = {}
        if name is not None:
            if not name.strip() or len(name) > 200:
                raise InputError("a sequence name has 1-200 characters")
            values["name"] = name
        if status is not None:
            if status not in SEQUENCE_STATUSES:
                raise InputError(f"status must be one of {', '.join(SEQUENCE_STATUSES)}")
            values["status"] = status
        if tracking is not None:
            values["tracking"] = tracking
        if footer is not None:
            values["footer"] = footer
            mailing_list = await self._lists.get_list(sequence.list_id)
            mailing = Mailing("step", 0, values.get("name", sequence.name), footer=footer)
            for step in await self._db.steps(sequence.id):
                check_mailing(compile_template(_source(step)), mailing_list, mailing)
        if not values:
            return sequence
        return await self._db.update_sequence(sequence.id, now=self._clock(), **values)

    async def remove_sequence(self, ref: int | str) -> None:
        """Delete a sequence, its steps and their send records; messages already queued
        stay queued. NotFound for an unknown sequence."""
        sequence = await self._db.get_sequence(ref)
        if not await self._db.delete_sequence(sequence.id):
            raise NotFound(f"no sequence {ref!r}")

    async def add_step(self, sequence_ref: int | str, step: NewStep) -> StepRow:
        """Add a step (checked first). ``delay_days`` after confirmation, at
        ``send_hour`` local time when given."""
        sequence = await self._db.get_sequence(sequence_ref)
        self._check_step(step.delay_days, step.send_hour)
        source = TemplateSource(step.subject, step.body, step.body_format, step.text)  # type: ignore[arg-type]
        compiled = compile_template(source)
        mailing_list = await self._lists.get_list(sequence.list_id)
        check_mailing(
            compiled, mailing_list, Mailing("step", 0, sequence.name, footer=sequence.footer)
        )
        return await self._db.add_step(sequence.id, step, now=self._clock())

    async def update_step(self, step_id: int, **values: Any) -> StepRow:
        """Edit a step; subscribers who already got it do not get it again."""
        current = await self._db.get_step(step_id)
        if "delay_days" in values or "send_hour" in values:
            self._check_step(
                values.get("delay_days", current.delay_days),
                values.get("send_hour", current.send_hour),
            )
        # Checked before anything is written: a broken edit leaves the step as it was.
        merged = {
            key: values.get(key, getattr(current, key))
            for key in ("subject", "body", "body_format", "text")
        }
        if merged["body_format"] not in BODY_FORMATS:
            raise InputError(f"unknown body format {merged['body_format']!r}")
        compile_template(TemplateSource(**merged))
        return await self._db.update_step(step_id, now=self._clock(), **values)

    async def remove_step(self, step_id: int) -> bool:
        return await self._db.remove_step(step_id, now=self._clock())

    @staticmethod
    def _check_step(delay_days: int, send_hour: int | None) -> None:
        if delay_days < 0 or delay_days > 3650:
            raise InputError("delay_days must be between 0 and 3650")
        if send_hour is not None and not 0 <= send_hour <= 23:
            raise InputError("send_hour must be between 0 and 23")

    async def run_sequences(self) -> int:
        """One pass of step mail: queue every step that has fallen due. Returns how many
        messages were queued."""
        queued = 0
        for sequence in await self._db.sequences(active_only=True):
            try:
                queued += await self._run_sequence(sequence)
            except NotFound as exc:
                log.warning("sequence skipped", sequence=sequence.id, error=str(exc))
        return queued

    async def _run_sequence(self, sequence: SequenceRow) -> int:
        now = self._clock()
        mailing_list = await self._lists.get_list(sequence.list_id)
        quiet = QuietHours.of(
            mailing_list.quiet_start, mailing_list.quiet_end, mailing_list.time_zone
        )
        if quiet is not None and quiet.is_quiet(now):
            return 0  # due mail waits for the end of the quiet hours
        tz = zone(mailing_list.time_zone)
        steps: list[tuple[StepRow, CompiledTemplate, Mailing]] = []
        for step in await self._db.steps(sequence.id):
            try:
                compiled = compile_template(_source(step))
            except InputError as exc:
                log.error("step template invalid; skipped", step=step.id, error=str(exc))
                continue
            mailing = Mailing(
                "step", step.id, sequence.name, tracking=sequence.tracking, footer=sequence.footer
            )
            steps.append((step, compiled, mailing))
        if not steps:
            return 0
        queued = 0
        # TODO(lists): an iter_audience(confirmed_after=...) filter would let this read only
        # recent members instead of the whole list on every pass.
        async for batch in self._lists.iter_audience(
            mailing_list.id, batch_size=self._config.batch_size
        ):
            members = [
                m
                for m in batch
                if m.confirmed_at is not None and m.confirmed_at >= sequence.starts_at
            ]
            for step, compiled, mailing in steps:
                due = []
                for m in members:
                    at = step_due_at(m.confirmed_at or 0.0, step.delay_days, step.send_hour, tz)
                    if step.created_at - STEP_GRACE <= at <= now:
                        due.append(m)
                if not due:
                    continue
                done = await self._db.step_sent_to(step.id, [m.subscriber_id for m in due])
                todo = [m for m in due if m.subscriber_id not in done]
                if not todo:
                    continue
                outgoing = await self._outgoing_yielding(compiled, mailing, mailing_list, todo, now)
                queued += await self._db.commit_step_batch(
                    step.id, outgoing, now=now, lifetime=self._settings.queue.lifetime
                )
        return queued

    # -- the worker task -----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """The worker-role task: a pass of campaigns and step mail every
        ``campaigns.poll_interval`` seconds until ``stop``."""
        log.info("campaign runner started")
        while not stop.is_set():
            try:
                await self.run_due()
                await self.run_sequences()
            except StorageError as exc:
                log.warning("campaign pass failed; database unavailable", error=str(exc))
            except Exception:  # a bug in one pass must not stop newsletters for good
                log.exception("campaign pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._config.poll_interval)
        log.info("campaign runner stopped")
