"""GET /api/v1/requests: the merchant's own recent API calls, newest first (test mode only)."""

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select
from starlette.responses import Response

from api_service.deps import SANDBOX_ONLY, CurrentMerchant, SessionDep
from api_service.envelope import SuccessEnvelope, json_response, success_body
from api_service.errors import AUTH_ERRORS, SandboxDisabled, error_responses
from contracts.db.models import ApiRequestRecord
from contracts.wire import format_timestamp

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
    retryAfterSeconds: int | None
    requestBody: str | None
    responseBody: str | None
    startedAt: str


class ApiRequestPage(BaseModel):
    limit: int
    hasMore: bool
    nextCursor: int | None


class ApiRequestList(BaseModel):
    requests: list[ApiRequestView]
    pagination: ApiRequestPage


class ApiRequestListEnvelope(SuccessEnvelope[ApiRequestList]):
    pass


def request_json(record: ApiRequestRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "requestId": record.request_id,
        "method": record.method,
        "path": record.path,
        "status": record.status,
        "latencyMs": record.latency_ms,
        "idempotencyKey": record.idempotency_key,
        "replayed": record.replayed,
        "fault": record.fault,
        "retryAfterSeconds": record.retry_after_seconds,
        "requestBody": record.request_body,
        "responseBody": record.response_body,
        "startedAt": format_timestamp(record.started_at),
    }


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
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    starting_after: Annotated[int | None, Query(alias="startingAfter", ge=1)] = None,
) -> Response:
    query = select(ApiRequestRecord).where(ApiRequestRecord.merchant_id == merchant.id)
    if starting_after is not None:
        query = query.where(ApiRequestRecord.id < starting_after)
    rows = list(await session.scalars(query.order_by(ApiRequestRecord.id.desc()).limit(limit + 1)))
    page, has_more = rows[:limit], len(rows) > limit
    data = {
        "requests": [request_json(record) for record in page],
        "pagination": {
            "limit": limit,
            "hasMore": has_more,
            "nextCursor": page[-1].id if has_more else None,
        },
    }
    return json_response(success_body(data))
