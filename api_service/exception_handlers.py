"""One place renders every error: domain errors, validation errors, outages, the unexpected."""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from api_service.envelope import error_body, json_response
from api_service.errors import ApiError, ServiceUnavailable

log = logging.getLogger("api")

_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE"}


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


def render_api_error(request: Request, error: ApiError) -> Response:
    body = error_body(error.code, error.message, request_id_of(request), error.details)
    return json_response(body, error.status_code, error.headers)


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(part) for part in loc if part not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            details.append({"field": "body", "message": "Malformed JSON"})
            continue
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") == "model_attributes_type":
            message = "must be a JSON object (send Content-Type: application/json)"
        details.append({"field": _field_path(tuple(error.get("loc", ()))), "message": message})
    return details


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return render_api_error(request, exc)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    details = validation_details(exc)
    fields = ", ".join(sorted({d["field"] for d in details}))
    body = error_body(
        "VALIDATION_ERROR", f"Invalid request: {fields}", request_id_of(request), details
    )
    return json_response(body, 400)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
    return json_response(
        error_body(code, str(exc.detail), request_id_of(request)), exc.status_code, exc.headers
    )


async def _on_database_outage(request: Request, exc: Exception) -> Response:
    log.warning("database unavailable: %s", type(exc).__name__)
    return render_api_error(request, ServiceUnavailable("Database unavailable; retry later"))


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", extra={"request_id": request_id_of(request)})
    body = error_body("INTERNAL_ERROR", "Internal server error", request_id_of(request))
    return json_response(body, 500)


def install_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(DBAPIError, _on_database_outage)
    app.add_exception_handler(PoolTimeout, _on_database_outage)
    app.add_exception_handler(ConnectionError, _on_database_outage)
    app.add_exception_handler(Exception, _on_unexpected)
