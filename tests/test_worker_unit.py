"""Worker pieces that need no network: the in-flight filter and the result recorder."""

from __future__ import annotations

import asyncio

import pytest

from kakitome.delivery.types import OutboundMessage, Outcome, Recipient, RecipientResult
from kakitome.smtp.replies import Reply
from kakitome.store.repository import ClaimedBatch
from kakitome.worker import ResultRecorder, _without_in_flight


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
    """Results added together share one record call; a failing call fails its waiters."""
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
