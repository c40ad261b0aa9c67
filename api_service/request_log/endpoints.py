"""GET /api/v1/requests: the merchant's own API calls of the last REQUEST_LOG_RETENTION, newest
first by when each started (test mode only)."""

import sys
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, and_, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from api_service.deps import SANDBOX_ONLY, CurrentMerchant, PublicIdsDep, SessionDep
from api_service.envelope import SuccessEnvelope, json_response, success_body
from api_service.errors import AUTH_ERRORS, SandboxDisabled, ValidationFailed, error_responses
from contracts.db.engine import utcnow
from contracts.db.models import REQUEST_LOG_RETENTION, ApiRequestRecord
from contracts.public_ids import PublicIds
from contracts.wire import TimestampText, format_timestamp

router = APIRouter(tags=["sandbox"], dependencies=SANDBOX_ONLY)
REQUESTS_PATH = "/requests"


class ApiRequestView(BaseModel):
    id: int
    requestId: str
    method: str
    path: str
    status: int | None
    latencyMs: int
    idempotencyKey: str | None
    replayed: bool
    fault: str | None
    lostStatus: int | None = Field(
        description=(
            "The status the API answered before an injected `timeout-after-commit` replaced it "
            "with 504: 2xx, the work was done; a 4xx, nothing was written"
        )
    )
    retryAfterSeconds: int | None
    requestBody: str | None
    responseBody: str | None
    startedAt: TimestampText


class ApiRequestPage(BaseModel):
    limit: int
    hasMore: bool
    nextCursor: int | None


class ApiRequestList(BaseModel):
    requests: list[ApiRequestView]
    pagination: ApiRequestPage


class ApiRequestListEnvelope(SuccessEnvelope[ApiRequestList]):
    pass


def request_json(record: ApiRequestRecord, public_ids: PublicIds) -> dict[str, Any]:
    return {
        "id": public_ids.public(record.id),  # contracts.public_ids
        "requestId": record.request_id,
        "method": record.method,
        "path": record.path,
        "status": record.status,
        "latencyMs": record.latency_ms,
        "idempotencyKey": record.idempotency_key,
        "replayed": record.replayed,
        "fault": record.fault,
        "lostStatus": record.lost_status,
        "retryAfterSeconds": record.retry_after_seconds,
        "requestBody": record.request_body,
        "responseBody": record.response_body,
        "startedAt": format_timestamp(record.started_at),
    }


async def _oldest_kept(session: AsyncSession) -> int:
    """The id of the oldest call any merchant's log still holds (ids grow with time, and the
    clean-up deletes the oldest): a cursor below it named a call deleted since."""
    oldest = await session.scalar(select(func.min(ApiRequestRecord.id)))
    return sys.maxsize if oldest is None else int(oldest)


async def _after(
    session: AsyncSession, mine: ColumnElement[bool], cursor: int
) -> ColumnElement[bool]:
    """The calls listed after the cursor's: started before it, or at the same time and logged
    before it. (By id alone, a slow call was listed above the quicker ones that started after
    it: a row is logged once its call has answered.)"""
    started_at = await session.scalar(
        select(ApiRequestRecord.started_at).where(mine, ApiRequestRecord.id == cursor)
    )
    if started_at is None:
        if 0 < cursor < await _oldest_kept(session):
            # Its call aged out, and the clean-up deleted it: nothing older is kept either. It
            # was a 400 once the 5-minute clean-up had run, an empty page until then.
            return false()
        raise ValidationFailed.on("startingAfter", "names no call in your request log")
    return or_(
        ApiRequestRecord.started_at < started_at,
        and_(ApiRequestRecord.started_at == started_at, ApiRequestRecord.id < cursor),
    )


@router.get(
    REQUESTS_PATH,
    response_model=ApiRequestListEnvelope,
    responses=error_responses(*AUTH_ERRORS, SandboxDisabled),
    summary="Sandbox: your recent API calls (kept 7 days), newest first",
    description=(
        "Method, path, status, latency, idempotency key, whether the answer was a replay, the "
        "injected fault, and both bodies with account numbers masked. Calls to this endpoint "
        "are not recorded. Page with `startingAfter` = the previous page's `nextCursor`."
    ),
)
async def list_requests(
    merchant: CurrentMerchant,
    session: SessionDep,
    public_ids: PublicIdsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    starting_after: Annotated[int | None, Query(alias="startingAfter", ge=1)] = None,
) -> Response:
    mine = ApiRequestRecord.merchant_id == merchant.id
    query = select(ApiRequestRecord).where(  # ix_api_requests_merchant_started
        mine, ApiRequestRecord.started_at >= utcnow() - REQUEST_LOG_RETENTION
    )
    if starting_after is not None:
        cursor = public_ids.internal(starting_after) or 0  # 0: names no call, a 400
        query = query.where(await _after(session, mine, cursor))
    newest_first = (ApiRequestRecord.started_at.desc(), ApiRequestRecord.id.desc())
    rows = list(await session.scalars(query.order_by(*newest_first).limit(limit + 1)))
    page, has_more = rows[:limit], len(rows) > limit
    data = {
        "requests": [request_json(record, public_ids) for record in page],
        "pagination": {
            "limit": limit,
            "hasMore": has_more,
            "nextCursor": public_ids.public(page[-1].id) if has_more else None,
        },
    }
    return json_response(success_body(data))
