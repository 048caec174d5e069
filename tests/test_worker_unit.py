"""Worker pieces that need no network: the in-flight filter and the result recorder."""

from __future__ import annotations

import asyncio

import pytest

from kakitome.delivery.types import OutboundMessage, Outcome, Recipient, RecipientResult
from kakitome.errors import StorageError
from kakitome.queue.scheduler import ResultRecorder, _without_in_flight
from kakitome.queue.types import ClaimedBatch
from kakitome.smtp.replies import Reply


def _message(message_id: str, *ids: int) -> OutboundMessage:
    return OutboundMessage(
        message_id, "a@s.test", tuple(Recipient(i, f"r{i}@d.test") for i in ids), b"x\r\n"
    )


def test_reclaimed_in_flight_deliveries_are_not_sent_again() -> None:
    """A claim that hands back deliveries still in flight here drops exactly those."""
    claimed = ClaimedBatch("d.test", (_message("m1", 1, 2), _message("m2", 3), _message("m3", 4)))
    left = _without_in_flight(claimed, {2, 3})
    assert [(m.message_id, [r.delivery_id for r in m.recipients]) for m in left.messages] == [
        ("m1", [1]),
        ("m3", [4]),
    ]
    assert _without_in_flight(claimed, set()) is claimed


async def test_recorder_groups_results_and_reports_failures() -> None:
    """Results added together share one record call; a call failing with a bug (not a
    storage error) fails its waiters."""
    calls: list[list[int]] = []
    fail = False

    async def record(results: list[RecipientResult], messages: dict[int, OutboundMessage]) -> None:
        calls.append([r.delivery_id for r in results])
        assert set(messages) == {r.delivery_id for r in results}
        if fail:
            raise RuntimeError("database gone")

    message = _message("m1", 1, 2, 3)
    by_id = {r.delivery_id: message for r in message.recipients}
    ok = Reply(250, "2.0.0", "ok")
    recorder = ResultRecorder(record, delay=0.01)
    first = recorder.add([RecipientResult(1, Outcome.DELIVERED, ok)], by_id)
    second = recorder.add([RecipientResult(2, Outcome.DELIVERED, ok)], by_id)
    await asyncio.gather(first, second)
    assert calls == [[1, 2]]
    fail = True
    third = recorder.add([RecipientResult(3, Outcome.DELIVERED, ok)], by_id)
    with pytest.raises(RuntimeError, match="database gone"):
        await third
    await recorder.close()


async def test_recorder_backlog_holds_senders_until_results_are_committed() -> None:
    """When commits are slow, ``room`` keeps connections waiting: the results delivered but
    not committed (what a crash could send twice) stay under the limit."""
    gate = asyncio.Event()
    committed: list[int] = []

    async def record(results: list[RecipientResult], messages: dict[int, OutboundMessage]) -> None:
        await gate.wait()  # a commit stuck behind someone else's write lock
        committed.extend(r.delivery_id for r in results)

    recorder = ResultRecorder(record, delay=0.0)
    messages = {i: _message(f"m{i}", i) for i in range(200)}
    reply = Reply(250, "2.0.0", "ok")
    highest = 0

    async def connection(first: int) -> None:
        nonlocal highest
        for i in range(first, first + 50):
            recorder.add([RecipientResult(i, Outcome.DELIVERED, reply)], messages)
            highest = max(highest, recorder.backlog)
            await recorder.room(16)

    senders = asyncio.gather(*(connection(n) for n in range(0, 200, 50)))
    await asyncio.sleep(0.05)
    # Four connections, each stopped at its first result past the limit: nothing more sent.
    assert recorder.backlog <= 16 + 4
    assert not senders.done()
    gate.set()
    await asyncio.wait_for(senders, 5)
    await recorder.close()
    assert sorted(committed) == list(range(200))
    assert highest <= 16 + 4


async def test_recorder_keeps_uncommitted_results_until_they_commit() -> None:
    """A storage error (database down, disk full) loses nothing: the results are kept,
    tried again with what arrives meanwhile, and their waiters resolve only once committed.
    Giving up would let their leases lapse and send them all again."""
    calls: list[list[int]] = []
    failing = 4

    async def record(results: list[RecipientResult], messages: dict[int, OutboundMessage]) -> None:
        nonlocal failing
        calls.append([r.delivery_id for r in results])
        if failing:
            failing -= 1
            raise StorageError("database did not commit: disk I/O error")

    messages = {i: _message(f"m{i}", i) for i in range(1, 4)}
    ok = Reply(250, "2.0.0", "ok")
    recorder = ResultRecorder(record, delay=0.0, retry_first=0.01, retry_max=0.02)
    first = recorder.add([RecipientResult(1, Outcome.DELIVERED, ok)], messages)
    while not calls:  # noqa: ASYNC110 - the record call
        await asyncio.sleep(0.001)
    second = recorder.add([RecipientResult(2, Outcome.DELIVERED, ok)], messages)
    third = recorder.add([RecipientResult(3, Outcome.DELIVERED, ok)], messages)
    assert recorder.backlog == 3
    await asyncio.wait_for(asyncio.gather(first, second, third), 5)
    assert recorder.backlog == 0 and recorder.failures == 0
    # Five calls: four failed, each with everything kept so far, the first result first.
    assert len(calls) == 5
    assert calls[0] == [1]
    assert calls[-1] == [1, 2, 3]
    assert all(call[0] == 1 for call in calls)
    await recorder.close()
