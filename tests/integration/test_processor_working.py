"""What the processor's heartbeat tells its scheduler (Scheduler.note_working: whether a payout
waiting over an hour counts as stuck), through a processor running against the real MariaDB and
RabbitMQ."""

from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, update

from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import OutboxMessage
from contracts.pipeline_health import MAX_OUTBOX_LAG, UNSENT
from contracts.settings import Settings
from processor_service.app import create_processor
from processor_service.scheduler import Scheduler
from tests.support.polling import eventually


async def test_the_processor_works_for_its_scheduler_only_while_the_relay_keeps_up(
    settings: Settings, sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With the outbox relay alone down a night (the processor and its broker up, so working),
    every payout of the night had waited over an hour for it: each counted as stuck, and a
    queue's expiry due in the night was applied before the failure whose release should have
    started the queue (overnight review, left open then)."""
    heard: list[bool] = []
    monkeypatch.setattr(Scheduler, "note_working", lambda _, works: heard.append(works))
    long_due = utcnow() - 2 * MAX_OUTBOX_LAG
    async with transaction(sessions) as session:
        await session.execute(
            insert(OutboxMessage).values(
                exchange="",
                routing_key="nowhere",
                body=b"{}",
                headers={},
                created_at=long_due,
                next_attempt_at=long_due,
            )
        )
    processor = create_processor(
        settings.model_copy(update={"heartbeat_file": str(tmp_path / "heartbeat")})
    )
    await processor.start()
    try:
        await eventually(_heard(heard, False), what="the relay lagging heard")
        async with transaction(sessions) as session:  # sent, as a relay that is back would
            lagging = UNSENT & (OutboxMessage.next_attempt_at < utcnow() - timedelta(seconds=1))
            await session.execute(update(OutboxMessage).where(lagging).values(sent_at=utcnow()))

        await eventually(_heard(heard, True), what="the processor working heard")
    finally:
        await processor.stop()


def _heard(heard: list[bool], works: bool) -> Callable[[], Awaitable[bool]]:
    """Whether the last check the scheduler heard said `works`; the list emptied first, so a
    check made before the change is not taken for one after it."""
    heard.clear()

    async def last_said() -> bool:
        return bool(heard) and heard[-1] is works

    return last_said
