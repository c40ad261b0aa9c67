"""Every exchange, queue, binding and routing key of the system, declared in one place.

Work queues are quorum queues with a delivery limit and at-least-once dead-lettering into
`<queue>.dead`. Delayed retries go to `<queue>.retry...` queues: messages carry a per-message
expiration and dead-letter back to their work queue through `payouts.retry-return`.
"""

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from aio_pika.abc import AbstractChannel, ExchangeType
from aiormq.exceptions import AMQPError, ChannelPreconditionFailed
from yarl import URL

from contracts.amqp_connection import connect

COMMANDS_EXCHANGE = "payouts.commands"  # direct: commands to the processor
EVENTS_EXCHANGE = "payouts.events"  # topic: payout status events, routing key = event type
# topic, routing key = event type: the events of payouts started several at once (a payroll's
# chunk), for the payout's whole life, for a webhook queue of their own.
BULK_EVENTS_EXCHANGE = "payouts.events.bulk"
EVENT_EXCHANGES = (EVENTS_EXCHANGE, BULK_EVENTS_EXCHANGE)
RETRY_RETURN_EXCHANGE = "payouts.retry-return"  # direct: retry queues dead-letter back here
DEAD_LETTER_EXCHANGE = "payouts.dead-letter"  # direct: dead-letter and parking-lot queues
DEFAULT_EXCHANGE = ""  # routes by queue name; used for retry queues

PROCESS_PAYOUT_KEY = "payout.process"
# The commands of payouts created several at once (a payroll's chunk of more than one), for the
# payout's whole life: a queue of their own, consumed beside the single payouts' one.
PROCESS_PAYOUTS_IN_BULK_KEY = "payout.process.bulk"
APPLY_PSP_OUTCOME_KEY = "payout.apply-psp-outcome"

DELIVERY_LIMIT = 10
MAX_CONNECT_BACKOFF_SECONDS = 5.0
log = logging.getLogger("topology")

# Our own headers (RabbitMQ >= 3.13 ignores a client-sent x-death).
RETRY_COUNT_HEADER = "x-payouts-retry-count"
OUTAGE_COUNT_HEADER = "x-payouts-outage-retries"  # outages waited out since the last real failure
LAST_ERROR_HEADER = "x-payouts-last-error"
# When a waiting webhook retry is due on its merchant's sandbox clock, and the clock's offset its
# wait was measured under (contracts.webhooks).
RETRY_DUE_HEADER = "x-payouts-retry-due-at"
RETRY_CLOCK_OFFSET_HEADER = "x-payouts-retry-clock-offset"
# On a webhook message that is still an event's own (sent back to wait, or the relay's copy of
# one never attempted), not a retry, a resend or a replay: its first attempt is timed when the
# event happened on the sandbox clock. The events exchange says so of the message it routes.
OWN_EVENT_HEADER = "x-payouts-own-event"
# On a webhook message sent back to wait because its merchant's slow endpoint had its share of
# calls in flight: how many times in a row (webhook_service.retry_ladder: wait_for_a_slot).
BUSY_WAITS_HEADER = "x-payouts-busy-waits"
# On a webhook message once parked, kept through its waits; a fresh copy (replay-parked, which
# reopens the delivery first; a redrive) drops it. Moved out of the lot by hand (the management
# UI's Move messages, a shovel), it finds its delivery still PARKED and goes back to the lot: it
# was acked as a late copy, and lost.
PARKED_HEADER = "x-payouts-parked"
PAYOUT_ID_HEADER = "x-payout-id"
MERCHANT_ID_HEADER = "x-merchant-id"
SCHEMA_HEADER = "x-schema"


# The "tier" of the queue where a webhook message waits for a slot of its merchant's slow
# endpoint (webhook_service.retry_ladder.RetryLadder.wait_for_a_slot): no step of the ladder.
SLOT_WAIT_TIER = 0
# The "tier" of the queue where a processor message waits out a database outage (its waits
# grow while the outage lasts): beside its retry queue, whose waits are all alike.
OUTAGE_WAIT_TIER = -1


@dataclass(frozen=True)
class WorkQueue:
    name: str
    exchange: str
    routing_keys: tuple[str, ...]
    retry_tiers: int = 1
    parking_lot: str | None = None
    extra_arguments: dict[str, Any] = field(default_factory=dict)
    # A TTL queue of its own for messages that wait for a slot, each as long as the others: in
    # a retry tier, a TTL queue expiring only the message at its head, a wait shorter or longer
    # than the tier's held up the waits behind it, or was held up by them.
    slot_wait: bool = False
    # A TTL queue of its own for messages that wait out an outage, for the same reason: in the
    # retry queue a 0002 payout's 2-second retry waited behind an outage's 15-second one.
    outage_wait: bool = False

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.name}.dead"

    def retry_queue(self, tier: int) -> str:
        """Tier 1..retry_tiers (a single-tier queue has no number in its name), SLOT_WAIT_TIER:
        the slot-wait queue, or OUTAGE_WAIT_TIER: the outage-wait queue."""
        if tier == SLOT_WAIT_TIER:
            assert self.slot_wait, f"{self.name} has no slot-wait queue"
            return f"{self.name}.slot-wait"
        if tier == OUTAGE_WAIT_TIER:
            assert self.outage_wait, f"{self.name} has no outage-wait queue"
            return f"{self.name}.outage-wait"
        return f"{self.name}.retry" if self.retry_tiers == 1 else f"{self.name}.retry.{tier}"

    def waiting_queues(self) -> list[str]:
        """Every TTL queue that dead-letters back to this one: its retry tiers, and its
        slot-wait and outage-wait queues if it has them."""
        tiers = [
            *range(1, self.retry_tiers + 1),
            *([SLOT_WAIT_TIER] if self.slot_wait else []),
            *([OUTAGE_WAIT_TIER] if self.outage_wait else []),
        ]
        return [self.retry_queue(tier) for tier in tiers]

    @property
    def arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-routing-key": self.dead_letter_queue,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            **self.extra_arguments,
        }

    def retry_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": RETRY_RETURN_EXCHANGE,
            "x-dead-letter-routing-key": self.name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }


PAYOUT_COMMANDS = WorkQueue(
    name="processor.payout-commands",
    exchange=COMMANDS_EXCHANGE,
    routing_keys=(PROCESS_PAYOUT_KEY,),
    outage_wait=True,
)
# One merchant's payroll of 5,000 queued ahead of every other merchant's single payout: behind
# one, a payout took 10 s to its final status, against 0.07 s when idle (neighbours review).
BULK_PAYOUT_COMMANDS = WorkQueue(
    name="processor.payout-commands.bulk",
    exchange=COMMANDS_EXCHANGE,
    routing_keys=(PROCESS_PAYOUTS_IN_BULK_KEY,),
    outage_wait=True,
)
PSP_OUTCOMES = WorkQueue(
    name="processor.psp-outcomes",
    exchange=COMMANDS_EXCHANGE,
    routing_keys=(APPLY_PSP_OUTCOME_KEY,),
    outage_wait=True,
)
WEBHOOK_PARKING_LOT = "webhooks.parking-lot"
# The queues nothing consumes but an operator reading them (`payouts dlq list`, a replay of one
# merchant's parked webhooks), each read returning the message unacknowledged. RabbitMQ 4.0 to
# 4.2 give a quorum queue without a delivery limit one of 20, and drop a message past it when the
# queue has no dead-letter exchange, as these have none: the 21st listing found the dead letters
# gone, and 20 replays of one merchant's webhooks dropped the others' (RabbitMQ compatibility
# review). A policy lifts it (an argument would make each existing queue's declaration fail);
# RabbitMQ 3.x refuses -1, so a billion.
KEEP_READ_MESSAGES_POLICY = {
    "name": "payouts-keep-read-messages",
    "pattern": r"\.dead$|^webhooks\.parking-lot$",  # and no other queue
    "apply-to": "queues",
    "definition": {"delivery-limit": 1_000_000_000},
    "priority": 0,
}


def webhook_events_queue(retry_tiers: int, *, in_bulk: bool = False) -> WorkQueue:
    """The webhook service's queue; one retry queue per tier of the configured ladder. With
    `in_bulk`, the queue of the events of payouts started several at once, consumed beside it,
    with waiting queues of its own: behind one merchant's payroll of 5,000 another merchant's
    webhook waited 15 s in a single queue, and a payroll whose endpoint fails would send its
    retries back ahead of everyone else's."""
    return WorkQueue(
        name="webhooks.payout-events.bulk" if in_bulk else "webhooks.payout-events",
        exchange=BULK_EVENTS_EXCHANGE if in_bulk else EVENTS_EXCHANGE,
        routing_keys=("payout.*",),
        retry_tiers=retry_tiers,
        parking_lot=WEBHOOK_PARKING_LOT,
        slot_wait=True,
    )


EXCHANGES: dict[str, ExchangeType] = {
    COMMANDS_EXCHANGE: ExchangeType.DIRECT,
    EVENTS_EXCHANGE: ExchangeType.TOPIC,
    BULK_EVENTS_EXCHANGE: ExchangeType.TOPIC,
    RETRY_RETURN_EXCHANGE: ExchangeType.DIRECT,
    DEAD_LETTER_EXCHANGE: ExchangeType.DIRECT,
}


def all_work_queues(webhook_retry_tiers: int) -> tuple[WorkQueue, ...]:
    return (
        PAYOUT_COMMANDS,
        BULK_PAYOUT_COMMANDS,
        PSP_OUTCOMES,
        webhook_events_queue(webhook_retry_tiers),
        webhook_events_queue(webhook_retry_tiers, in_bulk=True),
    )


async def declare_work_queue(channel: AbstractChannel, queue: WorkQueue) -> None:
    exchanges = {name: await channel.get_exchange(name) for name in EXCHANGES}
    main = await channel.declare_queue(queue.name, durable=True, arguments=queue.arguments)
    for key in queue.routing_keys:
        await main.bind(exchanges[queue.exchange], routing_key=key)
    await main.bind(exchanges[RETRY_RETURN_EXCHANGE], routing_key=queue.name)

    dead = await channel.declare_queue(
        queue.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead.bind(exchanges[DEAD_LETTER_EXCHANGE], routing_key=queue.dead_letter_queue)

    for waiting in queue.waiting_queues():
        await channel.declare_queue(waiting, durable=True, arguments=queue.retry_arguments())
    if queue.parking_lot:
        parked = await channel.declare_queue(
            queue.parking_lot, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await parked.bind(exchanges[DEAD_LETTER_EXCHANGE], routing_key=queue.parking_lot)


async def declare_topology(channel: AbstractChannel, *, webhook_retry_tiers: int) -> None:
    """Idempotent: every service declares the whole topology at start-up."""
    for name, kind in EXCHANGES.items():
        await channel.declare_exchange(name, kind, durable=True)
    for queue in all_work_queues(webhook_retry_tiers):
        await declare_work_queue(channel, queue)


# What RabbitMQ says when a queue limit refuses a declaration, and what the operator can do.
QUEUE_LIMITS = {
    "queue limit in vhost": "the vhost's queue limit is reached. Raise or clear it (`rabbitmqctl "
    "clear_vhost_limits -p VHOST`, or the management UI's Admin > Limits)",
    # RabbitMQ 3.13 and later: the `cluster_queue_limit` setting.
    "queue limit in cluster": "the cluster's queue limit is reached. Raise RabbitMQ's "
    "`cluster_queue_limit` setting, or delete the queues of what no longer runs",
}


class TopologyConflict(Exception):
    """RabbitMQ refused to declare this version's topology (PRECONDITION_FAILED), which no
    restart mends: a queue or exchange of the vhost differs from what this version declares (an
    older version's), or the vhost's queue limit is reached."""

    @classmethod
    def of(cls, refusal: ChannelPreconditionFailed) -> "TopologyConflict":
        """What the operator should do, as the broker's reply says: a queue limit was reported
        as an older version's queue, with the advice to empty and delete it (broker limits
        review)."""
        reply = str(refusal.args[-1])
        refused = f"RabbitMQ refused this version's topology ({reply})"
        for said, advice in QUEUE_LIMITS.items():
            if said in reply:
                return cls(f"{refused}: {advice}, then start again.")
        return cls(
            f"{refused}: a queue left by an older version. Empty and delete it, or give this "
            "version's a new name (docs/operations.md, the queues' arguments), then start again."
        )


async def declare_topology_at(amqp_url: str, *, webhook_retry_tiers: int) -> None:
    """At a consumer's start: RabbitMQ not answering yet (a machine or a compose project
    starting) is waited for, said in a line and backed off, as the outbox relay does; it was a
    30-line traceback and exit 1. TopologyConflict when the vhost holds another version's queue
    or is at its queue limit (it was a 100-line traceback, in a restart loop under compose)."""
    backoff = 0.2
    while True:
        try:
            connection = await connect(amqp_url)
            break
        # Any failure: a broker that accepts and closes before the handshake (still starting, or
        # a port forwarder in front of none) ends aiormq's frames, a RuntimeError
        # ("async generator raised StopAsyncIteration") and exit 1. The relay's connect does so.
        except Exception as unavailable:
            why = _why_unavailable(unavailable, amqp_url)
            log.warning("RabbitMQ unavailable (%s); retrying in %.1fs", why, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_CONNECT_BACKOFF_SECONDS)
    async with connection:
        try:
            channel = await connection.channel()
            await declare_topology(channel, webhook_retry_tiers=webhook_retry_tiers)
        except ChannelPreconditionFailed as refusal:
            raise TopologyConflict.of(refusal) from refusal


def _why_unavailable(error: Exception, amqp_url: str) -> str:
    """What a failed connect says; the broker closing the connection it was opening (aiormq's
    "Expected one of ['Connection.OpenOk'], got <Connection.Close object at 0x...>") names the
    vhost, which a typo in PAYOUTS_AMQP_URL makes one that does not exist."""
    if isinstance(error, AMQPError) and not isinstance(error, OSError):
        vhost = URL(amqp_url).path[1:] or "/"
        return f"it closed the connection: does vhost {vhost!r} exist, and may this user use it?"
    return str(error)
