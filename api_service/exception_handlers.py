"""One place renders every error: domain errors, validation errors, outages, the unexpected."""

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_service.client_turns import note_database_refusal
from api_service.database_time import DatabaseTimeUsedUp
from api_service.envelope import error_body, json_response
from api_service.errors import (
    DATABASE_BUSY,
    DATABASE_NOT_MIGRATED,
    ApiError,
    ValidationFailed,
    database_refusal,
)
from api_service.metrics import DATABASE_REFUSALS, DatabaseRefusalReason
from api_service.middleware import NO_SNIFFING, REQUEST_ID_HEADER, HtmlPages
from contracts.db.outages import database_error_code
from contracts.logging import redact

log = logging.getLogger("api")

_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE"}


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


def render_api_error(request: Request, error: ApiError) -> Response:
    body = error_body(error.code, error.message, request_id_of(request), error.details)
    return json_response(body, error.status_code, error.headers)


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return render_api_error(request, exc)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    """Query and path parameters; JSON bodies are parsed by the endpoints (request_body.py)."""
    assert isinstance(exc, RequestValidationError)
    return render_api_error(request, ValidationFailed.from_pydantic(exc.errors()))


def _allowed_methods(request: Request) -> str:
    """The methods of the routes of the path's template (the first route matching the path
    names it: /payouts/batch, not /payouts/{payout_id}), and HEAD with GET (HeadAsGetMiddleware).
    Starlette's 405 names only the first route's (`Allow: POST` on /payouts, which also answers
    GET); FastAPI keeps an included router's routes behind it, reached through route contexts."""
    path = request.scope["path"]
    matching = [
        context
        for context in iter_route_contexts(request.app.routes)
        if context.methods
        and (pattern := getattr(context, "path_regex", None)) is not None
        and pattern.match(path)
    ]
    methods: set[str] = set()
    for context in matching:
        if context.path_format == matching[0].path_format:
            methods |= context.methods or set()
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def _on_http_error(
    html_pages: HtmlPages | None,
) -> Callable[[Request, Exception], Awaitable[Response]]:
    """No route, or none for the method (Starlette's HTTPException): the API's error envelope,
    but a page under the dashboard's paths (a browser shows the address bar's GET of a form's
    action, or a mistyped address: it showed raw JSON)."""

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
        headers = dict(exc.headers) if exc.headers else {}
        if exc.status_code == 405:
            # No route of ours at the path: a mounted app's (the dashboard's static files).
            mounted = headers.get("Allow", "GET, HEAD")
            headers["Allow"] = _allowed_methods(request) or mounted
        if (pages := _pages_of(request, html_pages)) is not None:
            response = pages.render(exc.status_code, str(exc.detail), code)
            response.headers.update(headers)
            return response
        body = error_body(code, str(exc.detail), request_id_of(request))
        return json_response(body, exc.status_code, headers or None)

    return on_http_error


def _on_database_error(
    html_pages: HtmlPages | None,
) -> Callable[[Request, Exception], Awaitable[Response]]:
    """503 only for a real outage, or a database not migrated yet (database_refusal); any other
    database error is a bug, answered with a 500. A dashboard page's is a page (it was the
    API's JSON, shown as the page: dashboard outages review)."""

    on_unexpected = _on_unexpected(html_pages)

    async def on_database_error(request: Request, exc: Exception) -> Response:
        refusal = database_refusal(exc)
        if refusal is None:
            return await on_unexpected(request, exc)
        record_database_refusal(request.scope["state"], refusal, exc, _ids_of(request))
        if (pages := _pages_of(request, html_pages)) is not None:
            return pages.refusal(refusal)
        return render_api_error(request, refusal)

    return on_database_error


def _pages_of(request: Request, html_pages: HtmlPages | None) -> HtmlPages | None:
    """The dashboard's pages when the request is for one of them."""
    if html_pages is not None and request.url.path.startswith(html_pages.prefix):
        return html_pages
    return None


_REFUSAL_REASONS: dict[str, DatabaseRefusalReason] = {
    DATABASE_BUSY: "row_held",
    DATABASE_NOT_MIGRATED: "not_migrated",
}


def record_database_refusal(
    scope_state: Mapping[str, Any],
    refusal: ApiError,
    error: Exception,
    ids: Mapping[str, str | None],
) -> None:
    """A call refused for the database's state: noted on its turn, for its client's calls
    waiting behind it (client_turns.py), counted by reason (row_held, unavailable, not_migrated),
    and logged: the refusal, the error's class and number (1205: a lock wait), and what the
    server or the driver said of it (a read timeout and a connection the server closed are both
    2013). An outage's words carry no values of a statement (those are hidden)."""
    note_database_refusal(scope_state, refusal)
    DATABASE_REFUSALS.labels(_REFUSAL_REASONS.get(refusal.message, "unavailable")).inc()
    if isinstance(error, DBAPIError) and error.orig is not None:
        said = f"{type(error).__name__} {database_error_code(error)}: {_words_of(error.orig)}"
    else:
        said = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    log.warning("%s: %s", refusal.message, said, extra=dict(ids))


def _words_of(driver_error: BaseException) -> str:
    """The message of a driver's error, whose args are (number, message)."""
    return str(driver_error.args[-1]) if driver_error.args else str(driver_error)


def _ids_of(request: Request) -> dict[str, str | None]:
    """The ids a handler's line is about beyond the request's: its merchant, and the payout its
    path names (bound while the route ran, they were gone by the time the handler logged)."""
    payout_id = request.path_params.get("payout_id")  # as sent: masked like any text
    return {
        "merchant_id": getattr(request.state, "merchant_id", None),
        "payout_id": redact(payout_id) if isinstance(payout_id, str) else None,
    }


def _on_unexpected(
    html_pages: HtmlPages | None,
) -> Callable[[Request, Exception], Awaitable[Response]]:
    """A logged 500; a dashboard page's is a page."""

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # Run outside every middleware (as Starlette's handler of Exception), the request id
        # header is set here.
        request_id = request_id_of(request)
        log.exception("unhandled error", extra={"request_id": request_id, **_ids_of(request)})
        headers = {REQUEST_ID_HEADER: request_id, **NO_SNIFFING}
        if (pages := _pages_of(request, html_pages)) is not None:
            page = pages.render(500, "Internal server error", "INTERNAL_ERROR")
            page.headers.update(headers)
            return page
        body = error_body("INTERNAL_ERROR", "Internal server error", request_id)
        return json_response(body, 500, headers)

    return on_unexpected


class UnexpectedErrorMiddleware:
    """Innermost of the middlewares: an error no handler answered is answered here, a logged
    500, and goes no further. As Starlette's handler of Exception alone, it was answered and
    then raised again to the server, which logged it a second time, without its request id.
    (That handler stays, for an error in a middleware itself.)"""

    def __init__(self, app: ASGIApp, html_pages: HtmlPages | None = None) -> None:
        self.app = app
        self.on_unexpected = _on_unexpected(html_pages)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answered = False

        async def noting_the_answer(message: Message) -> None:
            nonlocal answered
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, noting_the_answer)
        except ClientDisconnect:
            # The client went away while its body came: nobody to answer, nothing failed (it
            # was an ERROR line and a 500; metrics count it 499, as nginx names it).
            log.info("client disconnected before its request was read")
        except Exception as error:
            if answered:  # too late to answer: the server closes the connection, and logs it
                raise
            response = await self.on_unexpected(Request(scope), error)
            await response(scope, receive, send)


def install_exception_handlers(app: FastAPI, html_pages: HtmlPages | None) -> None:
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error(html_pages))
    on_database_error = _on_database_error(html_pages)
    for database_error in (DBAPIError, PoolTimeout, ConnectionError, DatabaseTimeUsedUp):
        app.add_exception_handler(database_error, on_database_error)
    app.add_exception_handler(Exception, _on_unexpected(html_pages))
    # Before any other: the innermost.
    app.add_middleware(UnexpectedErrorMiddleware, html_pages=html_pages)
