"""Writing to the transactional outbox: the only way any service emits a message."""

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.engine import utcnow
from contracts.db.models import OutboxMessage, table_of
from contracts.topology import MERCHANT_ID_HEADER, PAYOUT_ID_HEADER, SCHEMA_HEADER
from contracts.wire import WireModel

# The relay claims due rows earliest `next_attempt_at` first: a row never tried is due since the
# epoch, and a row of a payout started several at once (`Payout.in_bulk`: a payroll's chunk) a
# second later. A single payout's messages are published ahead of a payroll's backlog (one
# merchant's 5,000 held another's payout 3 s in the relay), and both ahead of rows backing off.
NEVER_TRIED_DUE_AT = datetime(1970, 1, 1)
IN_BULK_DUE_AT = datetime(1970, 1, 1, 0, 0, 1)


def outbox_row(
    message: WireModel,
    *,
    exchange: str,
    routing_key: str,
    payout_id: str,
    merchant_id: str,
    correlation_id: str | None,
    delay_ms: int | None = None,
    extra_headers: Mapping[str, Any] | None = None,
    body: bytes | None = None,
    in_bulk: bool = False,
) -> dict[str, Any]:
    """The row that publishes `message` (`body`: its JSON when the caller has it already);
    `in_bulk`: of a payout started several at once (IN_BULK_DUE_AT)."""
    return {
        "exchange": exchange,
        "routing_key": routing_key,
        "body": body if body is not None else message.to_json(),
        "headers": {
            PAYOUT_ID_HEADER: payout_id,
            MERCHANT_ID_HEADER: merchant_id,
            SCHEMA_HEADER: type(message).__name__,
            **(extra_headers or {}),
        },
        "correlation_id": correlation_id,
        "delay_ms": delay_ms,
        "created_at": utcnow(),
        "publish_attempts": 0,
        "next_attempt_at": IN_BULK_DUE_AT if in_bulk else NEVER_TRIED_DUE_AT,
    }


_INSERT = insert(table_of(OutboxMessage))  # built once: neither rebuilt nor keyed per call


async def write_outbox(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Every row in one multi-row INSERT (an executemany: the driver sends one statement, and
    the compiled INSERT is the same every time)."""
    if rows:
        await session.execute(_INSERT, rows)
