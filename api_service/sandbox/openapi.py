"""The OpenAPI document names `X-Sandbox-Fault` on every merchant operation. The middleware reads
the header before any endpoint runs, so no endpoint declares it: it is added to the document.
In production the sandbox controls are not documented, nor the header, but for the 404 that a
call carrying it gets."""

from typing import Any

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from api_service.deps import require_sandbox
from api_service.errors import (
    INJECTED_STATUS_ERRORS,
    ApiError,
    GatewayTimeout,
    SandboxDisabled,
    documented_error,
)
from api_service.sandbox.faults import FAULT_HEADER, FAULT_RULE

FAULT_PARAMETER: dict[str, Any] = {
    "name": FAULT_HEADER,
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": (
        f"Sandbox only: inject a fault into this call. The value {FAULT_RULE}. `status` answers "
        "at once and does nothing (429 and 503 carry Retry-After); `drop-connection` sends a "
        "200 status line promising a body, then closes the connection before it, and does "
        "nothing; `timeout-after-commit` does the work, commits, then answers 504: retry with "
        "the same X-IDEMPOTENCY-KEY to get the committed answer. Only a call with a valid "
        "X-API-KEY gets a fault; without one it is answered 401 as usual. 404 in production."
    ),
}


def document_the_sandbox(
    app: FastAPI, *, api_prefix: str, enabled: bool, probes: frozenset[str]
) -> None:
    """In test mode every merchant operation but the `probes` names X-Sandbox-Fault. In
    production the sandbox controls, which answer 404 there, are left out of the document, and
    so is the header; every merchant operation lists the 404 of a call that carries it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            hidden = set() if enabled else _sandbox_only_operations(app)
            for path, operations in schema["paths"].items():
                for method in [method for method in operations if (path, method) in hidden]:
                    del operations[method]
                if path.startswith(api_prefix) and path not in probes:
                    for operation in operations.values():
                        if enabled:
                            operation.setdefault("parameters", []).append(FAULT_PARAMETER)
                        _document_faults(operation["responses"], enabled=enabled)
            schema["paths"] = {path: ops for path, ops in schema["paths"].items() if ops}
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]


def _document_faults(responses: dict[str, Any], *, enabled: bool) -> None:
    """The answers the fault header gets that the operation does not give by itself (the
    PSP's callback gives no 429 of its own: its injected one was undocumented)."""
    errors: tuple[type[ApiError], ...] = (
        (*INJECTED_STATUS_ERRORS.values(), GatewayTimeout) if enabled else (SandboxDisabled,)
    )
    for error in errors:
        responses.setdefault(str(error.status_code), documented_error(error))


def _sandbox_only_operations(app: FastAPI) -> set[tuple[str, str]]:
    """(path, method) of every operation behind `require_sandbox`, as the document names them."""
    return {
        (context.path_format or "", method.lower())
        for context in iter_route_contexts(app.routes)
        if any(
            getattr(dependency, "dependency", None) is require_sandbox
            for dependency in getattr(context, "dependencies", None) or []
        )
        for method in context.methods or ()
    }
