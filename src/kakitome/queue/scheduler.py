"""The scheduler loop: claim due deliveries, hand them to the delivery agent, record results.

Only this loop (with the store and the retry schedule) decides what is due and when to try
again; the agent only delivers. It keeps a bounded window of deliveries in flight
(``queue.batch_size``), claims more when half of it has drained, and sleeps until the store
signals new work or the next retry falls due.

Bounces get a DSN (RFC 3464) to the envelope sender, handed to the injector
(``Injector.submit_notice``: DKIM-signed when the reporting host's domain is a sending
domain) as a new message from the null sender, so a bounce of a bounce can never happen.

Leases: claimed deliveries belong to this worker until their lease runs out; on a graceful
stop the worker finishes what is in flight and releases the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence

import structlog

from kakitome.config import Settings
from kakitome.delivery.types import Batch, OutboundMessage, Outcome, RecipientResult
from kakitome.errors import InputError, StorageError
from kakitome.injection import Injector
from kakitome.metrics import DeliveryMetrics
from kakitome.queue.dsn import build_dsn, should_send_dsn
from kakitome.queue.requiretls_dsn import build_requiretls_dsn
from kakitome.queue.schedule import RetrySchedule
from kakitome.queue.store import QueueStore
from kakitome.queue.types import Bounce, ClaimedBatch, NewRecipient
from kakitome.smtp.replies import Reply
from kakitome.suppression import recipients_of, split_suppressed

log = structlog.get_logger("kakitome.worker")

# Messages handed to the agent at once; the agent spreads them over the destination's
# connections. Results are recorded per transaction as they come (ResultRecorder), so the
# chunk bounds the work of one agent call, not what a crash can duplicate.
CHUNK = 64

# After a wake-up from idle (new mail committed), the worker waits this long before it
# claims, so that mail arriving one message at a time (an API call per message) is
# claimed, delivered and recorded in groups: each claim is a write transaction.
CLAIM_LINGER = 0.01

# Results wait at most this long to share a transaction with others (a group commit):
# what a crash can resend is what was in flight plus this much.
RECORD_DELAY = 0.005
RECORD_MAX = 512
# Results delivered but not yet committed, beyond which connections wait before their next
# transaction: what a crash can make us send twice stays bounded when commits are slow
# (a loaded machine, SQLite's write lock held by a campaign batch). Below the claim
# window (queue.batch_size, 500): a commit that waits for the write lock behind a web
# process's injection should not stop the connections at once.
RECORD_BACKLOG = 256
# Results that could not be committed are tried again after this pause, doubling up to
# RECORD_RETRY_MAX, for as long as it takes (ResultRecorder).
RECORD_RETRY_FIRST = 0.25
RECORD_RETRY_MAX = 5.0

Progress = Callable[[Sequence[RecipientResult]], Awaitable[None] | None]
Deliver = Callable[[Batch, Progress], Awaitable[list[RecipientResult]]]
Clock = Callable[[], float]
# ``suppressed(addresses)`` -> the suppression keys among them (kakitome.suppression).
Suppressed = Callable[[Sequence[str]], Awaitable[set[str]]]


def default_owner() -> str:
    """A lease owner name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{os.urandom(3).hex()}"


def _without_in_flight(claimed: ClaimedBatch, in_flight: set[int]) -> ClaimedBatch:
    """The claimed batch without the recipients this worker is delivering already."""
    if not in_flight:
        return claimed
    messages = []
    for message in claimed.messages:
        fresh = tuple(r for r in message.recipients if r.delivery_id not in in_flight)
        if len(fresh) == len(message.recipients):
            messages.append(message)
        elif fresh:
            messages.append(dataclasses.replace(message, recipients=fresh))
    return ClaimedBatch(claimed.domain, tuple(messages))


class ResultRecorder:
    """Records delivery results in group commits, a few milliseconds after they arrive.

    ``add`` is synchronous (the agent's progress callback) and returns a future that
    resolves once those results are committed; one task writes everything that arrived
    meanwhile in one ``record`` call.

    Results that cannot be committed (the database is down, the disk is full, SQLite's
    lock stays taken past the busy timeout) are kept, in order, and tried again with a
    growing pause (``retry_first`` doubling up to ``retry_max``) together with whatever
    arrives meanwhile, until they are committed: their futures stay pending, so the
    batches that delivered them keep their leases renewed and the connections wait
    (``room``). Giving them up would let the leases lapse and send every one of them
    again. Only an error that is not a storage error (a bug) fails the futures.
    """

    def __init__(
        self,
        record: Callable[[list[RecipientResult], dict[int, OutboundMessage]], Awaitable[None]],
        *,
        delay: float = RECORD_DELAY,
        max_items: int = RECORD_MAX,
        retry_first: float = RECORD_RETRY_FIRST,
        retry_max: float = RECORD_RETRY_MAX,
    ) -> None:
        self._record = record
        self._delay = delay
        self._max = max_items
        self._retry_first = retry_first
        self._retry_max = retry_max
        self._results: list[RecipientResult] = []
        self._messages: dict[int, OutboundMessage] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._done: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._recording = 0  # results in the record call under way
        self._recorded = asyncio.Event()
        self.failures = 0  # consecutive failed commits (0 once one succeeds)

    @property
    def backlog(self) -> int:
        """Results handed in and not yet committed."""
        return len(self._results) + self._recording

    async def room(self, limit: int) -> None:
        """Return once at most ``limit`` results wait to be committed."""
        while self.backlog > limit:
            self._recorded.clear()
            await self._recorded.wait()

    def add(
        self, results: Sequence[RecipientResult], messages: dict[int, OutboundMessage]
    ) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            # A context of its own: it records for every batch, so it must not log with
            # the domain and message ids bound by the batch that happened to start it.
            self._task = loop.create_task(
                self._run(), name="result-recorder", context=contextvars.Context()
            )
        if not results:
            fresh: asyncio.Future[None] = loop.create_future()
            fresh.set_result(None)
            return fresh
        if self._done is None:
            self._done = loop.create_future()
            self._waiters.append(self._done)
        done = self._done
        self._results.extend(results)
        for result in results:
            self._messages[result.delivery_id] = messages[result.delivery_id]
        self._wake.set()
        return done

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if len(self._results) < self._max and not self.failures:
                await asyncio.sleep(self._delay)
            self._wake.clear()
            results, messages, waiters = self._results, self._messages, self._waiters
            self._results, self._messages, self._waiters, self._done = [], {}, [], None
            if not waiters:
                continue
            self._recording = len(results)
            try:
                await self._record(results, messages)
            except StorageError as exc:
                # Kept, ahead of what came meanwhile, and tried again after a pause.
                self.failures += 1
                self._results = results + self._results
                self._messages = {**messages, **self._messages}
                self._waiters = waiters + self._waiters
                pause = min(self._retry_max, self._retry_first * 2 ** (self.failures - 1))
                log.warning(
                    "results not committed; kept and tried again",
                    results=len(results),
                    attempt=self.failures,
                    retry_in=pause,
                    error=str(exc),
                )
                self._recording = 0
                await asyncio.sleep(pause)
                self._wake.set()
                continue
            except Exception as exc:  # a bug: the waiters see it; the recorder goes on
                log.exception("recording results failed", results=len(results))
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
            else:
                if self.failures:
                    log.info("results committed again", attempts=self.failures + 1)
                self.failures = 0
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
            finally:
                self._recording = 0
                self._recorded.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


class Worker:
    def __init__(
        self,
        settings: Settings,
        queue: QueueStore,
        deliver: Deliver,
        *,
        injector: Injector,
        clock: Clock = time.time,
        owner: str | None = None,
        suppressed: Suppressed | None = None,
        metrics: DeliveryMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._queue = queue
        self._deliver = deliver
        self._injector = injector
        self._suppressed = suppressed
        self._clock = clock
        self.owner = owner or default_owner()
        self._schedule = RetrySchedule.from_settings(settings.queue)
        self._window = settings.queue.batch_size
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._drained = asyncio.Event()
        self.delivered = 0
        self.deferred = 0
        self.bounced = 0
        self._metrics = metrics
        self._recorder = ResultRecorder(self._record)
        self._leased: set[int] = set()  # deliveries in flight, whose leases are renewed
        # Deliveries that finished while a claim was under way (see _claim_round).
        self._claims_under_way = 0
        self._finished_during_claim: set[int] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; then finish in-flight work and release leases."""
        log.info("worker started", owner=self.owner)
        renewing = None
        if self._settings.scale.renew_leases:
            renewing = asyncio.create_task(self._renew_leases(), name="lease-renewal")
        try:
            while not stop.is_set():
                claimed = 0
                if self._in_flight <= self._window // 2:
                    claimed = await self._claim_round()
                if claimed:
                    continue
                await self._idle(stop)
                if not stop.is_set():
                    await asyncio.sleep(CLAIM_LINGER)
        finally:
            await self.drain()
            if renewing is not None:
                renewing.cancel()
                await asyncio.gather(renewing, return_exceptions=True)
            await self._recorder.close()
            with contextlib.suppress(StorageError):
                await self._queue.release_leases(self.owner)
            log.info("worker stopped", owner=self.owner)

    async def run_once(self) -> int:
        """Claim what is due now, deliver it, record the results; return how many
        deliveries were attempted. For tests with an injected clock and for flushing."""
        claimed = await self._claim_round()
        await self.drain()
        await self._recorder.close()
        return claimed

    async def _idle(self, stop: asyncio.Event) -> None:
        """Sleep until new work, a retry falls due, a batch finishes, or stop."""
        timeout = self._settings.queue.poll_interval
        if self._in_flight == 0:
            with contextlib.suppress(StorageError):
                due = await self._queue.next_due_at()
                if due is not None:
                    timeout = max(0.0, min(timeout, due - self._clock()))
        self._drained.clear()
        waits = [
            asyncio.ensure_future(self._queue.wait_for_work(timeout)),
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._drained.wait()),
        ]
        try:
            await asyncio.wait(waits, timeout=timeout + 0.05, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _claim_round(self) -> int:
        self._claims_under_way += 1
        try:
            batches = await self._queue.claim_due(
                self.owner,
                now=self._clock(),
                limit=self._window - self._in_flight,
                lease_seconds=self._settings.queue.lease_seconds,
            )
        except StorageError as exc:
            log.warning("claim failed; database unavailable", error=str(exc))
            await asyncio.sleep(self._settings.queue.poll_interval)
            return 0
        finally:
            self._claims_under_way -= 1
            # Taken before the next await, so no batch can finish in between.
            finished = self._finished_during_claim
            if not self._claims_under_way:
                self._finished_during_claim = set()
        # A delivery still in flight here whose lease ran out before it was renewed (a slow
        # machine) comes back in the claim with our own name on it: it is already being
        # delivered, so it is not handed to the agent a second time. Nor is one that was in
        # flight when the claim read it and finished while the claim's answer was on its
        # way back (its result was committed after the claim): it is delivered already.
        batches = [_without_in_flight(c, self._leased | finished) for c in batches]
        # Renewed from now on (the look-up below is a database round trip).
        self._leased.update(
            r.delivery_id for c in batches for m in c.messages for r in m.recipients
        )
        # Suppressed recipients bounce at delivery time (kakitome.suppression): one look-up
        # for the whole round, not one per destination (None: each batch asks for itself).
        keys: set[str] | None = None
        if self._suppressed is not None and batches:
            everyone = [r.address for c in batches for m in c.messages for r in m.recipients]
            try:
                keys = await self._suppressed(everyone)
            except Exception as exc:
                log.warning("suppression look-up failed; asked per batch", error=repr(exc))
        count = 0
        for claimed in batches:
            for start in range(0, len(claimed.messages), CHUNK):
                chunk = ClaimedBatch(claimed.domain, claimed.messages[start : start + CHUNK])
                size = sum(len(m.recipients) for m in chunk.messages)
                count += size
                self._in_flight += size
                task = asyncio.create_task(self._run_batch(chunk, size, keys))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return count

    async def _run_batch(
        self, claimed: ClaimedBatch, size: int, suppressed: set[str] | None = None
    ) -> None:
        # This task's log lines name the destination and the messages (structlog).
        structlog.contextvars.bind_contextvars(
            domain=claimed.domain, message_ids=[m.message_id for m in claimed.messages]
        )
        started = time.monotonic()
        message_of = {r.delivery_id: m for m in claimed.messages for r in m.recipients}
        reported: set[int] = set()
        commits: list[asyncio.Future[None]] = []

        def progress(results: Sequence[RecipientResult]) -> Awaitable[None] | None:
            fresh = [r for r in results if r.delivery_id not in reported]
            reported.update(r.delivery_id for r in fresh)
            commits.append(self._recorder.add(fresh, message_of))
            if self._recorder.backlog > RECORD_BACKLOG:
                # A task, not a bare coroutine: a caller that does not wait loses nothing.
                return asyncio.ensure_future(self._recorder.room(RECORD_BACKLOG))
            return None

        try:
            batch: Batch | None = Batch(claimed.domain, claimed.messages)
            try:
                results: list[RecipientResult] = []
                if self._suppressed is not None and batch is not None:
                    if suppressed is None:
                        suppressed = await self._suppressed(recipients_of(batch))
                    batch, results = split_suppressed(batch, suppressed)
                if batch is not None:
                    results += await self._deliver(batch, progress)
            except Exception as exc:  # an agent bug must not lose the batch
                log.exception("delivery agent failed", domain=claimed.domain)
                reply = Reply(451, "4.3.0", f"internal error in delivery agent: {exc!r}")
                results = [
                    RecipientResult(r.delivery_id, Outcome.DEFERRED, reply)
                    for m in claimed.messages
                    for r in m.recipients
                ]
            progress(results)  # whatever the agent did not report as it went
            outcomes = await asyncio.gather(*commits, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    # Only a bug gets here (storage errors are retried by the recorder
                    # until they commit): the results stay leased and are tried again
                    # when the lease runs out (a possible duplicate, never a loss).
                    log.error("results not recorded", error=repr(outcome))
            if self._metrics is not None:
                site = self._metrics.site(results)
                self._metrics.observe_attempt(site, time.monotonic() - started)
                self._metrics.observe_results(site, results)
        finally:
            ids = [r.delivery_id for m in claimed.messages for r in m.recipients]
            self._leased.difference_update(ids)
            if self._claims_under_way:
                self._finished_during_claim.update(ids)
            self._in_flight -= size
            self._drained.set()

    async def _record(
        self, results: list[RecipientResult], messages: dict[int, OutboundMessage]
    ) -> None:
        """Record one group of results (from any batches) and send DSNs for bounces."""
        # A StorageError goes to the recorder, which keeps the results and tries again.
        bounces = await self._queue.record_results(
            self.owner, results, now=self._clock(), schedule=self._schedule
        )
        for result in results:
            # One line per result, with the message id and delivery id (deferrals and
            # bounces at info, deliveries at debug).
            (log.debug if result.outcome is Outcome.DELIVERED else log.info)(
                f"delivery {result.outcome.value}",
                message_id=messages[result.delivery_id].message_id,
                delivery_id=result.delivery_id,
                reply=str(result.reply),
                mx=None if result.mx is None else result.mx.host,
            )
            if result.outcome is Outcome.DELIVERED:
                self.delivered += 1
            elif result.outcome is Outcome.DEFERRED:
                self.deferred += 1
        self.bounced += len(bounces)
        if bounces:
            contents = {m.message_id: m.content for m in messages.values()}
            requiretls = {m.message_id for m in messages.values() if m.requiretls}
            await self._send_dsns(bounces, contents, requiretls)

    async def _send_dsns(
        self,
        bounces: Sequence[Bounce],
        contents: dict[str, bytes],
        requiretls: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        by_message: dict[str, list[Bounce]] = {}
        for bounce in bounces:
            if should_send_dsn(bounce):
                by_message.setdefault(bounce.message_id, []).append(bounce)
        for message_id, group in by_message.items():
            sender = group[0].sender
            domain = sender.rpartition("@")[2].lower()
            try:
                # RFC 8689 §5: a REQUIRETLS message's DSN is redacted and needs TLS itself.
                build = build_requiretls_dsn if message_id in requiretls else build_dsn
                content = build(
                    group,
                    contents.get(message_id, b""),
                    reporting_mta=self._settings.delivery.helo_hostname,
                    now=self._clock(),
                )
                dsn_id = await self._injector.submit_notice(
                    content,
                    header_from=f"MAILER-DAEMON@{self._settings.delivery.helo_hostname}",
                    subject="Undelivered Mail Returned to Sender",
                    recipients=(NewRecipient(sender, domain),),
                    requiretls=message_id in requiretls,
                )
                await self._queue.set_dsn_sent([b.delivery_id for b in group], dsn_id)
            except (StorageError, InputError) as exc:
                log.error("could not queue DSN", message_id=message_id, error=str(exc))

    async def _renew_leases(self) -> None:
        """Every lease_seconds / 3, extend the leases of the deliveries in flight, so only
        a dead worker's deliveries go back to the queue (the renewal runs until the
        drain at stop is over)."""
        lease = self._settings.queue.lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            if self._leased:
                try:
                    await self._queue.renew_leases(
                        self.owner, list(self._leased), until=self._clock() + lease
                    )
                except StorageError as exc:
                    log.warning("lease renewal failed", error=str(exc))

    async def drain(self, grace: float = 30.0) -> None:
        """Wait for every batch in flight to finish and be recorded; after ``grace``
        seconds cancel what is left (its leases run out and it is tried again)."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(list(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("cancelled unfinished batches at shutdown", count=len(pending))
            await asyncio.gather(*pending, return_exceptions=True)
