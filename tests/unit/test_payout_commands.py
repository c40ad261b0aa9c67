"""The processor's batches of payout commands, around a fake consumer: when a batch fails, its
commands run alone, and what one of them raises is its own, not the other commands'."""

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any, cast

from faststream.rabbit.message import RabbitMessage

from contracts.messages import ProcessPayout
from contracts.topology import PAYOUT_COMMANDS, WorkQueue
from processor_service.consumer import Consumer
from processor_service.payout_commands import PayoutCommands
from processor_service.schedule import Timetable


class UnpublishableRetry(Exception):
    """As when a command's retry cannot be published (the broker connection dropped)."""


class BatchFailingConsumer:
    """Every batch fails; a command run alone succeeds, but for those of `failing` payouts."""

    def __init__(self, failing: set[str], *, interrupted: bool = False) -> None:
        self.failing = failing
        self.interrupted = interrupted
        self.ran_alone: list[str] = []

    async def run_together(self, messages: Sequence[RabbitMessage], *_: Any) -> bool:
        if self.interrupted:  # the batch met a driver's future cancelled as its channel closed
            raise asyncio.CancelledError("the channel closed")
        return False

    async def run(self, message: RabbitMessage, queue: WorkQueue, *_: Any, **__: Any) -> None:
        payout_id = cast(str, message.headers["payout"])
        self.ran_alone.append(payout_id)
        if payout_id in self.failing:
            raise UnpublishableRetry(payout_id)


def _command() -> tuple[RabbitMessage, ProcessPayout]:
    payout_id = str(uuid.uuid4())
    message = cast(RabbitMessage, type("Message", (), {"headers": {"payout": payout_id}})())
    command = ProcessPayout(
        payout_id=payout_id, merchant_id=str(uuid.uuid4()), attempt=0, hold_cycle=0
    )
    return message, command


async def _handled(
    consumer: BatchFailingConsumer, commands: list[tuple[RabbitMessage, ProcessPayout]]
) -> list[BaseException | None]:
    """What each command's handler raised, all sent at once (one batch)."""
    handler = PayoutCommands(
        cast(Consumer, consumer),
        Timetable(),
        PAYOUT_COMMANDS,
        window_seconds=0.2,
        max_batch=8,
        workers=2,
    )
    try:
        return await asyncio.gather(
            *(handler.handle(message, command) for message, command in commands),
            return_exceptions=True,
        )
    finally:
        await handler.aclose()


async def test_a_command_that_fails_alone_fails_only_its_own_message() -> None:
    commands = [_command() for _ in range(3)]
    failing = commands[1][1].payout_id
    consumer = BatchFailingConsumer({failing})

    outcomes = await _handled(consumer, commands)

    assert sorted(consumer.ran_alone) == sorted(command.payout_id for _, command in commands)
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], UnpublishableRetry)


async def test_an_interrupted_batch_runs_each_command_alone() -> None:
    """A batch interrupted by a CancelledError not its worker's wrote nothing, as any failed
    batch: its handlers raised BatchInterrupted, and the subscriber rejected the valid commands
    into the dead-letter queue, with no reason and no retry (diff review)."""
    commands = [_command() for _ in range(3)]
    consumer = BatchFailingConsumer(set(), interrupted=True)

    outcomes = await _handled(consumer, commands)

    assert outcomes == [None, None, None]
    assert sorted(consumer.ran_alone) == sorted(command.payout_id for _, command in commands)
