"""The consumer inbox: a message id is recorded in the transaction that applies the message, so
a redelivered or duplicated message changes nothing the second time."""

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.engine import utcnow
from contracts.db.models import ProcessedMessage


async def first_delivery(session: AsyncSession, *, consumer: str, message_id: str) -> bool:
    """True when this consumer has not applied `message_id` before; the row is written now.

    A concurrent duplicate waits on this row's lock and then sees the key taken.
    """
    try:
        await session.execute(
            insert(ProcessedMessage).values(
                consumer=consumer, message_id=message_id, processed_at=utcnow()
            )
        )
    except IntegrityError:
        return False
    return True
