"""The writer's group commit of ``transfer.succeeded``: what finishes while one message waits
for its confirm goes in the next, and every handling returns only once its message is
confirmed, or gets the error of the publish that carried it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from common.errors import PublishNotConfirmed
from common.messages import TransferSucceeded, decode_transfers
from services.event_writer.transfers import TransferBatcher


def transfer(n: int) -> TransferSucceeded:
    return TransferSucceeded(
        scenario="s",
        project_id="p",
        task_id=f"task-{n}",
        transferred_at=datetime(2026, 12, 1, 9, tzinfo=UTC),
        mailboxes=[f"m{n}@contoso.com"],
    )


class Broker:
    """Confirms a publish when the test says so; remembers what each message carried."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], str | None]] = []
        self.confirms: asyncio.Queue[BaseException | None] = asyncio.Queue()

    async def publish(self, body: bytes, correlation_id: str | None) -> None:
        tasks = [t.task_id for t, _ in decode_transfers(body)]
        self.messages.append((tasks, correlation_id))
        outcome = await self.confirms.get()
        if outcome is not None:
            raise outcome


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_transfers_finished_during_a_publish_go_together_in_the_next_message():
    async def run() -> None:
        broker = Broker()
        batcher = TransferBatcher(broker.publish)
        first = asyncio.create_task(batcher.publish(transfer(0), "run-1"))
        await settle()
        waiting = [asyncio.create_task(batcher.publish(transfer(n), "run-1")) for n in (1, 2, 3)]
        await settle()
        assert broker.messages == [(["task-0"], "run-1")]
        assert not any(t.done() for t in [first, *waiting])  # nothing returns unconfirmed
        broker.confirms.put_nowait(None)
        await first
        await settle()
        assert broker.messages[1] == (["task-1", "task-2", "task-3"], "run-1")
        assert not any(t.done() for t in waiting)
        broker.confirms.put_nowait(None)
        await asyncio.gather(*waiting)
        await batcher.close()

    asyncio.run(run())


def test_a_failed_publish_fails_only_the_handlings_it_carried():
    async def run() -> None:
        broker = Broker()
        batcher = TransferBatcher(broker.publish)
        failed = asyncio.create_task(batcher.publish(transfer(0), None))
        await settle()
        later = asyncio.create_task(batcher.publish(transfer(1), None))
        broker.confirms.put_nowait(PublishNotConfirmed("not confirmed"))
        with pytest.raises(PublishNotConfirmed):
            await failed
        broker.confirms.put_nowait(None)
        await later
        assert [tasks for tasks, _ in broker.messages] == [["task-0"], ["task-1"]]

    asyncio.run(run())


def test_a_message_carries_at_most_its_share_and_each_transfer_its_run():
    async def run() -> None:
        broker = Broker()
        batcher = TransferBatcher(broker.publish, most=2)
        for _ in range(3):
            broker.confirms.put_nowait(None)
        handlings = [batcher.publish(transfer(n), f"run-{n % 2}") for n in range(5)]
        await asyncio.gather(*handlings)
        assert [tasks for tasks, _ in broker.messages] == [
            ["task-0", "task-1"],
            ["task-2", "task-3"],
            ["task-4"],
        ]
        # Mixed runs: the message has no correlation id, each transfer carries its own.
        assert [cid for _, cid in broker.messages] == [None, None, "run-0"]

    asyncio.run(run())
