"""The OpenAPI document names `X-Sandbox-Fault` on every merchant operation. The middleware reads
the header before any endpoint runs, so no endpoint declares it: it is added to the document."""

from typing import Any

from fastapi import FastAPI

from api_service.sandbox.faults import FAULT_HEADER, FAULT_RULE

FAULT_PARAMETER: dict[str, Any] = {
    "name": FAULT_HEADER,
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": (
        f"Sandbox only: inject a fault into this call. The value {FAULT_RULE}. `status` answers "
        "at once and does nothing (429 and 503 carry Retry-After); `drop-connection` closes the "
        "connection unanswered and does nothing; `timeout-after-commit` does the work, commits, "
        "then answers 504: retry with the same X-IDEMPOTENCY-KEY to get the committed answer. "
        "Only a call with a valid X-API-KEY gets a fault; without one it is answered 401 as "
        "usual. 404 in production."
    ),
}


def document_fault_header(app: FastAPI, *, api_prefix: str) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for path, operations in schema["paths"].items():
                if not path.startswith(api_prefix):
                    continue
                for operation in operations.values():
                    operation.setdefault("parameters", []).append(FAULT_PARAMETER)
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]
