"""The `payouts outbox-relay` process: poll, publish, back off while a dependency is down,
clean up and expire QUEUED payouts now and then, stop cleanly on SIGTERM (the round in flight
finishes).

It polls every `relay_busy_poll_interval_seconds` (15 ms) while rows keep coming, and every
`relay_poll_interval_seconds` (50 ms) once the outbox has been empty for a second: a payout
crosses the relay twice on its way to its last webhook, so the poll's wait is on that path twice,
and an idle sandbox is not polled sixty times a second."""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from aio_pika.abc import AbstractRobustConnection

from contracts.db.engine import create_engine, create_session_factory
from contracts.metrics_server import serve_metrics
from contracts.settings import Settings
from processor_service.housekeeping import clean_up, expire_queued
from processor_service.outbox_relay import OutboxRelay, Publisher, open_publisher

log = logging.getLogger("outbox-relay")

CLEANUP_EVERY_SECONDS = 300.0
# QUEUED payouts expire within this long after their expiry time (72 h by default).
EXPIRE_QUEUED_EVERY_SECONDS = 60.0
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
        busy = round_started - self.last_rows_at < self.busy_for
        return self.busy_interval if busy else self.idle_interval


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
    serve_metrics(settings.metrics_port)
    engine = create_engine(settings.database_url, pool_size=2)
    sessions = create_session_factory(engine)
    connected = await _connect(settings.amqp_url, stop)
    if connected is None:
        await engine.dispose()
        return
    connection, publisher = connected
    relay = OutboxRelay(
        sessions,
        publisher,
        batch_size=settings.relay_batch_size,
        max_attempts=settings.relay_max_publish_attempts,
    )
    retention = timedelta(hours=settings.outbox_retention_hours)
    pace = PollPace(
        busy_interval=settings.relay_busy_poll_interval_seconds,
        idle_interval=settings.relay_poll_interval_seconds,
    )
    backoff = settings.relay_poll_interval_seconds
    queued_expiry = timedelta(hours=settings.queued_expiry_hours)
    next_cleanup = next_expiry = time.monotonic()
    log.info("outbox relay started")
    try:
        while not stop.is_set():
            round_started = time.monotonic()
            try:
                result = await relay.relay_once()
                if time.monotonic() >= next_cleanup:
                    await clean_up(sessions, outbox_retention=retention)
                    next_cleanup = time.monotonic() + CLEANUP_EVERY_SECONDS
                if time.monotonic() >= next_expiry:
                    await expire_queued(sessions, expiry=queued_expiry)
                    next_expiry = time.monotonic() + EXPIRE_QUEUED_EVERY_SECONDS
            except Exception as error:
                log.warning("relay round failed (%s); retrying in %.2fs", error, backoff)
                await _pause(stop, backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            interval = pace.interval(result.claimed, round_started)  # every round counts
            if result.unanswered and not result.sent:  # the broker takes nothing: back off
                await _pause(stop, backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            elif result.claimed < relay.batch_size or not result.sent:
                backoff = settings.relay_poll_interval_seconds
                # A poll every interval, round start to round start: the round's own time (its
                # publishes' confirms above all) is not added to the wait of the rows committed
                # meanwhile. A round whose every row was refused waits a whole interval after it.
                refused_all = result.claimed > 0 and not result.sent
                elapsed = 0.0 if refused_all else time.monotonic() - round_started
                await _pause(stop, max(interval - elapsed, 0.0))
    finally:
        await connection.close()
        await engine.dispose()
        log.info("outbox relay stopped")
