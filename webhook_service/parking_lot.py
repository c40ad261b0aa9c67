"""Moving parked webhook messages back to the delivery queue (`payouts webhooks replay-parked`).

Each moved message starts the retry ladder afresh, now (our retry headers are dropped; it goes
through the default exchange, so even an event the sandbox clock caused is timed from now) and
keeps its message id and event; its delivery goes PARKED -> PENDING. A delivery parked once
gets one new ladder: in one run, one message per event is moved and its other copies dropped (a
last retry's waiting copy, redelivered for a reason of its own, may be parked beside the copy
that parked it). A message its delivery was delivered for, at its resend generation or later,
is dropped too. Any other is moved, whatever its delivery's state: a resend owed, a last retry
parked when the database failed, an event with no delivery row. Messages of other merchants
(with `--merchant`) stay parked.

A delivery parked with no message in the lot (the merchant had no webhook URL, or the service
could not open its secrets) is the merchant's to resend: the replay counts those still PARKED
and says so (it said "moved 0", and the operator who had fixed the URL waited for webhooks).

Reopen the delivery first, then publish (confirmed), then ack: with MySQL down nothing is
published (publishing first sent one more copy at every try while the message stayed parked); a
crash after the reopen leaves a PENDING delivery without its message, which the relay's
stalled-delivery sweep sends again; a crash after the publish leaves the message parked too,
and the next replay moves it again: one more attempt, and the ladder restarts, but the webhook
is delivered once (a delivered delivery drops it).
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from contracts.amqp_connection import connect
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.dead_letters import next_held
from contracts.pipeline_health import count_parked_deliveries
from contracts.redelivery import fresh_copy
from contracts.topology import MERCHANT_ID_HEADER, PAYOUT_ID_HEADER, WEBHOOK_PARKING_LOT
from contracts.waiting_retries import payout_in_bulk
from contracts.webhooks import RESEND_GENERATION_HEADER, resend_generation, resend_routing_key
from webhook_service.delivery_records import reopen_for_replay


@dataclass(frozen=True)
class ReplayResult:
    moved: int
    kept: int  # of other merchants
    dropped: int = 0  # copies of an event moved in this run, or delivered already
    # Deliveries (of the merchant, with `--merchant`) PARKED after the run: no message of theirs
    # was in the lot, or came in while it ran.
    still_parked: int = 0


def _body_field(message: AbstractIncomingMessage, name: str) -> str | None:
    try:
        value = orjson.loads(message.body).get(name)
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def payout_of(message: AbstractIncomingMessage) -> str | None:
    header = (message.headers or {}).get(PAYOUT_ID_HEADER)
    return header if isinstance(header, str) else None


def merchant_of(message: AbstractIncomingMessage) -> str | None:
    header = (message.headers or {}).get(MERCHANT_ID_HEADER)
    return _body_field(message, "merchantId") or (header if isinstance(header, str) else None)


async def _move(
    channel: AbstractChannel,
    sessions: SessionFactory,
    message: AbstractIncomingMessage,
    event_id: str | None,
    now: datetime,
) -> bool:
    """Move the message back to its payout's lane, or drop it (False) when its delivery was
    delivered for it. One whose event does not read goes to the single payouts' queue (where
    the webhook service dead-letters it)."""
    in_bulk = False
    if event_id:
        generation = resend_generation((message.headers or {}).get(RESEND_GENERATION_HEADER))
        async with transaction(sessions) as session:
            wanted = await reopen_for_replay(session, event_id, now, generation=generation)
            in_bulk = await payout_in_bulk(session, payout_of(message))
        if not wanted:
            await message.ack()
            return False
    await channel.default_exchange.publish(
        fresh_copy(message), routing_key=resend_routing_key(in_bulk=in_bulk), mandatory=True
    )
    await message.ack()
    return True


async def replay_parked(
    amqp_url: str,
    sessions: SessionFactory,
    *,
    merchant_id: str | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> ReplayResult:
    connection = await connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        parked = await channel.declare_queue(WEBHOOK_PARKING_LOT, passive=True)
        # Only what is parked now: messages parked while we work wait for the next replay.
        waiting = parked.declaration_result.message_count or 0
        kept: list[AbstractIncomingMessage] = []
        moved: set[str] = set()  # the events moved in this run
        moves = dropped = 0
        try:
            for _ in range(waiting):
                message = await next_held(parked, behind=len(kept))
                if message is None:
                    break
                if merchant_id is not None and merchant_of(message) != merchant_id:
                    kept.append(message)  # unacked until the end, so get() moves past it
                    continue
                event_id = _body_field(message, "id")
                if event_id in moved:
                    await message.ack()
                    dropped += 1
                elif await _move(channel, sessions, message, event_id, clock()):
                    moves += 1
                    if event_id:
                        moved.add(event_id)
                else:
                    dropped += 1
        finally:
            if not channel.is_closed:  # closed, the broker has put them back itself
                for message in kept:
                    await message.nack(requeue=True)
    async with sessions() as session:
        still_parked = await count_parked_deliveries(session, merchant_id)
    return ReplayResult(moved=moves, kept=len(kept), dropped=dropped, still_parked=still_parked)
