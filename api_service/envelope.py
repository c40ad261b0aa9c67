"""The `{success, data}` / `{success, error}` envelope, encoded with orjson."""

from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.responses import Response

JSON = "application/json"


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None
    requestId: str
    timestamp: str


class ErrorEnvelopeSchema(BaseModel):
    success: bool = False
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
    error["timestamp"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return orjson.dumps({"success": False, "error": error})


def json_response(
    body: bytes, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(content=body, status_code=status_code, media_type=JSON, headers=headers)
