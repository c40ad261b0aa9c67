"""Deleting what has served its purpose: sent outbox rows, old inbox rows, expired idempotency
keys, old request log rows, scheduled actions applied long ago. Small batches, so no long lock
is ever held on a hot table."""

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Delete, and_, delete, not_

from contracts.db.engine import DATABASE_NOW, SessionFactory, transaction, utcnow
from contracts.db.models import (
    REQUEST_LOG_RETENTION,
    ApiRequestRecord,
    Base,
    IdempotencyKey,
    OutboxMessage,
    ProcessedMessage,
    ScheduledAction,
)
from contracts.pipeline_health import failed_action_still_awaited

BATCH = 5000
# Redeliveries older than this are still harmless: every transition is guarded by status.
INBOX_RETENTION = timedelta(days=7)
# An applied action is only history (reconcile and the sandbox timeline read recent ones), but
# for a failed one its payout still waits for: reconcile's alarm about funds held (it was
# deleted after 7 days, the payout IN_REVIEW with its funds held and no line naming it).
APPLIED_ACTION_RETENTION = timedelta(days=7)


def _batch_delete(table: type[Base], condition: ColumnElement[bool]) -> Delete:
    """No session to synchronize: by default the ORM read back every row a delete it cannot
    judge in Python removes (RETURNING on MariaDB; on MySQL 8, which has none, a SELECT of
    every matching row's key, without the batch's LIMIT, before each batch) (MySQL 8 review)."""
    return (
        delete(table)
        .where(condition)
        .with_dialect_options(mysql_limit=BATCH)
        .execution_options(synchronize_session=False)
    )


async def _delete_in_batches(sessions: SessionFactory, statement: Delete) -> int:
    deleted = 0
    while True:
        async with transaction(sessions) as session:
            count = int((await session.execute(statement)).rowcount)  # type: ignore[attr-defined]
        deleted += count
        if count < BATCH:
            return deleted


def cleanup_deletes(now: datetime, *, outbox_retention: timedelta) -> tuple[Delete, ...]:
    """One batch delete per table, each a range on an index (`ix_outbox_claim` leads with
    sent_at, `ix_processed_messages_processed_at`, `ix_idempotency_expires`,
    `ix_api_requests_started_at`, `ix_scheduled_actions_claim` leads with applied_at)."""
    return (
        _batch_delete(OutboxMessage, OutboxMessage.sent_at < now - outbox_retention),
        _batch_delete(ProcessedMessage, ProcessedMessage.processed_at < now - INBOX_RETENTION),
        # The API stamps and judges a key's expiry on the database's clock, not on this host's.
        _batch_delete(IdempotencyKey, IdempotencyKey.expires_at < DATABASE_NOW),
        _batch_delete(ApiRequestRecord, ApiRequestRecord.started_at < now - REQUEST_LOG_RETENTION),
        _batch_delete(
            ScheduledAction,
            and_(
                ScheduledAction.applied_at < now - APPLIED_ACTION_RETENTION,
                not_(failed_action_still_awaited()),
            ),
        ),
    )


async def clean_up(sessions: SessionFactory, *, outbox_retention: timedelta) -> int:
    """Rows deleted in all tables."""
    statements = cleanup_deletes(utcnow(), outbox_retention=outbox_retention)
    return sum([await _delete_in_batches(sessions, statement) for statement in statements])
