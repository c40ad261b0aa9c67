"""The `{success, data, message?}` / `{success, error}` envelope, encoded with orjson."""

from typing import Any, Generic, Literal, TypeVar

import orjson
from pydantic import BaseModel, Field
from starlette.responses import Response

from contracts.db.engine import utcnow
from contracts.wire import TimestampText, format_timestamp

JSON = "application/json"


DataT = TypeVar("DataT")


class SuccessEnvelope(BaseModel, Generic[DataT]):
    """What `success_body` writes; subclass it per route as `XEnvelope(SuccessEnvelope[XView])`
    (the OpenAPI document names the schema after the subclass)."""

    # Required, and a constant: the field a client checks first, and the one that tells a
    # generated client's success envelope from an error one (it was optional in the document).
    success: Literal[True]
    data: DataT
    message: str | None = Field(
        default=None, description="A short note on some writes (`Payout created`); else absent"
    )


class ErrorDetail(BaseModel):
    """What is wrong with one field of the request (dotted for a nested one)."""

    field: str
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] | None = None
    requestId: str
    timestamp: TimestampText


class ErrorEnvelopeSchema(BaseModel):
    success: Literal[False]
    error: ErrorBody


def success_body(data: Any, message: str | None = None) -> bytes:
    envelope: dict[str, Any] = {"success": True, "data": data}
    if message:
        envelope["message"] = message
    return orjson.dumps(envelope)


def error_body(
    code: str, message: str, request_id: str, details: list[dict[str, Any]] | None = None
) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    error["requestId"] = request_id
    error["timestamp"] = format_timestamp(utcnow())
    return orjson.dumps({"success": False, "error": error})


def json_response(
    body: bytes, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(content=body, status_code=status_code, media_type=JSON, headers=headers)
