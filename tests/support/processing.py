"""The processor app (its consumers and scheduler loop) and an outbox relay loop, both in the
test's process, against the tests' database and vhost."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.clock import SANDBOX_TIME
from contracts.db.engine import SessionFactory, transaction
from contracts.db.models import Payout
from contracts.domain.statuses import FailureCode
from contracts.settings import Settings
from contracts.topology import declare_topology_at
from processor_service import transitions
from processor_service.app import create_processor
from processor_service.outbox_relay import DueProbe, OutboxRelay, RoundResult, open_publisher
from processor_service.relay_service import run_outbox_relay
from processor_service.transitions import PayoutChange


@asynccontextmanager
async def running_processor_and_relay(settings: Settings) -> AsyncIterator[None]:
    """Both running with `settings`, the topology declared first; both stopped on the way out."""
    await declare_topology_at(
        settings.amqp_url, webhook_retry_tiers=len(settings.webhook_retry_ladder)
    )
    stop = asyncio.Event()
    relay = asyncio.create_task(run_outbox_relay(settings, stop))
    try:
        async with create_processor(settings):
            yield
    finally:
        stop.set()
        await relay


async def relay_until_idle(relay: OutboxRelay, max_rounds: int = 50) -> list[RoundResult]:
    """Rounds until one sends nothing (rows that can never be published stay behind)."""
    rounds = []
    for _ in range(max_rounds):
        rounds.append(await relay.relay_once())
        if rounds[-1].sent == 0:
            return rounds
    raise AssertionError(f"relay still sending after {max_rounds} rounds: {rounds}")


async def everything_due_published(
    settings: Settings, engine: AsyncEngine, sessions: SessionFactory
) -> None:
    """The topology declared and every outbox row due published: a relay's rounds, without its
    housekeeping (whose sweeps send earlier tests' stalled payouts' commands again)."""
    await declare_topology_at(
        settings.amqp_url, webhook_retry_tiers=len(settings.webhook_retry_ladder)
    )
    connection, publisher = await open_publisher(settings.amqp_url)
    probe = DueProbe(engine)
    async with connection:
        relay = OutboxRelay(
            sessions,
            publisher,
            probe,
            batch_size=500,
            max_attempts=settings.relay_max_publish_attempts,
        )
        await relay_until_idle(relay)
    await probe.aclose()


async def fail_as_the_processor(sessions: SessionFactory, payout_id: str) -> None:
    """What the processor writes for a PSP's FAILED outcome (the hold released), in one
    transaction, without a processor running."""
    async with transaction(sessions) as session:
        payout = await session.scalar(
            select(Payout).where(Payout.id == payout_id).with_for_update()
        )
        assert payout is not None
        change = PayoutChange(payout, correlation_id=None)
        transitions.fail(change, failure_code=FailureCode.ACCOUNT_INVALID, reason="Account invalid")
        await change.write(session, SANDBOX_TIME)
