"""Domain errors of the REST API, each mapped to the contract's code and HTTP status."""

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from pydantic_core import ErrorDetails
from sqlalchemy.exc import DBAPIError

from api_service.envelope import ErrorEnvelopeSchema
from contracts.db.outages import (
    TABLE_MISSING,
    database_error_code,
    is_outage,
    is_row_lock_failure,
)


class ApiError(Exception):
    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "BAD_REQUEST"
    default_message: ClassVar[str] = "Bad request"
    # The request's field the refusal is about, named in `details` as a validation error's is.
    field: ClassVar[str | None] = None

    def __init__(
        self,
        message: str | None = None,
        *,
        field: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """`field`: the refused field, where the class's own `field` depends on the request."""
        self.message = message or self.default_message
        field = field or self.field
        if details is None and field is not None:
            details = [{"field": field, "message": self.message}]
        self.details = details
        self.headers = headers
        super().__init__(self.message)


class JudgedOnStaleState(Exception):
    """Work judged on a consistent read that another request's commit made stale before the work
    was written (a payroll's references or balance). Not an answer: the request runs again in a
    fresh transaction, which sees that commit; `refusal` answers once the retries run out."""

    def __init__(self, refusal: ApiError) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


class ValidationFailed(ApiError):
    code = "VALIDATION_ERROR"
    default_message = "Request validation failed"

    @classmethod
    def on(cls, field: str, message: str) -> "ValidationFailed":
        return cls.on_each([(field, message)])

    @classmethod
    def on_each(cls, problems: Sequence[tuple[str, str]]) -> "ValidationFailed":
        """One detail per (field, message), in order."""
        return cls(
            "; ".join(f"{field} {message}" for field, message in problems),
            details=[{"field": field, "message": message} for field, message in problems],
        )

    def with_details_of(self, other: "ValidationFailed") -> "ValidationFailed":
        """This refusal, and `other`'s details on the fields it names no problem of."""
        named = {detail["field"] for detail in self.details or []}
        more = [detail for detail in other.details or [] if detail["field"] not in named]
        return ValidationFailed.naming([*(self.details or []), *more]) if more else self

    @classmethod
    def from_pydantic(cls, errors: Iterable[ErrorDetails]) -> "ValidationFailed":
        """One detail per pydantic error, naming the field as the client spelled it."""
        return cls.naming([_detail(error) for error in errors])

    @classmethod
    def naming(cls, details: list[dict[str, str]]) -> "ValidationFailed":
        fields = ", ".join(sorted({detail["field"] for detail in details}))
        return cls(f"Invalid request: {fields}", details=details)


def _detail(error: ErrorDetails) -> dict[str, str]:
    if error["type"] == "json_invalid":
        return {"field": "body", "message": "Malformed JSON"}
    if error["type"] in ("model_attributes_type", "model_type"):
        return {"field": _field_path(error["loc"]), "message": "must be a JSON object"}
    if error["type"] == "extra_forbidden":
        return {"field": _field_path(error["loc"]), "message": "is not a field of this body"}
    if error["type"] in ("too_long", "too_short") and isinstance(error.get("input"), str):
        return {"field": _field_path(error["loc"]), "message": _length_refused(error)}
    return {
        "field": _field_path(error["loc"]),
        "message": error["msg"].removeprefix("Value error, "),
    }


def _length_refused(error: ErrorDetails) -> str:
    """In characters: a text checked after a validator of ours (HumanText) was refused in
    pydantic's words for a list, "at most 100 items" (bene review)."""
    limits = error.get("ctx", {})
    if error["type"] == "too_long":
        return f"must be at most {limits['max_length']} characters, not {limits['actual_length']}"
    if limits["min_length"] == 1:
        return "must not be empty"
    return f"must be at least {limits['min_length']} characters, not {limits['actual_length']}"


def _field_path(loc: Sequence[str | int]) -> str:
    parts = [str(part) for part in loc if part not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


class MissingApiKey(ApiError):
    status_code = 401
    code = "MISSING_API_KEY"
    default_message = "X-API-KEY header is required"


class InvalidApiKey(ApiError):
    status_code = 401
    code = "INVALID_API_KEY"
    default_message = "API key is invalid or inactive"


class InvalidMetricsToken(ApiError):
    status_code = 401
    code = "INVALID_METRICS_TOKEN"
    default_message = "/metrics takes Authorization: Bearer <PAYOUTS_METRICS_TOKEN>"


class InvalidSignature(ApiError):
    status_code = 401
    code = "INVALID_SIGNATURE"
    default_message = "X-PSP-Signature is missing or does not match the body"


class NotFound(ApiError):
    status_code = 404
    code = "NOT_FOUND"
    default_message = "Resource not found"


class MissingIdempotencyKey(ApiError):
    code = "MISSING_IDEMPOTENCY_KEY"
    default_message = "X-IDEMPOTENCY-KEY header is required on POST requests"
    field = "X-IDEMPOTENCY-KEY"


class InvalidIdempotencyKey(ApiError):
    code = "INVALID_IDEMPOTENCY_KEY"
    default_message = "X-IDEMPOTENCY-KEY must be a UUID"
    field = "X-IDEMPOTENCY-KEY"


class IdempotencyKeyInUse(ApiError):
    status_code = 409
    code = "IDEMPOTENCY_KEY_IN_USE"
    default_message = "A request with this idempotency key is still being processed"


class IdempotencyKeyReused(ApiError):
    status_code = 422
    code = "IDEMPOTENCY_KEY_REUSED"
    default_message = "This idempotency key was used with a different request"


class IdempotencyQuotaExceeded(ApiError):
    status_code = 429
    code = "IDEMPOTENCY_QUOTA_EXCEEDED"
    default_message = "Too many idempotency keys stored today for this merchant"


class DuplicateReference(ApiError):
    status_code = 409
    code = "DUPLICATE_REFERENCE"
    default_message = "A payout with this merchantReference already exists"
    field = "merchantReference"


class InvalidStatus(ApiError):
    status_code = 409
    code = "INVALID_STATUS"
    default_message = "The payout is not in a status that allows this operation"


class OutcomeNotAppliedYet(InvalidStatus):
    """Reinitiate: the payout's FAILED outcome is accepted (an IPN, a simulation) and the
    processor has yet to apply it, so a moment later the payout is FAILED. Never stored under
    the idempotency key: stored, the same request retried got this answer back for ever."""

    default_message = (
        "A FAILED outcome of this payout is accepted and being applied: retry in a moment"
    )

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "1"})


class InvalidTransition(ApiError):
    status_code = 409
    code = "INVALID_TRANSITION"
    default_message = "This status transition is not allowed"


class EventIdReused(ApiError):
    status_code = 422
    code = "EVENT_ID_REUSED"
    default_message = "This eventId was already sent for another payout"
    field = "eventId"


class StalePspReference(ApiError):
    status_code = 409
    code = "STALE_PSP_REFERENCE"
    default_message = (
        "pspReference names an earlier attempt of this payout (before it was reinitiated)"
    )
    field = "pspReference"


class PspReferenceOfAnotherPayout(ApiError):
    status_code = 409
    code = "PSP_REFERENCE_OF_ANOTHER_PAYOUT"
    default_message = "pspReference names another payout: a PSP reference names one payout"
    field = "pspReference"


class InsufficientBalance(ApiError):
    status_code = 422
    code = "INSUFFICIENT_BALANCE"
    default_message = "Available balance is lower than the payout amount"
    field = "amount"


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "PAYLOAD_TOO_LARGE"
    default_message = "Request body exceeds 64 KiB"


class UnsupportedMediaType(ApiError):
    status_code = 415
    code = "UNSUPPORTED_MEDIA_TYPE"
    default_message = "Send the body as JSON, with Content-Type: application/json"


class SandboxDisabled(ApiError):
    status_code = 404
    code = "NOT_FOUND"
    default_message = "Sandbox controls are disabled in production mode"


class RateLimited(ApiError):
    status_code = 429
    code = "RATE_LIMITED"
    default_message = "Too many requests for this API key"


class ServiceUnavailable(ApiError):
    status_code = 503
    code = "SERVICE_UNAVAILABLE"
    default_message = "A dependency is unavailable; retry later"


DATABASE_UNAVAILABLE = "Database unavailable; retry later"
DATABASE_NOT_MIGRATED = "Database not migrated yet (payouts migrate); retry later"
DATABASE_BUSY = "Another operation holds what this call needs; retry shortly"


def database_refusal(error: Exception) -> ApiError | None:
    """The answer to a database error that is no bug: an outage, or a database `payouts migrate`
    has yet to run on (/ready says `not_migrated`; each merchant call was a logged 500,
    lifecycle review), both a 503 to retry; a row another transaction held past the lock wait,
    a 503 saying so (it said "Database unavailable" while /ready said the database was ok:
    truth review). None: a bug, a 500."""
    if isinstance(error, DBAPIError) and database_error_code(error) == TABLE_MISSING:
        return ServiceUnavailable(DATABASE_NOT_MIGRATED)
    if is_row_lock_failure(error):
        return ServiceUnavailable(DATABASE_BUSY)
    return ServiceUnavailable(DATABASE_UNAVAILABLE) if is_outage(error) else None


# What the auth dependency can answer: every authenticated operation documents all three.
AUTH_ERRORS: tuple[type[ApiError], ...] = (MissingApiKey, InvalidApiKey, RateLimited)
IDEMPOTENCY_ERRORS: tuple[type[ApiError], ...] = (
    MissingIdempotencyKey,
    InvalidIdempotencyKey,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    IdempotencyQuotaExceeded,
    PayloadTooLarge,
    UnsupportedMediaType,
)


def _retry_after(description: str, *, required: bool) -> dict[str, Any]:
    return {
        "Retry-After": {
            "description": description,
            "required": required,
            "schema": {"type": "integer", "minimum": 1},
        }
    }


# Every 429 says when to come back; some 409s and 503s do too.
_HEADERS_BY_STATUS: dict[int, dict[str, Any]] = {
    409: _retry_after(
        "Seconds to wait before retrying, when the conflict passes by itself (a reinitiate "
        "while the payout's FAILED outcome is being applied)",
        required=False,
    ),
    429: _retry_after("Seconds to wait before retrying", required=True),
    503: _retry_after(
        "Seconds to wait before retrying, on a 503 a sandbox fault injected (a dependency's "
        "503 has none)",
        required=False,
    ),
}


ERROR_ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelopeSchema"}


def documented_error(error: type[ApiError]) -> dict[str, Any]:
    """An error answer as the OpenAPI document lists it, added to a built document."""
    answer: dict[str, Any] = {
        "description": error.code,
        "content": {"application/json": {"schema": ERROR_ENVELOPE}},
    }
    if error.status_code in _HEADERS_BY_STATUS:
        answer["headers"] = _HEADERS_BY_STATUS[error.status_code]
    return answer


def error_responses(*errors: type[ApiError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for an endpoint: one entry per status, listing the codes."""
    documented: tuple[type[ApiError], ...] = (*errors, ValidationFailed, ServiceUnavailable)
    by_status: dict[int, list[str]] = {}
    for error in documented:
        by_status.setdefault(error.status_code, []).append(error.code)
    responses: dict[int | str, dict[str, Any]] = {}
    for status, codes in sorted(by_status.items()):
        response: dict[str, Any] = {
            "model": ErrorEnvelopeSchema,
            "description": " | ".join(sorted(set(codes))),
        }
        if status in _HEADERS_BY_STATUS:
            response["headers"] = _HEADERS_BY_STATUS[status]
        responses[status] = response
    return responses


class InjectedServerError(ApiError):
    """Sandbox: `X-Sandbox-Fault: status=500`."""

    status_code = 500
    code = "INTERNAL_ERROR"
    default_message = "Injected fault: status=500"


class GatewayTimeout(ApiError):
    """Sandbox: `X-Sandbox-Fault: timeout-after-commit` (the work was done and committed)."""

    status_code = 504
    code = "GATEWAY_TIMEOUT"
    default_message = "Injected fault: timeout-after-commit"


# The answer of each status `X-Sandbox-Fault: status=<n>` can inject.
INJECTED_STATUS_ERRORS: dict[int, type[ApiError]] = {
    429: RateLimited,
    500: InjectedServerError,
    503: ServiceUnavailable,
}
