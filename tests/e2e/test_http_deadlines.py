"""The API's own HTTP limits (api_service/http_protocol.py) against `payouts api` as a process,
over raw sockets (diff review of their first version): a refusal answers after the pipelined
answers before it, the body deadline counts only while the server reads, a kept-alive
connection is closed whatever its client sent last, and what is served stays served."""

import asyncio

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from contracts.db.engine import SessionFactory
from tests.conftest import MerchantFactory
from tests.support.api_helpers import API, payout_body
from tests.support.polling import eventually
from tests.support.raw_http import (
    BODY_TIMEOUT_SECONDS,
    HEADER_TIMEOUT_SECONDS,
    connect,
    keyed,
    request,
)

JSON = ("Content-Type", "application/json")


def health(*extra: str) -> bytes:
    return (f"GET {API}/health HTTP/1.1\r\n" + "".join(f"{h}\r\n" for h in extra) + "\r\n").encode()


def create_awaiting_continue(api_key: str, body: bytes, *extra: tuple[str, str]) -> bytes:
    """The head of a create whose client waits for `100 Continue` before sending `body`."""
    headers = keyed(
        api_key, JSON, ("Expect", "100-continue"), *extra, ("Content-Length", str(len(body)))
    )
    return request("POST", f"{API}/payouts", headers)


# --- pipelining: answers in the order of the requests ----------------------------------------


async def test_a_pipelined_request_without_host_does_not_take_the_answer_of_the_one_before(
    api_port: int,
) -> None:
    """RFC 9112 §9.3.2: a server answers pipelined requests in the order they came. The first
    request here is fine; the second, sent with it, has no Host. http_protocol.py wrote its 400
    (and closed) from inside the parser callback, before the first request's task had even run:
    the client read a 400 as the answer to its first request, whose own answer never came."""
    connection = await connect(api_port)
    try:
        await connection.send(health("Host: api") + health())
        first = await connection.answer()
    finally:
        await connection.close()
    assert first.status == 200, (first.status, first.body)


async def test_a_pipelined_head_too_large_does_not_take_the_answer_of_the_one_before(
    api_port: int,
) -> None:
    connection = await connect(api_port)
    try:
        await connection.send(health("Host: api") + health("Host: api", "X-Pad: " + "a" * 40_000))
        first = await connection.answer()
    finally:
        await connection.close()
    assert first.status == 200, (first.status, first.body)


async def test_a_pipelined_post_sent_at_once_behind_a_slow_call_is_not_408(
    api_port: int, make_merchant: MerchantFactory
) -> None:
    """A client pipelines a balance read (slow: X-Sandbox-Fault latency) and a create, all sent
    within milliseconds. uvicorn stops reading the socket while the first is answered, so the
    create's body stays in the kernel; the body deadline, started at the create's head, counts
    that time and fires: a 408 "body came too slowly" is written to the connection before the
    balance's answer (in its place, as the connection is then closed)."""
    merchant = await make_merchant()
    slow_read = request(
        "GET",
        f"{API}/balance",
        [
            ("X-API-KEY", merchant.api_key),
            ("X-Sandbox-Fault", f"latency={2 * BODY_TIMEOUT_SECONDS * 1000}"),
        ],
    )
    body = orjson.dumps(payout_body())
    create = request("POST", f"{API}/payouts", keyed(merchant.api_key, JSON), body)
    head, rest = create[: -len(body)], create[-len(body) :]
    connection = await connect(api_port)
    try:
        await connection.send(slow_read + head)
        # The body follows at once, in a TCP segment of its own (it is not in the same read).
        await asyncio.sleep(0.2)
        await connection.send(rest)
        first = await connection.answer(within=BODY_TIMEOUT_SECONDS + 15)
        assert first.status == 200, (first.status, first.body)
        second = await connection.answer(within=15)
        assert second.status == 201, (second.status, second.body)
    finally:
        await connection.close()


# --- the body deadline counts time the server itself does not read ---------------------------


async def test_a_payroll_sent_at_once_is_not_408_because_the_api_waited_before_reading_it(
    api_port: int, make_merchant: MerchantFactory
) -> None:
    """A payroll of ~900 KiB (the batch limit is 1 MiB) sent in one write, with an injected
    latency (README: `latency=<ms>` up to 30,000 on any API call). uvicorn reads 64 KiB, then
    stops reading until the application asks for the body; the latency is slept before it does.
    The body deadline ran on regardless and answered 408 "the request's body came too slowly"
    to a client that sent every byte at once. With the defaults the same happens at
    latency=30000 (body deadline 30 s). nginx's client_body_timeout, the model named in the
    module, only counts while nginx waits to read."""
    merchant = await make_merchant()
    items = [payout_body() for _ in range(2)]
    body = orjson.dumps({"payouts": items})
    body = body[:-1] + b" " * (900 * 1024) + body[-1:]  # JSON whitespace: a payroll's size
    latency = 2 * BODY_TIMEOUT_SECONDS * 1000
    fault = ("X-Sandbox-Fault", f"latency={latency}")
    raw = request("POST", f"{API}/payouts/batch", keyed(merchant.api_key, JSON, fault), body)
    connection = await connect(api_port)
    try:
        await connection.send(raw)
        answer = await connection.answer(within=BODY_TIMEOUT_SECONDS + 20)
    finally:
        await connection.close()
    assert answer.status != 408, answer.body
    assert 200 <= answer.status < 300, (answer.status, answer.body)


# --- a connection no deadline bounds ---------------------------------------------------------


async def test_a_kept_alive_connection_is_not_held_for_ever_by_an_empty_line(
    api_port: int,
) -> None:
    """After an answer, uvicorn's keep-alive timeout (5 s) closes an idle connection. Any byte
    cancels it; the head deadline starts at the next request's first byte, but a blank line
    before a request (which the parser skips, RFC 9112 §2.2) begins no request. So "\\r\\n"
    once after an answer left a connection that no timer bounded: held for ever, the file
    descriptor exhaustion the head deadline was written against."""
    connection = await connect(api_port)
    try:
        await connection.send(health("Host: api"))
        assert (await connection.answer()).status == 200
        await connection.send(b"\r\n")
        # keep-alive (5 s) and the head deadline (2 s) both long past
        assert await connection.closed(within=5 + HEADER_TIMEOUT_SECONDS + 8)
    finally:
        await connection.close()


async def test_a_connection_answered_before_its_body_is_not_held_for_ever(
    api_port: int,
) -> None:
    """A create without an API key is answered 401 before its body is read. The client then
    finishes its body (within the body deadline), and sends nothing more. Its data cancelled
    uvicorn's keep-alive timer, the end of the body stopped the body deadline, and no head
    began: nothing closed the connection."""
    connection = await connect(api_port)
    try:
        head = [("Content-Type", "application/json"), ("Content-Length", "10")]
        await connection.send(request("POST", f"{API}/payouts", head) + b"{")
        answer = await connection.answer()
        assert answer.status == 401, (answer.status, answer.body)
        await connection.send(b"         ")  # the body's other 9 bytes
        assert await connection.closed(within=5 + HEADER_TIMEOUT_SECONDS + 8)
    finally:
        await connection.close()


# --- well-formed answers ----------------------------------------------------------------------


async def test_the_refusals_are_well_formed(api_port: int) -> None:
    """Content-Length right, Connection: close, then EOF."""
    cases = {
        "no host": health(),
        "too large": health("Host: api", "X-Pad: " + "a" * 40_000),
        "parser": b"GET /a b HTTP/1.1\r\nHost: api\r\n\r\n",
    }
    problems = []
    for name, raw in cases.items():
        connection = await connect(api_port)
        try:
            await connection.send(raw)
            answer = await connection.answer()
            if answer.header("connection") != "close":
                problems.append(f"{name}: {answer.raw_head!r}")
            if int(answer.header("content-length") or -1) != len(answer.body):
                problems.append(f"{name}: length")
            orjson.loads(answer.body)
            if not await connection.closed():
                problems.append(f"{name}: not closed")
        finally:
            await connection.close()
    assert not problems, problems


async def test_http_1_0_without_host_and_expect_continue_and_chunked_are_served(
    api_port: int, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    connection = await connect(api_port)
    try:
        await connection.send(f"GET {API}/health HTTP/1.0\r\n\r\n".encode())
        assert (await connection.answer()).status == 200
    finally:
        await connection.close()
    # Expect: 100-continue, the client waits for the 100 before its body
    body = orjson.dumps(payout_body())
    connection = await connect(api_port)
    try:
        await connection.send(create_awaiting_continue(merchant.api_key, body))
        interim = await connection.answer(head=True)
        assert interim.status == 100
        await connection.send(body)
        final = await connection.answer()
        assert final.status == 201, final.body
    finally:
        await connection.close()
    # chunked, in many reads, slowly but within the deadline
    connection = await connect(api_port)
    try:
        await connection.send(
            request(
                "POST",
                f"{API}/payouts",
                keyed(merchant.api_key, JSON, ("Transfer-Encoding", "chunked")),
            )
        )
        body = orjson.dumps(payout_body())
        for i in range(0, len(body), 20):
            part = body[i : i + 20]
            await connection.send(b"%x\r\n" % len(part) + part + b"\r\n")
            await asyncio.sleep(0.05)
        await connection.send(b"0\r\n\r\n")
        final = await connection.answer()
        assert final.status == 201, final.body
        # and the connection serves the next request
        await connection.send(health("Host: api"))
        assert (await connection.answer()).status == 200
    finally:
        await connection.close()


async def test_a_pipelined_create_is_not_answered_with_the_next_requests_400(
    api_port: int, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """The same with a create first: the merchant reads 400 BAD_REQUEST "one Host header" as
    the answer to its POST /payouts (which had a Host), whatever became of the payout."""
    from tests.support.api_helpers import footprint

    merchant = await make_merchant()
    body = orjson.dumps(payout_body())
    create = request("POST", f"{API}/payouts", keyed(merchant.api_key, JSON), body)
    connection = await connect(api_port)
    try:
        await connection.send(create + health())
        first = await connection.answer()
    finally:
        await connection.close()
    made = (await footprint(sessions, merchant.merchant_id)).payouts
    assert first.status == 201, (first.status, first.body, f"payouts made: {made}")


async def test_a_client_waiting_for_100_continue_is_not_408_for_the_servers_delay(
    api_port: int, make_merchant: MerchantFactory
) -> None:
    """The same root: a create with `Expect: 100-continue` (the client waits for the 100 before
    its body, RFC 9110 §10.1.1). uvicorn sends the 100 only when the application first asks for
    the body, after the injected latency; the body deadline, started at the head, fires first:
    408 "body came too slowly" to a client that was waiting for the server's go-ahead."""
    merchant = await make_merchant()
    body = orjson.dumps(payout_body())
    connection = await connect(api_port)
    try:
        latency = ("X-Sandbox-Fault", f"latency={2 * BODY_TIMEOUT_SECONDS * 1000}")
        await connection.send(create_awaiting_continue(merchant.api_key, body, latency))
        interim = await connection.answer(head=True, within=BODY_TIMEOUT_SECONDS + 15)
        assert interim.status == 100, (interim.status, interim.raw_head)
        await connection.send(body)
        final = await connection.answer()
        assert final.status == 201, final.body
    finally:
        await connection.close()


async def test_head_requests_are_answered_without_a_body(api_port: int) -> None:
    connection = await connect(api_port)
    try:
        await connection.send(f"HEAD {API}/health HTTP/1.1\r\nHost: api\r\n\r\n".encode())
        answer = await connection.answer(head=True)
        assert answer.status == 200
        await connection.send(health("Host: api"))
        assert (await connection.answer()).status == 200
    finally:
        await connection.close()


# --- what the request counter says of the answers the HTTP layer writes itself ---------------


async def _requests_counted(port: int) -> dict[tuple[str, str, str], float]:
    """payouts_api_requests_total by (method, route, status)."""
    async with httpx.AsyncClient() as client:
        exposition = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    return {
        (sample.labels["method"], sample.labels["route"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "payouts_api_requests_total"
    }


def _moved(
    before: dict[tuple[str, str, str], float], after: dict[tuple[str, str, str], float]
) -> dict[tuple[str, str, str], float]:
    return {
        labels: count - before.get(labels, 0)
        for labels, count in after.items()
        if count != before.get(labels, 0) and labels[1] != "/metrics"
    }


async def test_a_body_too_slow_is_counted_as_the_408_its_client_got(
    api_port: int, make_merchant: MerchantFactory
) -> None:
    """The app, told its client was gone, answered nothing: the counter said 499, the status of
    a client that leaves first (metrics review)."""
    merchant = await make_merchant()
    body = orjson.dumps(payout_body())
    raw = request("POST", f"{API}/payouts", keyed(merchant.api_key, JSON), body)
    before = await _requests_counted(api_port)
    connection = await connect(api_port)
    try:
        await connection.send(raw[: len(raw) - len(body) + 5])  # the head and 5 bytes of body
        answer = await connection.answer(within=BODY_TIMEOUT_SECONDS + 10)
    finally:
        await connection.close()

    assert answer.status == 408
    assert _moved(before, await _requests_counted(api_port)) == {
        ("POST", f"{API}/payouts", "408"): 1
    }


async def test_a_request_refused_before_routing_is_counted(api_port: int) -> None:
    """A head too slow (408), too large (431) or not HTTP (400) is answered by the HTTP layer
    before any route: no counter moved, and a slowloris did not show (metrics review)."""
    before = await _requests_counted(api_port)
    refusals = [
        b"GET /api/v1/health HTTP/1.1\r\nHost: api\r\n",  # and no more: too slow
        health("Host: api", "X-Pad: " + "a" * 40_000),
        b"GET /a b HTTP/1.1\r\nHost: api\r\n\r\n",
    ]
    statuses = []
    for raw in refusals:
        connection = await connect(api_port)
        try:
            await connection.send(raw)
            statuses.append((await connection.answer(within=HEADER_TIMEOUT_SECONDS + 10)).status)
        finally:
            await connection.close()

    assert statuses == [408, 431, 400]
    assert _moved(before, await _requests_counted(api_port)) == {
        ("OTHER", "<unmatched>", "408"): 1,
        ("OTHER", "<unmatched>", "431"): 1,
        ("OTHER", "<unmatched>", "400"): 1,
    }


async def test_a_body_the_parser_refuses_is_answered_at_once_and_counted_on_its_route(
    api_port: int, make_merchant: MerchantFactory
) -> None:
    """A chunk size that is not hex, after the head: the 400 waited behind the app's answer,
    and the app for the rest of a body that never came (no answer, the connection held until
    its client left); and the request was counted twice, under <unmatched> and as a client gone
    on its route (diff review)."""
    merchant = await make_merchant()
    body = orjson.dumps(payout_body())
    head = request(
        "POST", f"{API}/payouts", keyed(merchant.api_key, JSON, ("Transfer-Encoding", "chunked"))
    )
    before = await _requests_counted(api_port)
    connection = await connect(api_port)
    try:
        await connection.send(head + b"%x\r\n" % 20 + body[:20] + b"\r\nzz\r\nnot a chunk\r\n")
        answer = await connection.answer(within=BODY_TIMEOUT_SECONDS + 10)
    finally:
        await connection.close()

    assert answer.status == 400

    async def counted_once() -> dict[tuple[str, str, str], float] | None:
        moved = _moved(before, await _requests_counted(api_port))
        return moved if moved.get(("POST", f"{API}/payouts", "400")) else None

    # The app's count comes as its request ends, once it was told its client is gone.
    moved = await eventually(counted_once, within=10, what="the request counted")
    assert moved == {("POST", f"{API}/payouts", "400"): 1}


async def test_a_pipelined_body_the_parser_refuses_waits_for_the_answer_before_it(
    api_port: int, make_merchant: MerchantFactory
) -> None:
    """A create, and behind it on the same connection a create whose chunk size is not hex:
    the 400 was written at once, before the first create's 201, which never went out (the
    payout made, its merchant told 400), and the 400 was counted nowhere (review of the
    diff review's fixes). RFC 9112 §9.3.2: answers in the order of the requests."""
    merchant = await make_merchant()
    create = request(
        "POST", f"{API}/payouts", keyed(merchant.api_key, JSON), orjson.dumps(payout_body())
    )
    refused = request(
        "POST", f"{API}/payouts", keyed(merchant.api_key, JSON, ("Transfer-Encoding", "chunked"))
    )
    before = await _requests_counted(api_port)
    connection = await connect(api_port)
    try:
        await connection.send(create + refused + b"zz\r\nnot a chunk\r\n")
        answers = [await connection.answer(within=10), await connection.answer(within=10)]
    finally:
        await connection.close()

    assert [answer.status for answer in answers] == [201, 400]

    async def counted_both() -> dict[tuple[str, str, str], float] | None:
        moved = _moved(before, await _requests_counted(api_port))
        return moved if len(moved) == 2 else None

    assert await eventually(counted_both, within=10, what="both counted") == {
        ("POST", f"{API}/payouts", "201"): 1,
        ("OTHER", "<unmatched>", "400"): 1,
    }
