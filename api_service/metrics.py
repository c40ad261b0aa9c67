"""Prometheus metrics of the API: requests by route template and status, latency histograms,
failed authentications. Served at /metrics: with several uvicorn workers (docker-compose.yml
runs 2), every worker's, added up, whichever worker answers the scrape (prometheus_client's
multiprocess mode). Each scrape saw only its own worker's: the counters an operator alarms on
undercounted, and went down from one scrape to the next (to Prometheus, a counter reset)."""

import hmac
import os
import re
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, get_args

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_service.errors import InvalidMetricsToken
from contracts.settings import Environment, Settings

# Any other method (the server's parser takes UNSUBSCRIBE, MKCALENDAR...) is counted as OTHER.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REQUESTS = Counter(
    "payouts_api_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
LATENCY = Histogram(
    "payouts_api_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    # Up to the longest injected latency (30 s; a clock advance waits up to 60 s): they all
    # fell in +Inf past 5 s.
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
FAILED_AUTHENTICATIONS = Counter(
    "payouts_api_failed_authentications_total",
    "Requests refused for their credentials: a missing or unknown API key (missing, invalid), "
    "a PSP callback whose signature is missing or wrong (psp_signature), a dashboard operator "
    "sign-in with the wrong token (operator_token)",
    ["reason"],
)
RefusalReason = Literal["missing", "invalid", "psp_signature", "operator_token"]
for _reason in get_args(RefusalReason):  # each at 0 from the start: increase() sees the first
    FAILED_AUTHENTICATIONS.labels(_reason)
INJECTED_FAULTS = Counter(
    "payouts_api_injected_faults_total",
    "Sandbox faults injected into merchant API calls (X-Sandbox-Fault or PUT /sandbox/faults)",
    ["fault", "source"],
)
DATABASE_REFUSALS = Counter(
    "payouts_api_database_refusals_total",
    "API calls the database refused, each answered 503: a row another operation held past the "
    "lock wait, or a deadlock (row_held); the database down, hanging, read-only, out of space "
    "or out of the call's time (unavailable); or not migrated (not_migrated). The calls refused "
    "behind them while waiting their turn are not counted",
    ["reason"],
)
REQUEST_LOG_ROWS_LEFT_OUT = Counter(
    "payouts_api_request_log_rows_left_out_total",
    "Calls left out of the merchants' request log: MAX_QUEUED rows were waiting already (the "
    "database away for long)",
)
DatabaseRefusalReason = Literal["row_held", "unavailable", "not_migrated"]
for _refusal in get_args(DatabaseRefusalReason):
    DATABASE_REFUSALS.labels(_refusal)
UNMATCHED_ROUTE = "<unmatched>"
CLIENT_CLOSED = 499  # nginx's status for a request whose client went away first
# The status the HTTP layer answered a request with while the app still read it (a body that
# came too slowly: 408), put in its scope: the app, told the client is gone, answers nothing.
ANSWERED_BY_THE_SERVER = "payouts.answered_by_the_server"


def count_refused_before_routing(status: int) -> None:
    """A request the HTTP layer refused before any app saw it (its head too slow, too large, or
    not HTTP): uncounted, a slowloris or a broken client did not show in the metrics."""
    REQUESTS.labels("OTHER", UNMATCHED_ROUTE, str(status)).inc()


class RouteTemplates:
    """Route object -> its full path template (`/api/v1/payouts/{payout_id}`), so metrics are
    labelled by template, never by a concrete id."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._templates: dict[int, str] | None = None
        # (the template's pattern, its methods, the template), in the routing's order
        self._patterns: list[tuple[re.Pattern[str], frozenset[str], str]] = []

    def of(self, scope: Scope) -> str:
        """The template of the request's route; for a request a middleware answered before the
        routing (an injected fault, a refused X-Request-ID), of the route its path names: such
        answers were all counted under `<unmatched>`, which an alarm on a route missed."""
        if self._templates is None:
            contexts = list(iter_route_contexts(self.app.routes))
            self._templates = {
                id(context.original_route): context.path_format or UNMATCHED_ROUTE
                for context in contexts
            }
            self._patterns = [
                (
                    compile_path(context.path_format)[0],
                    frozenset(context.methods or ()),
                    context.path_format,
                )
                for context in contexts
                if context.path_format
            ]
        route = scope.get("route")
        if route is not None:
            return self._templates.get(id(route), UNMATCHED_ROUTE)
        named = [
            (template, scope["method"] in methods or not methods)
            for pattern, methods, template in self._patterns
            if pattern.match(scope["path"])
        ]
        # The route of the request's method first; else the path's (a 405).
        ranked = sorted(named, key=lambda found: not found[1])
        return ranked[0][0] if ranked else UNMATCHED_ROUTE


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, *, templates: RouteTemplates) -> None:
        self.app = app
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        except BaseException:
            status = status or 500
            raise
        finally:
            route = self.templates.of(scope)
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "OTHER"
            # No answer and no error: the client left before one (ClientDisconnect), or the
            # HTTP layer answered for the app (http_protocol).
            answered = status or scope.get(ANSWERED_BY_THE_SERVER) or CLIENT_CLOSED
            REQUESTS.labels(method, route, str(answered)).inc()
            LATENCY.labels(method, route).observe(time.perf_counter() - started)


MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when it is imported


# Set by `start_over_with_an_empty_directory` for the process image it starts.
EMPTIED = "PAYOUTS_METRICS_DIRECTORY_EMPTIED"


def start_over_with_an_empty_directory() -> None:
    """With an operator's PROMETHEUS_MULTIPROC_DIR, before the server starts: its files deleted,
    as prometheus_client asks, and this process started again (exec: the same pid), whose
    imports make its files anew. The directory kept the last run's files, and a container's
    processes come back with the same pids (tini is pid 1): a worker, or with one worker this
    process itself, took its namesake's file on, with its counts and the requests it had
    waiting (review of the operator's directory). Deleting only the others' files, this
    process's stayed; deleting its own too, it counted into files no scrape read (diff
    reviews): its values were read from them as its imports made its metrics."""
    directory = os.environ.get(MULTIPROCESS_DIR)
    if directory is None or os.environ.pop(EMPTIED, None) is not None:
        return
    for stale in Path(directory).glob("*.db"):
        stale.unlink(missing_ok=True)
    os.execve(sys.executable, sys.orig_argv, {**os.environ, EMPTIED: "1"})


@contextmanager
def shared_by_the_workers(workers: int) -> Iterator[None]:
    """Around the server: with several workers, a directory where each keeps its metrics, set
    in the environment the workers start with (an operator's own, if set, is kept: see
    `start_over_with_an_empty_directory`)."""
    if workers == 1 or MULTIPROCESS_DIR in os.environ:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="payouts-api-metrics-") as directory:
        os.environ[MULTIPROCESS_DIR] = directory
        try:
            yield
        finally:
            del os.environ[MULTIPROCESS_DIR]


def forget_dead_workers(directory: Path) -> None:
    """A worker killed (uvicorn starts another) left its live gauges' file: its requests that
    were waiting stayed in the sum for ever (diff review)."""
    for live in directory.glob("gauge_live*_*.db"):
        pid = int(live.stem.rpartition("_")[2])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
        except PermissionError:  # alive, someone else's: not ours to judge
            continue


def _exposition() -> bytes:
    if MULTIPROCESS_DIR not in os.environ:
        return generate_latest()
    forget_dead_workers(Path(os.environ[MULTIPROCESS_DIR]))
    every_worker = CollectorRegistry()
    multiprocess.MultiProcessCollector(every_worker)  # type: ignore[no-untyped-call]
    return generate_latest(every_worker)


async def _metrics(_: Request) -> Response:
    return Response(_exposition(), media_type=CONTENT_TYPE_LATEST)


Endpoint = Callable[[Request], Awaitable[Response]]


def metrics_endpoint(settings: Settings) -> Endpoint | None:
    """/metrics on the API's port, which merchants reach: behind PAYOUTS_METRICS_TOKEN (a bearer
    token, as Prometheus sends it) if set; else open in test mode, and not served in production,
    where anyone could read every merchant's volumes and failures and the count of key guesses
    (metrics review)."""
    token = settings.metrics_token
    if token is None:
        return None if settings.env is Environment.PRODUCTION else _metrics
    expected = f"Bearer {token}".encode()

    async def behind_the_token(request: Request) -> Response:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise InvalidMetricsToken(headers={"WWW-Authenticate": "Bearer"})
        return await _metrics(request)

    return behind_the_token
