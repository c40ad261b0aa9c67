"""Writing to the transactional outbox: the only way any service emits a message."""

from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.engine import utcnow
from contracts.db.models import OutboxMessage
from contracts.topology import MERCHANT_ID_HEADER, PAYOUT_ID_HEADER, SCHEMA_HEADER
from contracts.wire import WireModel


async def add_to_outbox(
    session: AsyncSession,
    message: WireModel,
    *,
    exchange: str,
    routing_key: str,
    payout_id: str,
    merchant_id: str,
    correlation_id: str | None,
    delay_ms: int | None = None,
    extra_headers: Mapping[str, Any] | None = None,
) -> None:
    await session.execute(
        insert(OutboxMessage).values(
            exchange=exchange,
            routing_key=routing_key,
            body=message.to_json(),
            headers={
                PAYOUT_ID_HEADER: payout_id,
                MERCHANT_ID_HEADER: merchant_id,
                SCHEMA_HEADER: type(message).__name__,
                **(extra_headers or {}),
            },
            correlation_id=correlation_id,
            delay_ms=delay_ms,
            created_at=utcnow(),
            publish_attempts=0,
        )
    )
