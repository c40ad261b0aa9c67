"""Each client's requests take turns (api_service/client_turns.py): a client at its cap waits in
its own line, and no other client's request waits behind it."""

import asyncio

import pytest

from api_service.client_turns import ClientGone, ClientTurns, Turn
from api_service.errors import (
    DATABASE_BUSY,
    DATABASE_UNAVAILABLE,
    RateLimited,
    ServiceUnavailable,
)


async def _started(turns: ClientTurns, client: str) -> asyncio.Task[None]:
    """A request of `client` asking for its turn; the loop runs until it has asked."""
    asking = asyncio.create_task(turns.start(client))
    await asyncio.sleep(0)  # one step: it is running or in its line
    return asking


async def _runs_at_once(turns: ClientTurns, client: str) -> None:
    """Nothing of `client` runs or waits any more: as many requests as its cap start at once."""
    for _ in range(turns.per_client):
        await asyncio.wait_for(turns.start(client), timeout=0.1)


async def test_a_client_at_its_cap_waits_and_others_do_not() -> None:
    turns = ClientTurns(per_client=2, wait_seconds=5)
    await turns.start("A")
    await turns.start("A")

    third_of_a = await _started(turns, "A")
    await asyncio.wait_for(turns.start("B"), timeout=0.1)  # B is not held by A's line

    assert not third_of_a.done()
    turns.end("A")
    await asyncio.wait_for(third_of_a, timeout=0.1)


async def test_a_clients_waiting_requests_run_in_the_order_they_came() -> None:
    turns = ClientTurns(per_client=1, wait_seconds=5)
    await turns.start("A")
    waiting = [await _started(turns, "A") for _ in range(3)]
    order: list[int] = []
    for index, request in enumerate(waiting):
        request.add_done_callback(lambda _done, index=index: order.append(index))

    for _ in waiting:
        turns.end("A")
        await asyncio.sleep(0)
    await asyncio.gather(*waiting)

    assert order == [0, 1, 2]


async def test_a_request_whose_turn_does_not_come_is_refused_with_retry_after() -> None:
    turns = ClientTurns(per_client=1, wait_seconds=0.05)
    await turns.start("A")

    with pytest.raises(RateLimited) as refused:
        await turns.start("A")

    assert refused.value.headers == {"Retry-After": "1"}
    turns.end("A")
    await _runs_at_once(turns, "A")  # the refused request left its line


async def test_a_request_whose_turn_does_not_come_behind_a_database_refusal_is_refused_so() -> None:
    """The database, not the client's pace, kept its turn from coming: a 503 as the request ahead
    of it got, not a 429."""
    turns = ClientTurns(per_client=1, wait_seconds=0.05)
    await turns.start("A")  # the database will refuse it
    gets_its_turn = await _started(turns, "A")
    waits_in_vain = await _started(turns, "A")
    turns.end("A", ServiceUnavailable(DATABASE_UNAVAILABLE))
    await gets_its_turn  # and hangs on the database

    with pytest.raises(ServiceUnavailable) as refused:
        await waits_in_vain
    assert refused.value.message == DATABASE_UNAVAILABLE


@pytest.mark.parametrize(
    "refusal",
    [
        pytest.param(None, id="the-request-ahead-ended-well"),
        # One row another operation held says nothing of the calls behind it (fixes review).
        pytest.param(ServiceUnavailable(DATABASE_BUSY), id="a-row-held"),
    ],
)
async def test_a_request_whose_turn_does_not_come_otherwise_is_rate_limited(
    refusal: ServiceUnavailable | None,
) -> None:
    turns = ClientTurns(per_client=1, wait_seconds=0.05)
    await turns.start("A")
    gets_its_turn = await _started(turns, "A")
    waits_in_vain = await _started(turns, "A")
    turns.end("A", refusal)
    await gets_its_turn

    with pytest.raises(RateLimited):
        await waits_in_vain


async def test_a_refusal_before_a_request_waited_is_not_passed_to_it() -> None:
    """The request refused had ended before this one came: its turn did not come for the
    client's own calls, running on a healthy database (fixes review)."""
    turns = ClientTurns(per_client=1, wait_seconds=0.05)
    await turns.start("A")
    gets_its_turn = await _started(turns, "A")
    turns.end("A", ServiceUnavailable(DATABASE_UNAVAILABLE))
    await gets_its_turn  # a long call, on a healthy database

    with pytest.raises(RateLimited):
        await turns.start("A")


async def test_a_turn_given_back_for_a_while_keeps_the_refusal_ahead() -> None:
    """An injected latency gives its turn back while it sleeps: no request ended, and the calls
    waiting behind a refusal were told 429 for the outage once it had (fixes review)."""
    turns = ClientTurns(per_client=1, wait_seconds=0.05)
    await turns.start("A")  # refused
    sleeper = Turn(turns, "A")
    sleeps = asyncio.create_task(sleeper.take())
    await asyncio.sleep(0)
    gets_the_sleepers_turn = await _started(turns, "A")
    waits_in_vain = await _started(turns, "A")
    turns.end("A", ServiceUnavailable(DATABASE_UNAVAILABLE))
    await sleeps
    sleeper.give_back()  # sleeps a while
    await gets_the_sleepers_turn  # and hangs on the database

    with pytest.raises(ServiceUnavailable):
        await waits_in_vain


async def test_a_request_that_goes_away_while_waiting_leaves_its_line() -> None:
    turns = ClientTurns(per_client=1, wait_seconds=5)
    await turns.start("A")
    gone = await _started(turns, "A")
    after_it = await _started(turns, "A")

    gone.cancel()
    await asyncio.sleep(0)
    turns.end("A")

    await asyncio.wait_for(after_it, timeout=0.1)
    turns.end("A")
    await _runs_at_once(turns, "A")


async def test_a_turn_given_to_a_request_as_it_goes_away_passes_on() -> None:
    """Its turn came and it was cancelled before it ran: the turn was lost, and the client ran
    one request fewer at a time from then on."""
    turns = ClientTurns(per_client=1, wait_seconds=5)
    await turns.start("A")
    gone = await _started(turns, "A")
    after_it = await _started(turns, "A")

    turns.end("A")  # the turn is `gone`'s ...
    gone.cancel()  # ... which goes away before it runs
    with pytest.raises(asyncio.CancelledError):
        await gone

    await asyncio.wait_for(after_it, timeout=0.1)
    turns.end("A")
    await _runs_at_once(turns, "A")


async def test_a_request_whose_client_is_gone_leaves_its_line() -> None:
    turns = ClientTurns(per_client=1, wait_seconds=5)
    await turns.start("A")
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiting = asyncio.create_task(turns.start("A", gone))
    after_it = await _started(turns, "A")

    gone.set_result(None)

    with pytest.raises(ClientGone):
        await asyncio.wait_for(waiting, timeout=0.1)
    turns.end("A")
    await asyncio.wait_for(after_it, timeout=0.1)
