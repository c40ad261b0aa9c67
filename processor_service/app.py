"""The processor: a FastStream app consuming payout commands and PSP outcomes, and the
scheduler loop applying scheduled actions as they come due in sandbox time."""

import asyncio
from datetime import timedelta

from faststream import AckPolicy, FastStream
from faststream.rabbit import RabbitBroker

from contracts.broker import consumed_message, consumed_queue, create_broker
from contracts.consumer_health import CHECK_SECONDS, consumer_works
from contracts.db.engine import (
    IDLE_TRANSACTION_SECONDS,
    WORKER_DATABASE_TIMEOUT_SECONDS,
    create_engine,
    create_session_factory,
)
from contracts.heartbeat import BeatWhileWorking, Heartbeat
from contracts.messages import ApplyPspOutcome, ProcessPayout
from contracts.metrics_server import serve_metrics
from contracts.pipeline_health import relay_keeps_up
from contracts.redelivery import dead_lettering_decoder
from contracts.settings import Settings
from contracts.topology import (
    BULK_PAYOUT_COMMANDS,
    PAYOUT_COMMANDS,
    PSP_OUTCOMES,
    declare_topology_at,
)
from migrations.state import until_migrated
from processor_service import handlers
from processor_service.consumer import Consumer
from processor_service.metrics import dead_letters_of
from processor_service.payout_commands import PayoutCommands
from processor_service.schedule import Timetable
from processor_service.scheduler import Scheduler


def create_processor(settings: Settings) -> FastStream:
    broker = create_broker(
        settings.amqp_url, prefetch=settings.processor_prefetch, app_name="processor"
    )
    # A connection per message in hand and one per scheduler worker. Prefetch is per consumer:
    # PSP outcomes and bulk commands may each hold as many messages again as single payouts'
    # commands, then in overflow.
    engine = create_engine(
        settings.database_url,
        pool_size=settings.processor_prefetch + settings.processor_scheduler_workers,
        max_overflow=2 * settings.processor_prefetch,
        timeout_seconds=WORKER_DATABASE_TIMEOUT_SECONDS,
        idle_transaction_seconds=IDLE_TRANSACTION_SECONDS,
    )
    sessions = create_session_factory(engine)
    timetable = Timetable(
        decision_sla=timedelta(hours=settings.decision_sla_hours),
        scripted=settings.sandbox_enabled,
    )
    scheduler = Scheduler(
        sessions, timetable, poll_interval_seconds=settings.scheduler_poll_interval_seconds
    )
    consumer = Consumer(
        broker=broker,
        sessions=sessions,
        retry_delay_seconds=settings.processor_retry_delay_seconds,
        max_retries=settings.processor_max_handler_retries,
    )
    lanes = [
        PayoutCommands(
            consumer,
            timetable,
            queue,
            window_seconds=settings.processor_batch_window_seconds,
            max_batch=settings.processor_batch_size,
            workers=settings.processor_batch_workers,
        )
        for queue in (PAYOUT_COMMANDS, BULK_PAYOUT_COMMANDS)
    ]
    for lane in lanes:
        subscribe_payout_commands(broker, lane)

    @broker.subscriber(
        consumed_queue(PSP_OUTCOMES),
        decoder=dead_lettering_decoder(
            broker, ApplyPspOutcome, PSP_OUTCOMES, count_dead_letter=dead_letters_of(PSP_OUTCOMES)
        ),
        ack_policy=AckPolicy.REJECT_ON_ERROR,
        title="processor.psp-outcomes",
        description="Settle a payout as an IPN or a sandbox simulation said.",
    )
    async def on_psp_outcome(command: ApplyPspOutcome) -> None:
        await consumer.run(
            consumed_message(broker),
            PSP_OUTCOMES,
            lambda session, context: handlers.apply_psp_outcome(
                session, command, context, timetable
            ),
        )

    async def declare_topology() -> None:
        await declare_topology_at(
            settings.amqp_url, webhook_retry_tiers=len(settings.webhook_retry_ladder)
        )

    # Touched once the consumers are subscribed (after_startup), never while the start waits for
    # the migrations, nor while the broker or the database is down.
    async def works() -> bool:
        """The heartbeat's check, told to the scheduler too (ClaimRules.stuck_ones_aside), with
        whether the outbox relay keeps up: with it alone down a night, its payouts waited for
        it, not stuck, and a queue's expiry due in the night went before the failure whose
        release should have started the queue."""
        working = flowing = False
        try:
            working = await consumer_works(broker, sessions, declare_topology)
            flowing = working and await relay_keeps_up_within(CHECK_SECONDS)
        finally:
            scheduler.note_working(flowing)
        return working

    async def relay_keeps_up_within(seconds: float) -> bool:
        """relay_keeps_up, False if it cannot tell within `seconds`: the heartbeat's check
        itself (the database answered it) does not fail for it."""
        try:
            async with sessions() as session:
                return await asyncio.wait_for(relay_keeps_up(session), seconds)
        except Exception:
            return False

    beating = BeatWhileWorking(Heartbeat.at(settings.heartbeat_file), works)

    async def start_up() -> None:
        serve_metrics(settings)
        await until_migrated(sessions, "processor")
        await declare_topology()  # last: a queue deleted while it waited is there to consume

    stop_scheduler = asyncio.Event()
    scheduler_task: list[asyncio.Task[None]] = []

    async def start_scheduler() -> None:
        stop_scheduler.clear()
        workers = settings.processor_scheduler_workers
        for worker in range(workers):
            running = scheduler.run(stop_scheduler, worker=worker, workers=workers)
            scheduler_task.append(asyncio.create_task(running))

    async def stop_scheduling() -> None:
        stop_scheduler.set()
        while scheduler_task:
            await scheduler_task.pop()

    return FastStream(
        broker,
        on_startup=[beating.clear, start_up],
        after_startup=[start_scheduler, beating.start],
        on_shutdown=[beating.stop, stop_scheduling],
        after_shutdown=[*(lane.aclose for lane in lanes), engine.dispose],
    )


def subscribe_payout_commands(broker: RabbitBroker, lane: PayoutCommands) -> None:
    """`lane`'s queue consumed into it."""

    @broker.subscriber(
        consumed_queue(lane.queue),
        decoder=dead_lettering_decoder(
            broker, ProcessPayout, lane.queue, count_dead_letter=dead_letters_of(lane.queue)
        ),
        ack_policy=AckPolicy.REJECT_ON_ERROR,
        title=lane.queue.name,
        description="Run the scenario rules on a payout (PENDING or RETRY).",
    )
    async def on_process_payout(command: ProcessPayout) -> None:
        await lane.handle(consumed_message(broker), command)
