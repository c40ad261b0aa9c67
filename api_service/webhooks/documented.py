"""The webhook a merchant's endpoint receives, in the OpenAPI document's `webhooks` (OpenAPI
3.1): its body (PayoutEventView, as GET /events answers it) and the headers
contracts.webhook_signing makes. Neither document described them: a client generated from the
OpenAPI document had the body only as an answer of GET /events, and no header at all. Nothing
serves this operation; it is written out rather than declared with parameters, which FastAPI
would document as what it validates (a second, input schema of the body, and a 422)."""

from typing import Any

from fastapi import FastAPI, Response

from contracts.domain.statuses import LEGACY_EVENT_NAMES
from contracts.webhook_signing import (
    ID_HEADER,
    LEGACY_EVENT_HEADER,
    LEGACY_SIGNATURE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
)

WEBHOOK_NAME = "payout-event"


def _header(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": True,
        "description": description,
        "schema": schema,
    }


_TEXT = {"type": "string"}
_HEADERS = [
    _header(ID_HEADER, "The event's id, the same on every attempt and resend: dedupe on it", _TEXT),
    _header(
        TIMESTAMP_HEADER,
        "Unix seconds of this attempt (signed: refuse one too old)",
        {"type": "integer"},
    ),
    _header(
        SIGNATURE_HEADER,
        "Standard Webhooks: `v1,<base64 HMAC-SHA256>` of `id.timestamp.body` with your `whsec_` "
        "secret; during a rotation's grace two space-separated entries, the current secret's "
        "first (read at most 2 s old: just after a rotation, the secrets from before it)",
        _TEXT,
    ),
    _header(
        LEGACY_SIGNATURE_HEADER,
        "The original mock's: hex HMAC-SHA256 of the body keyed with the whole `whsec_...` "
        "string (the current secret only, read at most 2 s old)",
        _TEXT,
    ),
    _header(
        LEGACY_EVENT_HEADER,
        "The original mock's event name (the body's `event`)",
        {"type": "string", "enum": list(LEGACY_EVENT_NAMES)},
    ),
]
_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PayoutEventView"}}},
}


def document_the_webhook(app: FastAPI) -> None:
    @app.webhooks.post(
        WEBHOOK_NAME,
        summary="A payout's status changed",
        response_class=Response,
        responses={
            200: {
                "description": "Any 2xx within the timeout (10 s) is a delivery; anything else, "
                "or no status in time, is a failure, retried on the ladder"
            }
        },
        openapi_extra={"parameters": _HEADERS, "requestBody": _BODY},
    )
    def payout_event() -> None:
        """Sent to your webhook endpoint for each status change of a payout (`type`), carrying
        the payout as it was at that change."""
