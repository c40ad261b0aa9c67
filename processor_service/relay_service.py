"""The `payouts outbox-relay` process: poll, publish, back off while a dependency is down, do
its housekeeping now and then (clean up; send again the payout commands, webhook retries and
deliveries whose message was lost; in test mode, send on the webhook retries an advanced sandbox
clock made due), stop cleanly on SIGTERM (the round in flight finishes).

It polls every `relay_busy_poll_interval_seconds` (15 ms) while rows keep coming, and every
`relay_poll_interval_seconds` (50 ms) once the outbox has been empty for a second: a payout
crosses the relay twice on its way to its last webhook, so the poll's wait is on that path twice,
and an idle sandbox is not polled sixty times a second. An idle relay's poll is one read, no
transaction (outbox_relay.DueProbe): measured in this loop, 1.5 ms of CPU a poll where a claim
and its commit took 2.8 ms, so an idle relay uses 2.9 % of a core instead of 5.5 %."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from aio_pika.abc import AbstractRobustConnection

from contracts.clock import MerchantTime
from contracts.db.engine import (
    IDLE_TRANSACTION_SECONDS,
    WORKER_DATABASE_TIMEOUT_SECONDS,
    SessionFactory,
    create_engine,
    create_session_factory,
)
from contracts.heartbeat import Heartbeat
from contracts.ledger_audit import audit_if_due
from contracts.metrics_server import serve_metrics
from contracts.settings import Settings
from migrations.state import until_migrated
from processor_service.housekeeping import clean_up
from processor_service.metrics import HOUSEKEEPING_FAILURES
from processor_service.outbox_relay import (
    DueProbe,
    OutboxRelay,
    Publisher,
    RoundResult,
    measure_outbox_lag,
    open_publisher,
)
from processor_service.stalled_deliveries import EventsSwept, resend_stalled_deliveries
from processor_service.stalled_payouts import resend_stalled_payout_commands
from processor_service.stalled_retries import (
    release_retries_due_on_advanced_clocks,
    resend_stalled_retries,
)

log = logging.getLogger("outbox-relay")

CLEANUP_EVERY_SECONDS = 300.0
# Stalled webhook retries and deliveries are looked for every minute, or twice per
# PAYOUTS_WEBHOOK_STALLED_RETRY_SECONDS when that is shorter.
STALLED_RETRIES_EVERY_SECONDS = 60.0
# Webhook retries that an advanced sandbox clock made due since the advance are looked for every
# second: on the merchant's clock they are due, and its real-time wait runs on.
ADVANCED_CLOCK_RETRIES_EVERY_SECONDS = 1.0
LEDGER_AUDIT_ASKED_EVERY_SECONDS = 60.0
OUTBOX_LAG_EVERY_SECONDS = 5.0  # payouts_outbox_lag_seconds
MAX_BACKOFF_SECONDS = 5.0
# The relay counts as busy this long after its last round that found rows.
BUSY_FOR_SECONDS = 1.0


@dataclass
class PollPace:
    """The wait between rounds, round start to round start: `busy_interval` while a round found
    rows within the last `busy_for` seconds, `idle_interval` otherwise."""

    busy_interval: float
    idle_interval: float
    busy_for: float = BUSY_FOR_SECONDS
    last_rows_at: float = float("-inf")

    def interval(self, claimed: int, round_started: float) -> float:
        if claimed:
            self.last_rows_at = round_started
        return self.idle_interval if self.idle(round_started) else self.busy_interval

    def idle(self, now: float) -> bool:
        """No round found rows within the last `busy_for` seconds."""
        return now - self.last_rows_at >= self.busy_for


@dataclass
class RelayPacing:
    """How long the relay waits before its next round, from what the last one did: a poll every
    interval of `pace` while rounds find less than a batch, the next round at once after a full
    one, and a wait that doubles (from `first_backoff` up to MAX_BACKOFF_SECONDS) while rounds fail
    or the broker answers nothing."""

    pace: PollPace
    first_backoff: float
    backoff: float = field(init=False)

    def __post_init__(self) -> None:
        self.backoff = self.first_backoff

    def after_round(
        self, result: RoundResult, *, batch_size: int, round_started: float, now: float
    ) -> float:
        interval = self.pace.interval(result.claimed, round_started)  # every round counts
        if result.unanswered and not result.sent:  # the broker takes nothing: back off
            return self._backed_off()
        if result.claimed >= batch_size and result.sent:  # a full batch: more may be waiting
            return 0.0
        self.backoff = self.first_backoff
        # A poll every interval, round start to round start: the round's own time (its
        # publishes' confirms above all) is not added to the wait of the rows committed
        # meanwhile. A round whose every row was refused waits a whole interval after it.
        refused_all = result.claimed > 0 and not result.sent
        elapsed = 0.0 if refused_all else now - round_started
        return max(interval - elapsed, 0.0)

    def after_failure(self) -> float:
        """A round that raised (the database, say): wait, longer each time."""
        return self._backed_off()

    def _backed_off(self) -> float:
        wait = self.backoff
        self.backoff = min(self.backoff * 2, MAX_BACKOFF_SECONDS)
        return wait


@dataclass
class Chore:
    """Housekeeping that the relay runs beside its rounds (keep_house), at once and then every
    `every_seconds`. A chore that fails is logged and tried again after its interval: it never
    sends the relay into its backoff, which would slow the publishing of every message."""

    name: str
    every_seconds: float
    run: Callable[[], Awaitable[object]]
    next_at: float = float("-inf")

    def __post_init__(self) -> None:
        # Its failure counter at 0 from the start: an alert on increase() misses the first
        # failure of a series that did not exist before it.
        HOUSEKEEPING_FAILURES.labels(self.name)

    async def run_if_due(self) -> None:
        if time.monotonic() < self.next_at:
            return
        try:
            await self.run()
        except Exception as error:
            HOUSEKEEPING_FAILURES.labels(self.name).inc()
            log.warning(
                "housekeeping %s failed (%r); again in %.0fs",
                self.name,
                error,
                self.every_seconds,
                exc_info=True,
            )
        self.next_at = time.monotonic() + self.every_seconds


def housekeeping(settings: Settings, sessions: SessionFactory) -> list[Chore]:
    payout_stalled = settings.processor_stalled_retry_seconds
    webhook_stalled = settings.webhook_stalled_retry_seconds
    events_swept = EventsSwept()
    time = MerchantTime.of(settings)
    return [
        Chore("outbox-lag", OUTBOX_LAG_EVERY_SECONDS, lambda: measure_outbox_lag(sessions)),
        Chore(
            "stalled-payouts",
            payout_stalled,
            lambda: resend_stalled_payout_commands(
                sessions,
                stalled_seconds=payout_stalled,
                retry_delay_seconds=settings.processor_retry_delay_seconds,
                time=time,
            ),
        ),
        Chore(
            "stalled-webhook-retries",
            min(STALLED_RETRIES_EVERY_SECONDS, webhook_stalled / 2),
            lambda: resend_stalled_retries(sessions, stalled_seconds=webhook_stalled, time=time),
        ),
        *(
            [
                Chore(
                    "advanced-clock-webhook-retries",
                    ADVANCED_CLOCK_RETRIES_EVERY_SECONDS,
                    lambda: release_retries_due_on_advanced_clocks(sessions),
                )
            ]
            if settings.sandbox_enabled  # test mode: a production merchant has no clock
            else []
        ),
        Chore(
            "stalled-webhook-deliveries",
            min(STALLED_RETRIES_EVERY_SECONDS, webhook_stalled / 2),
            lambda: resend_stalled_deliveries(
                sessions, stalled_seconds=webhook_stalled, swept=events_swept
            ),
        ),
    ]


def clean_up_chore(settings: Settings, sessions: SessionFactory) -> Chore:
    """In a task of its own: a backlog of rows past their retention (a relay down for a day, a
    burst of calls a week ago) takes seconds to delete, which the other chores (a clock's
    webhook retries each second) waited out (housekeeping review)."""
    retention = timedelta(hours=settings.outbox_retention_hours)
    return Chore(
        "clean-up", CLEANUP_EVERY_SECONDS, lambda: clean_up(sessions, outbox_retention=retention)
    )


def ledger_audit(sessions: SessionFactory) -> Chore:
    """Claimed every AUDIT_EVERY by one relay, asked each minute (contracts/ledger_audit.py); in a
    task of its own: at 300,000 payouts it takes 16 s and more, which the other chores (a clock's
    webhook retries each second) would wait out."""
    return Chore("ledger-audit", LEDGER_AUDIT_ASKED_EVERY_SECONDS, lambda: audit_if_due(sessions))


async def keep_house(chores: Sequence[Chore], stop: asyncio.Event) -> None:
    """Run each chore when due, beside the publishing loop (never in its way: a long clean-up or
    sweep does not delay a message), until asked to stop (or cancelled)."""
    while not stop.is_set():
        for chore in chores:
            await chore.run_if_due()
        next_due = min(chore.next_at for chore in chores)
        await _pause(stop, max(next_due - time.monotonic(), 0.0))


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep unless asked to stop first (a wait on the stop event, not a blind sleep)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def _connect(
    amqp_url: str, stop: asyncio.Event
) -> tuple[AbstractRobustConnection, Publisher] | None:
    backoff = 0.2
    while not stop.is_set():
        try:
            return await open_publisher(amqp_url)
        except Exception as error:
            log.warning("RabbitMQ unavailable (%s); retrying in %.1fs", error, backoff)
            await _pause(stop, backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
    return None


async def run_outbox_relay(settings: Settings, stop: asyncio.Event) -> None:
    # Touched by the rounds that ran with the broker connected: not while the relay waits for
    # the migrations or the broker, nor while its rounds fail.
    heartbeat = Heartbeat.at(settings.heartbeat_file)
    heartbeat.clear()
    serve_metrics(settings)
    engine = create_engine(
        settings.database_url,
        pool_size=2,
        timeout_seconds=WORKER_DATABASE_TIMEOUT_SECONDS,
        idle_transaction_seconds=IDLE_TRANSACTION_SECONDS,
    )
    sessions = create_session_factory(engine)
    if not await until_migrated(sessions, "outbox relay", stop):
        await engine.dispose()
        return
    connected = await _connect(settings.amqp_url, stop)
    if connected is None:
        await engine.dispose()
        return
    connection, publisher = connected
    probe = DueProbe(engine)
    relay = OutboxRelay(
        sessions,
        publisher,
        probe,
        batch_size=settings.relay_batch_size,
        max_attempts=settings.relay_max_publish_attempts,
    )
    chores = housekeeping(settings, sessions)
    pacing = RelayPacing(
        PollPace(
            busy_interval=settings.relay_busy_poll_interval_seconds,
            idle_interval=settings.relay_poll_interval_seconds,
        ),
        first_backoff=settings.relay_poll_interval_seconds,
    )
    housekeepers = [
        asyncio.create_task(keep_house(chores, stop), name="relay-housekeeping"),
        asyncio.create_task(
            keep_house([clean_up_chore(settings, sessions)], stop), name="relay-clean-up"
        ),
        asyncio.create_task(keep_house([ledger_audit(sessions)], stop), name="relay-ledger-audit"),
    ]
    log.info("outbox relay started")
    try:
        while not stop.is_set():
            round_started = time.monotonic()
            try:
                result = await relay.relay_once(probe_first=pacing.pace.idle(round_started))
            except Exception as error:
                wait = pacing.after_failure()
                log.warning("relay round failed (%s); retrying in %.2fs", error, wait)
            else:
                if connection.connected.is_set():
                    heartbeat.beat()
                wait = pacing.after_round(
                    result,
                    batch_size=relay.batch_size,
                    round_started=round_started,
                    now=time.monotonic(),
                )
            if wait > 0:
                await _pause(stop, wait)
    finally:
        # A chore under way is one transaction at a time: cancelled, it rolls back.
        for housekeeper in housekeepers:
            housekeeper.cancel()
        await asyncio.gather(*housekeepers, return_exceptions=True)
        await connection.close()
        await probe.aclose()
        await engine.dispose()
        heartbeat.clear()
        log.info("outbox relay stopped")
