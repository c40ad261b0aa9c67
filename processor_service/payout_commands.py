"""The payout-commands queues' handler (one per queue: single payouts, and payouts started in
bulk): ProcessPayout commands that name their attempt run in
batches, one transaction per batch (handlers.process_payouts), gathered while the previous
batches are in the database (contracts.batching). Under load a batch costs about one statement per
payout plus a few for all of them, where a command alone costs eight; when idle, a command waits
at most the batch window and runs alone.

A batch that fails (an unknown payout, a payout another transaction holds, a deadlock, an
outage) wrote nothing: its commands run again one by one, each in its own handler with the
consumer's retry and dead-letter rules, so that none waits for another's (a batch worker that ran
them all waited for the slowest, its payout held for the lock wait, before any of them was acked
and before its next batch). A command without an attempt (hand-published) runs alone, with an
inbox row.
"""

from collections.abc import Sequence

from faststream.rabbit.message import RabbitMessage

from contracts.batching import BatchInterrupted, MicroBatcher
from contracts.messages import ProcessPayout
from contracts.topology import WorkQueue
from processor_service import handlers
from processor_service.consumer import Consumer
from processor_service.schedule import Timetable

Command = tuple[RabbitMessage, ProcessPayout]


class PayoutCommands:
    def __init__(
        self,
        consumer: Consumer,
        timetable: Timetable,
        queue: WorkQueue,
        *,
        window_seconds: float,
        max_batch: int,
        workers: int,
    ) -> None:
        """`workers`: batches in the database at once."""
        self.consumer = consumer
        self.timetable = timetable
        self.queue = queue
        self._batches: MicroBatcher[Command, bool] = MicroBatcher(
            self._run_batch,
            window_seconds=window_seconds,
            max_size=max_batch,
            workers=workers,
        )

    async def handle(self, message: RabbitMessage, command: ProcessPayout) -> None:
        if command.names_its_attempt and await self._applied_together(message, command):
            return
        await self._alone(message, command)

    async def _applied_together(self, message: RabbitMessage, command: ProcessPayout) -> bool:
        try:
            return await self._batches.submit((message, command))
        except BatchInterrupted:  # failed as any batch: nothing of it was written
            return False

    async def aclose(self) -> None:
        """Once no handler waits any more (after the broker stopped)."""
        await self._batches.aclose()

    async def _run_batch(self, batch: Sequence[Command]) -> list[bool]:
        """Per command, whether it was applied with the batch (else its handler runs it alone)."""
        together = len(batch) > 1 and await self.consumer.run_together(
            [message for message, _ in batch],
            self.queue,
            lambda session, contexts: handlers.process_payouts(
                session,
                [(command, context) for (_, command), context in zip(batch, contexts, strict=True)],
                self.timetable,
            ),
        )
        return [together] * len(batch)

    async def _alone(self, message: RabbitMessage, command: ProcessPayout) -> None:
        await self.consumer.run(
            message,
            self.queue,
            lambda session, context: handlers.process_payout(
                session, command, context, self.timetable
            ),
            # Judged against the payout's attempt (handlers.process_payout): no inbox row.
            inbox=not command.names_its_attempt,
        )
