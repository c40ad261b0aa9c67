"""What the processor's heartbeat tells its scheduler (Scheduler.note_working: whether a payout
waiting over an hour counts as stuck), through a processor running against the real MariaDB and
RabbitMQ."""

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, update

from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import OutboxMessage
from contracts.messages import ProcessPayout
from contracts.outbox import outbox_row, write_outbox
from contracts.pipeline_health import MAX_OUTBOX_LAG as LAG
from contracts.pipeline_health import UNSENT
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
    async with transaction(sessions) as session:  # others' rows sent, as a running relay would
        await session.execute(update(OutboxMessage).where(UNSENT).values(sent_at=utcnow()))
        # Written a moment ago, as the API writes them (due since the epoch): no lag (diff review)
        await write_outbox(session, [_row()])
        # Refused by the broker two minutes ago, backing off: no lag either (fixes review)
        refused = {"publish_attempts": 1, "next_attempt_at": utcnow() + 2 * LAG}
        await session.execute(
            insert(OutboxMessage).values({**_row(), "created_at": utcnow() - 2 * LAG, **refused})
        )
    processor = create_processor(
        settings.model_copy(update={"heartbeat_file": str(tmp_path / "heartbeat")})
    )
    await processor.start()
    try:
        await eventually(_heard(heard, True), what="the processor working heard")
        async with transaction(sessions) as session:  # the relay down for two minutes
            await session.execute(
                insert(OutboxMessage).values({**_row(), "created_at": utcnow() - 2 * LAG})
            )

        await eventually(_heard(heard, False), what="the relay lagging heard")
        async with transaction(sessions) as session:  # the relay back: everything sent
            await session.execute(update(OutboxMessage).where(UNSENT).values(sent_at=utcnow()))
        await eventually(_heard(heard, True), what="the processor working again heard")
        async with transaction(sessions) as session:  # a refused row, its next try 2 min late
            late = {"publish_attempts": 1, "next_attempt_at": utcnow() - 2 * LAG}
            await session.execute(insert(OutboxMessage).values({**_row(), **late}))

        await eventually(_heard(heard, False), what="the refused row's lag heard")
    finally:
        await processor.stop()


def _row() -> dict[str, Any]:
    """An outbox row as the API writes one (no relay runs here: it stays unsent)."""
    payout_id, merchant_id = str(uuid.uuid4()), str(uuid.uuid4())
    return outbox_row(
        ProcessPayout(payout_id=payout_id, merchant_id=merchant_id),
        exchange="",
        routing_key="nowhere",
        payout_id=payout_id,
        merchant_id=merchant_id,
        correlation_id=None,
    )


def _heard(heard: list[bool], works: bool) -> Callable[[], Awaitable[bool]]:
    """Whether the last check the scheduler heard said `works`; the list emptied first, so a
    check made before the change is not taken for one after it."""
    heard.clear()

    async def last_said() -> bool:
        return bool(heard) and heard[-1] is works

    return last_said
