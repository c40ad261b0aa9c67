"""A payroll through `POST /api/v1/payouts/batch`, its requests one after another (a client that
uploads its file in chunks and waits for each answer). Every item becomes the `CreateResult` a
single create would have given, so the phase's checks (non-2xx, lost payout, missing webhook)
apply item by item."""

import asyncio
import time
from typing import Any

import orjson

from bench.http_client import Connection, Header, HttpProtocolError, HttpResponse
from bench.load import CREATE_PATH, TRANSPORT_ERROR, CreateResult, PayoutRequests, Target

BATCH_PATH = f"{CREATE_PATH}/batch"
# The status a single create answers for each outcome the batch reports per item.
ITEM_STATUSES = {"created": 201, "duplicate": 409, "invalid": 422}
UNKNOWN_ITEM_STATUS = 0
# No such route (yet): today's API knows /payouts/{id} for GET only.
ABSENT = (404, 405)


Request = tuple[list[Header], bytes]


class BatchNotAvailable(Exception):
    """The API has no batch endpoint."""


def _item_result(item: Any, sent_at: float, latency: float) -> CreateResult:
    status = ITEM_STATUSES.get(item.get("status"), UNKNOWN_ITEM_STATUS)
    payout = item.get("payout") or {}
    error = (
        None
        if status == ITEM_STATUSES["created"]
        else orjson.dumps(item)[:300].decode("utf-8", "replace")
    )
    return CreateResult(sent_at, latency, status, payout.get("id"), error)


def item_results(
    response: HttpResponse, items: int, sent_at: float, latency: float
) -> list[CreateResult]:
    """One result per item sent; a failed request fails every item it carried."""
    try:
        results = orjson.loads(response.body)["data"]["results"] if response.status == 200 else []
    except (orjson.JSONDecodeError, KeyError, TypeError):
        results = []
    if response.status == 200 and len(results) == items:
        return [_item_result(item, sent_at, latency) for item in results]
    error = f"HTTP {response.status}: {response.body[:300].decode('utf-8', 'replace')}"
    status = response.status if response.status != 200 else UNKNOWN_ITEM_STATUS
    return [CreateResult(sent_at, latency, status, None, error)] * items


async def _post(connection: Connection, target: Target, request: Request) -> HttpResponse:
    """The answer; a transport failure becomes status TRANSPORT_ERROR, its name the body."""
    headers, body = request
    try:
        return await connection.request("POST", target.path, headers, body)
    except (OSError, asyncio.IncompleteReadError, HttpProtocolError) as failure:
        return HttpResponse(TRANSPORT_ERROR, type(failure).__name__.encode())


async def send_payroll(
    target: Target, requests: PayoutRequests, *, payouts: int, chunk: int
) -> list[CreateResult]:
    """`payouts` payouts in requests of `chunk` items to `target` (the batch path), each sent
    when the last one answered."""
    connection = Connection(target.host, target.port)
    results: list[CreateResult] = []
    try:
        # An empty payroll first, untimed: the API's body-size limit answers a big body with 413
        # before routing, so only a small one tells whether the route exists.
        probe = await _post(connection, target, requests.next_batch(0))
        if probe.status in ABSENT:
            raise BatchNotAvailable(f"batch endpoint not available (HTTP {probe.status})")
        for first in range(0, payouts, chunk):
            size = min(chunk, payouts - first)
            request = requests.next_batch(size)
            sent_at, started = time.time(), time.perf_counter()
            response = await _post(connection, target, request)
            results += item_results(response, size, sent_at, time.perf_counter() - started)
    finally:
        connection.close()
    return results
