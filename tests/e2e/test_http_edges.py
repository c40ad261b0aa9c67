"""HTTP protocol edges of the API as `payouts api` serves it (a process: uvicorn with
HeadDeadlineProtocol), spoken to over raw sockets where httpx would fix the request up (HTTP
review): a body that stops coming, a head too large, a request the parser refuses, one with no
Host, an encoded body, a Content-Type given twice."""

import gzip
import json
import time

import orjson
import pytest

from contracts.db.engine import SessionFactory
from tests.conftest import MerchantFactory
from tests.support.api_helpers import API, TIMESTAMP, footprint, payout_body
from tests.support.raw_http import (
    BODY_TIMEOUT_SECONDS,
    HEADER_TIMEOUT_SECONDS,
    Answer,
    connect,
    exchange,
    keyed,
    request,
)

BODY_PATIENCE_SECONDS = BODY_TIMEOUT_SECONDS + 10  # the deadline, and room for a busy machine


def assert_envelope(answer: Answer, status: int, code: str | None = None) -> dict:
    """The contract's error envelope, with X-Request-ID on the answer and in the body."""
    assert answer.status == status, (answer.status, answer.body)
    request_id = answer.header("x-request-id")
    assert request_id, f"no X-Request-ID on a {answer.status}: {answer.raw_head!r}"
    assert (answer.header("content-type") or "").startswith("application/json"), answer.raw_head
    envelope = orjson.loads(answer.body)
    assert envelope["success"] is False
    error = envelope["error"]
    if code is not None:
        assert error["code"] == code, error
    assert error["requestId"] == request_id
    assert TIMESTAMP.fullmatch(error["timestamp"])
    return error


# --- a body that stops coming ---------------------------------------------------------------


async def test_a_callback_whose_body_never_comes_is_answered_408_and_closed(
    api_port: int,
) -> None:
    """Anyone may POST /ipn/psp (no key: its signature is over the body, so the body is read
    first). A client that sent the head and one byte of a 1,000-byte body held its connection
    for good: the head deadline stopped at the end of the headers and nothing bounded the body,
    so the file-descriptor exhaustion that deadline was written against was one byte per
    connection away."""
    connection = await connect(api_port)
    try:
        head = [("Content-Type", "application/json"), ("Content-Length", "1000")]
        await connection.send(request("POST", f"{API}/ipn/psp", head) + b"{")
        started = time.monotonic()
        answer = await connection.answer(within=BODY_PATIENCE_SECONDS)
        assert_envelope(answer, 408, "REQUEST_TIMEOUT")
        assert time.monotonic() - started >= BODY_TIMEOUT_SECONDS * 0.9
        assert await connection.closed()
    finally:
        await connection.close()


# --- answers written below the application ---------------------------------------------------


async def test_the_head_deadlines_408_carries_a_request_id_and_the_error_envelope(
    api_port: int,
) -> None:
    """CONTRACT.md: every response carries X-Request-ID; errors are `{success:false,
    error:{code,message,requestId,timestamp}}`. The 408 that http_protocol.py writes itself is
    text/plain with neither."""
    connection = await connect(api_port)
    try:
        await connection.send(b"GET /api/v1/balance HTTP/1.1\r\nHost: api\r\n")  # never ends
        answer = await connection.answer(within=HEADER_TIMEOUT_SECONDS + 10)
    finally:
        await connection.close()
    assert_envelope(answer, 408)


async def test_a_request_the_http_parser_refuses_is_answered_in_the_error_envelope(
    api_port: int,
) -> None:
    """A raw space in the path, a method nobody knows, Content-Length twice with two values:
    uvicorn's parser refuses them with `400 Invalid HTTP request received.` as text/plain and no
    X-Request-ID, though the API already runs its own protocol class (HeadDeadlineProtocol),
    where send_400_response can be overridden."""
    refused = {
        "space in path": b"GET /api/v1/payouts/a b HTTP/1.1\r\nHost: api\r\n\r\n",
        "unknown method": b"FETCH /api/v1/balance HTTP/1.1\r\nHost: api\r\n\r\n",
        "two lengths": b"POST /api/v1/payouts HTTP/1.1\r\nHost: api\r\nContent-Length: 2\r\n"
        b"Content-Length: 3\r\n\r\n{} ",
    }
    failures = []
    for name, raw in refused.items():
        answer = await exchange(api_port, raw)
        try:
            assert_envelope(answer, 400)
        except AssertionError as failure:
            failures.append(f"{name}: {failure}")
    assert not failures, "\n".join(failures)


# --- the size of a head ----------------------------------------------------------------------


async def test_a_head_of_a_mebibyte_is_refused(api_port: int) -> None:
    """A body is capped at 64 KiB (413), but a head was not capped at all: a 1 MiB header line
    (or 20,000 header lines) is read into memory and answered 200. nginx refuses a header line
    over 8 KiB (400), RFC 6585 names 431 for it."""
    answer = await exchange(
        api_port, request("GET", f"{API}/health", [("X-Padding", "a" * (1024 * 1024))])
    )
    assert_envelope(answer, 431, "HEADERS_TOO_LARGE")


async def test_a_large_head_and_a_body_sent_with_it_in_one_write_are_served(
    api_port: int, make_merchant: MerchantFactory
) -> None:
    """Under the limits, what arrives at once is not mistaken for a head too large: a head of
    20 KiB, and a 60 KiB body in the same write as its head."""
    merchant = await make_merchant()
    padded = [("X-API-KEY", merchant.api_key), ("X-Padding", "a" * 20 * 1024)]
    assert (await exchange(api_port, request("GET", f"{API}/balance", padded))).status == 200
    body = orjson.dumps({**payout_body(), "purpose": "p" * 100, "pad": "x" * 60 * 1024})
    json_body = keyed(merchant.api_key, ("Content-Type", "application/json"))
    answer = await exchange(api_port, request("POST", f"{API}/payouts", json_body, body))
    assert answer.status == 201, answer.body  # an unknown field is left out, as the mock did


async def test_twenty_thousand_header_lines_are_refused(api_port: int) -> None:
    answer = await exchange(
        api_port, request("GET", f"{API}/health", [(f"X-H{i}", "a") for i in range(20_000)])
    )
    assert_envelope(answer, 431, "HEADERS_TOO_LARGE")


# --- Content-Encoding ------------------------------------------------------------------------


PAYOUT_JSON = json.dumps(payout_body()).encode()


@pytest.mark.parametrize(
    ("coding", "body"),
    [("gzip", gzip.compress(PAYOUT_JSON)), ("br", PAYOUT_JSON)],
    ids=["a gzip body", "a plain body labelled br"],
)
async def test_a_body_with_a_content_coding_is_415_and_writes_nothing(
    api_port: int,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    coding: str,
    body: bytes,
) -> None:
    """The API takes no content coding. A client that compresses its requests (Content-Encoding:
    gzip) got 400 VALIDATION_ERROR "body is not valid JSON": the body was valid JSON, sent in an
    encoding the server does not support, which RFC 9110 §15.5.16 answers 415 (with
    Accept-Encoding saying what is taken), and the 400 was stored under the idempotency key. A
    body labelled `br` but sent plain was read as if it were not encoded: a payout created from
    bytes the sender said were not JSON."""
    merchant = await make_merchant()
    before = await footprint(sessions, merchant.merchant_id)
    labels = keyed(
        merchant.api_key, ("Content-Type", "application/json"), ("Content-Encoding", coding)
    )
    answer = await exchange(api_port, request("POST", f"{API}/payouts", labels, body))
    assert_envelope(answer, 415)
    assert answer.header("accept-encoding") == "identity"
    assert await footprint(sessions, merchant.merchant_id) == before


# --- a header given twice --------------------------------------------------------------------


async def test_content_type_given_twice_is_refused_whatever_the_order(
    api_port: int, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """X-API-KEY and X-IDEMPOTENCY-KEY given twice are refused ("given more than once"); a
    Content-Type given twice is judged on its first value only: `application/json` then
    `text/plain` creates a payout (201), the same two in the other order are a 415. Which one
    did the client mean? One answer, whatever the order: a 4xx, and nothing written."""
    merchant = await make_merchant()
    before = await footprint(sessions, merchant.merchant_id)
    answers = []
    for order in (("application/json", "text/plain"), ("text/plain", "application/json")):
        answer = await exchange(
            api_port,
            request(
                "POST",
                f"{API}/payouts",
                keyed(merchant.api_key, *(("Content-Type", value) for value in order)),
                json.dumps(payout_body()).encode(),
            ),
        )
        answers.append(answer.status)
    assert all(400 <= status < 500 for status in answers), answers
    assert await footprint(sessions, merchant.merchant_id) == before


# --- Host ------------------------------------------------------------------------------------


async def test_an_http_1_1_request_without_a_host_or_with_two_is_400(api_port: int) -> None:
    """RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request that lacks a Host header
    or carries more than one. Both were served (a balance read, 200; with two Hosts, the first
    one named in the trailing-slash redirect's Location), so a proxy that reads the other Host
    routes or caches the answer under a host this server never judged."""
    key = [("X-API-KEY", "mpk_test_" + "a" * 43)]
    no_host = b"GET /api/v1/health HTTP/1.1\r\n\r\n"
    two_hosts = request("GET", f"{API}/health", [("Host", "evil.example"), *key])
    statuses = {
        "no Host": (await exchange(api_port, no_host)).status,
        "two Hosts": (await exchange(api_port, two_hosts)).status,
    }
    assert statuses == {"no Host": 400, "two Hosts": 400}, statuses
