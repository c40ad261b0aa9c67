"""Running one consumed message: its inbox row and its effects in one transaction, and what to
do when that fails.

- a malformed body never reaches us: the subscriber's decoder dead-letters it to `<queue>.dead`
  with the validation error in a header (contracts.redelivery.dead_lettering_decoder);
- a command that can never be applied (NeverApplicable: an unknown payout, a PSP outcome never
  recorded) is dead-lettered at once, with the reason;
- an outage (contracts.db.outages: database or connection down, deadlock, lock-wait timeout,
  pool timeout) is not the message's fault: retried for as long as it lasts, the delay doubling
  up to MAX_OUTAGE_DELAY_SECONDS, and not counted against `max_retries`;
- any other error is retried `max_retries` times, then dead-lettered with its last error.

Messages whose work judges copies itself may also run together, in one transaction
(`run_together`); when that transaction fails, each runs again alone, with all of the above.
"""

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from faststream.rabbit import RabbitBroker
from faststream.rabbit.message import RabbitMessage
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.engine import SessionFactory, transaction
from contracts.db.models import CORRELATION_ID_LENGTH
from contracts.db.outages import is_outage
from contracts.domain.statuses import PayoutStatus
from contracts.logging import some_of
from contracts.redelivery import (
    dead_letter,
    message_log_context,
    outage_count,
    republish,
    retry_count,
)
from contracts.topology import (
    OUTAGE_COUNT_HEADER,
    OUTAGE_WAIT_TIER,
    PAYOUT_ID_HEADER,
    RETRY_COUNT_HEADER,
    WorkQueue,
)
from processor_service.handlers import Context, NeverApplicable
from processor_service.inbox import first_delivery
from processor_service.metrics import MESSAGES, PAYOUT_STATUSES, dead_letters_of

log = logging.getLogger("processor")

# The longest wait between retries of a message during an outage: a waiting message holds up
# those queued behind it in the outage-wait queue (TTL expires only at its head), so not long.
MAX_OUTAGE_DELAY_SECONDS = 15.0

Work = Callable[[AsyncSession, Context], Awaitable[PayoutStatus | None]]
MESSAGE_ID_KEPT = 190  # of a message id up to AMQP's 255 characters, beside a digest of 64

# The work of several messages in one transaction: a status (or None) per message, in order.
WorkTogether = Callable[[AsyncSession, Sequence[Context]], Awaitable[Sequence[PayoutStatus | None]]]


def message_key(message: RabbitMessage) -> str:
    """The outbox id the relay set, with the body's digest: a database restored from a backup
    gives its outbox ids out again (AUTO_INCREMENT), and a message for another payout, with the
    id of one applied after the backup, was dropped as its duplicate (restore review). A message
    published without an id (by hand) has its digest alone. The id read from the AMQP message
    itself: FastStream gives a message without one a random id of its own, which made each copy
    of it pass for a new message. At most the inbox's 255 characters."""
    return inbox_key(message.raw_message.message_id, message.body)


def inbox_key(message_id: str | None, body: bytes) -> str:
    digest = hashlib.sha256(body).hexdigest()
    return f"{message_id[:MESSAGE_ID_KEPT]}:{digest}" if message_id else f"sha256:{digest}"


@dataclass(frozen=True)
class Consumer:
    broker: RabbitBroker
    sessions: SessionFactory
    retry_delay_seconds: float
    max_retries: int

    def context(self, message: RabbitMessage) -> Context:
        return Context(
            # As AMQP allows, up to 255 characters: cut to the outbox's column (a longer one
            # failed every transaction of the command).
            correlation_id=(message.raw_message.correlation_id or "")[:CORRELATION_ID_LENGTH]
            or None,
            retry_delay_ms=int(self.retry_delay_seconds * 1000),
        )

    async def run(
        self, message: RabbitMessage, queue: WorkQueue, work: Work, *, inbox: bool = True
    ) -> None:
        """`inbox`: record the message id, so that a copy changes nothing; False when `work`
        judges copies itself, against the state it would change."""
        context = self.context(message)
        with message_log_context(message.headers, context.correlation_id):
            await self._run(message, queue, work, context, inbox=inbox)

    async def _run(
        self,
        message: RabbitMessage,
        queue: WorkQueue,
        work: Work,
        context: Context,
        *,
        inbox: bool,
    ) -> None:
        try:
            async with transaction(self.sessions) as session:
                if inbox and not await first_delivery(
                    session, consumer=queue.name, message_id=message_key(message)
                ):
                    log.info("duplicate message %s ignored", message.message_id)
                    MESSAGES.labels(queue.name, "duplicate").inc()
                    return
                status = await work(session, context)
        except NeverApplicable as never:
            log.error("message %s: %s: dead-lettered", message.message_id, never)
            dead_letters_of(queue)()
            await dead_letter(self.broker, message, queue=queue, error=str(never))
            return
        except Exception as error:
            await self._retry_or_dead_letter(message, queue, error)
            return
        if status is None:
            log.info("message %s: nothing to change", message.message_id)
        _count(queue, status)

    async def run_together(
        self, messages: Sequence[RabbitMessage], queue: WorkQueue, together: WorkTogether
    ) -> bool:
        """The messages' work in one transaction (no inbox: `together` judges copies itself).
        False when it failed, for whatever reason: nothing of it was written, and the caller
        runs each message alone (`run`), which retries or dead-letters it as its error says."""
        try:
            async with transaction(self.sessions) as session:
                statuses = await together(session, [self.context(m) for m in messages])
        except Exception as error:
            log.warning(
                "%d messages failed together (%s): running them one by one (payouts %s)",
                len(messages),
                f"{type(error).__name__}: {error}"[:200],
                some_of(list(dict.fromkeys(_payout_of(m) for m in messages))),
            )
            MESSAGES.labels(queue.name, "batch_failed").inc(len(messages))
            return False
        for status in statuses:
            _count(queue, status)
        return True

    async def _retry_or_dead_letter(
        self, message: RabbitMessage, queue: WorkQueue, error: Exception
    ) -> None:
        attempts = retry_count(message.headers)
        description = f"{type(error).__name__}: {error}"
        if is_outage(error):
            # Later each time the outage is still there (a backlog would otherwise cycle through
            # the retry queue at the first delay while it lasts), and not the message's fault:
            # its count of real failures stays.
            outages = outage_count(message.headers) + 1
            delay, tier = self._outage_delay(outages), OUTAGE_WAIT_TIER
            bookkeeping = {RETRY_COUNT_HEADER: attempts, OUTAGE_COUNT_HEADER: outages}
        elif attempts >= self.max_retries:
            log.error("message %s failed %d times: dead-lettered", message.message_id, attempts + 1)
            dead_letters_of(queue)()
            await dead_letter(self.broker, message, queue=queue, error=description)
            return
        else:
            delay, tier = self.retry_delay_seconds, 1
            bookkeeping = {OUTAGE_COUNT_HEADER: 0}
        log.warning(
            "message %s failed (%s); retrying in %.1fs",
            message.message_id,
            description[:200],
            delay,
        )
        retried = await republish(
            self.broker,
            message,
            queue=queue,
            to=queue.retry_queue(tier),
            error=description,
            delay_seconds=delay,
            headers=bookkeeping,
        )
        MESSAGES.labels(queue.name, "retried" if retried else "dead_lettered").inc()

    def _outage_delay(self, outages: int) -> float:
        """The retry delay, doubled for each outage met in a row, up to the longest wait."""
        longest = max(MAX_OUTAGE_DELAY_SECONDS, self.retry_delay_seconds)
        return min(self.retry_delay_seconds * 2.0 ** min(outages - 1, 16), longest)


def _payout_of(message: RabbitMessage) -> str:
    return str((message.headers or {}).get(PAYOUT_ID_HEADER, "?"))


def _count(queue: WorkQueue, status: PayoutStatus | None) -> None:
    if status is None:
        MESSAGES.labels(queue.name, "no_change").inc()
        return
    MESSAGES.labels(queue.name, "applied").inc()
    PAYOUT_STATUSES.labels(status.value).inc()
