"""GET /payouts: newest first, page/limit (<= 100), startingAfter cursor, filters."""

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory, transaction
from contracts.db.models import Payout
from tests.conftest import MerchantFactory
from tests.support.api_helpers import (
    API,
    assert_error,
    auth,
    create_payout,
    fail_payout,
    new_merchant,
)

START = datetime(2025, 3, 1, 9, 0, 0)
COUNT = 7


@pytest.fixture(scope="module")
async def listed(
    api_client: httpx.AsyncClient, sessions: SessionFactory
) -> tuple[NewMerchant, list[dict[str, Any]]]:
    """Seven payouts created one hour apart from START (oldest first); the fourth FAILED."""
    merchant = await new_merchant(sessions)
    payouts = [
        await create_payout(api_client, merchant, merchantReference=f"list-{n}")
        for n in range(COUNT)
    ]
    async with transaction(sessions) as session:
        for n, payout in enumerate(payouts):
            await session.execute(
                update(Payout)
                .where(Payout.id == payout["id"])
                .values(created_at=START + timedelta(hours=n))
            )
    await fail_payout(sessions, payouts[3]["id"])
    return merchant, payouts


async def _list(client: httpx.AsyncClient, merchant: NewMerchant, **params: Any) -> dict[str, Any]:
    response = await client.get(f"{API}/payouts", params=params, headers=auth(merchant, ""))
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def _ids(data: dict[str, Any]) -> list[str]:
    return [payout["id"] for payout in data["payouts"]]


async def test_pages_are_newest_first_with_totals(
    api_client: httpx.AsyncClient, listed: tuple[NewMerchant, list[dict[str, Any]]]
) -> None:
    merchant, payouts = listed
    newest_first = [p["id"] for p in reversed(payouts)]
    first = await _list(api_client, merchant, page=1, limit=3)
    assert _ids(first) == newest_first[:3]
    assert first["pagination"] == {
        "page": 1,
        "limit": 3,
        "total": COUNT,
        "totalPages": 3,
        "hasMore": True,
        "nextCursor": newest_first[2],
    }
    last = await _list(api_client, merchant, page=3, limit=3)
    assert _ids(last) == newest_first[6:]
    assert last["pagination"]["hasMore"] is False
    beyond = await _list(api_client, merchant, page=4, limit=3)
    assert beyond["payouts"] == []
    everything = await _list(api_client, merchant)
    assert _ids(everything) == newest_first
    assert everything["pagination"]["limit"] == 20


async def test_cursor_walks_every_payout_once_newest_first(
    api_client: httpx.AsyncClient, listed: tuple[NewMerchant, list[dict[str, Any]]]
) -> None:
    merchant, payouts = listed
    seen: list[str] = []
    page = await _list(api_client, merchant, limit=2)
    seen += _ids(page)
    while page["pagination"]["hasMore"]:
        page = await _list(
            api_client, merchant, limit=2, startingAfter=page["pagination"]["nextCursor"]
        )
        seen += _ids(page)
        assert set(page["pagination"]) >= {"limit", "hasMore", "nextCursor"}
    assert seen == [p["id"] for p in reversed(payouts)]
    assert page["pagination"]["nextCursor"] is None


async def test_unknown_cursor_is_400_naming_starting_after(
    api_client: httpx.AsyncClient,
    listed: tuple[NewMerchant, list[dict[str, Any]]],
    make_merchant: MerchantFactory,
) -> None:
    _, payouts = listed
    stranger = await make_merchant()
    response = await api_client.get(
        f"{API}/payouts",
        params={"startingAfter": payouts[0]["id"]},
        headers=auth(stranger, ""),
    )
    assert_error(response, 400, "VALIDATION_ERROR", "startingAfter")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 101}, "limit"),
        ({"limit": 0}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"page": 0}, "page"),
        ({"status": "DONE"}, "status"),
        ({"createdFrom": "yesterday"}, "createdFrom"),
        ({"createdTo": "2025-13-01"}, "createdTo"),
        # Before year 1 in UTC: no such time (the fuzzer found it a 500).
        ({"createdTo": "0001-01-01T00:00:00+00:01"}, "createdTo"),
        ({"createdFrom": "0001-01-01T00:00:00+05:00"}, "createdFrom"),
        ({"merchantReference": "r" * 65}, "merchantReference"),
    ],
)
async def test_invalid_query_is_400_naming_the_parameter(
    api_client: httpx.AsyncClient,
    listed: tuple[NewMerchant, list[dict[str, Any]]],
    params: dict[str, Any],
    field: str,
) -> None:
    merchant, _ = listed
    response = await api_client.get(f"{API}/payouts", params=params, headers=auth(merchant, ""))
    assert_error(response, 400, "VALIDATION_ERROR", field)


async def test_limit_of_100_is_allowed(
    api_client: httpx.AsyncClient, listed: tuple[NewMerchant, list[dict[str, Any]]]
) -> None:
    merchant, _ = listed
    assert (await _list(api_client, merchant, limit=100))["pagination"]["limit"] == 100


async def test_filters_status_reference_and_creation_window(
    api_client: httpx.AsyncClient, listed: tuple[NewMerchant, list[dict[str, Any]]]
) -> None:
    merchant, payouts = listed
    failed = await _list(api_client, merchant, status="FAILED")
    assert _ids(failed) == [payouts[3]["id"]]
    assert failed["payouts"][0]["status"] == "FAILED"
    assert len(_ids(await _list(api_client, merchant, status="PENDING"))) == COUNT - 1

    by_reference = await _list(api_client, merchant, merchantReference="list-5")
    assert _ids(by_reference) == [payouts[5]["id"]]
    assert (await _list(api_client, merchant, merchantReference="list-99"))["payouts"] == []

    window = await _list(
        api_client, merchant, createdFrom="2025-03-01T10:00:00Z", createdTo="2025-03-01T12:00:00Z"
    )
    assert _ids(window) == [payouts[3]["id"], payouts[2]["id"], payouts[1]["id"]]
    assert window["pagination"]["total"] == 3
    # The same window written in Pakistan time (UTC+5).
    local = await _list(
        api_client,
        merchant,
        createdFrom="2025-03-01T15:00:00+05:00",
        createdTo="2025-03-01T17:00:00+05:00",
    )
    assert _ids(local) == _ids(window)
    # Its offset in hours alone (ISO-8601 allows it): refused as "unexpected extra characters".
    hours_only = await _list(
        api_client, merchant, createdFrom="2025-03-01T15:00+05", createdTo="2025-03-01T17:00:00+05"
    )
    assert _ids(hours_only) == _ids(window)
    # A date alone as the end of the window means the whole day (it meant its first instant).
    day = await _list(api_client, merchant, createdFrom="2025-03-01", createdTo="2025-03-01")
    whole_day = await _list(
        api_client, merchant, createdFrom="2025-03-01", createdTo="2025-03-01T23:59:59.999Z"
    )
    assert _ids(day) == _ids(whole_day) != []

    combined = await _list(
        api_client, merchant, status="PENDING", createdFrom="2025-03-01T10:00:00Z", limit=2
    )
    assert _ids(combined) == [payouts[6]["id"], payouts[5]["id"]]
    rest = await _list(
        api_client,
        merchant,
        status="PENDING",
        createdFrom="2025-03-01T10:00:00Z",
        limit=10,
        startingAfter=combined["pagination"]["nextCursor"],
    )
    assert _ids(rest) == [payouts[4]["id"], payouts[2]["id"], payouts[1]["id"]]


async def test_created_to_includes_the_whole_second_or_minute_it_names(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """Only a date alone meant the whole of what it names: `10:00:05Z` left out a payout created
    at 10:00:05.550."""
    merchant = await make_merchant()
    payout = await create_payout(api_client, merchant)
    async with transaction(sessions) as session:
        await session.execute(
            update(Payout)
            .where(Payout.id == payout["id"])
            .values(created_at=datetime(2025, 3, 1, 10, 0, 5, 550_000))
        )

    # ISO 8601 writes a fraction after a dot or a comma: `,5Z` was read as exactly .500000.
    named = (
        "2025-03-01T10:00:05Z",
        "2025-03-01T10:00Z",
        "2025-03-01T15:00:05+05:00",
        "2025-03-01T10:00:05.5Z",
        "2025-03-01T10:00:05,5Z",
    )
    for created_to in named:
        listed = await _list(api_client, merchant, createdTo=created_to)
        assert _ids(listed) == [payout["id"]], created_to
    assert _ids(await _list(api_client, merchant, createdTo="2025-03-01T10:00:05.499Z")) == []


async def test_a_page_with_a_cursor_is_refused_rather_than_one_of_them_dropped(
    api_client: httpx.AsyncClient, listed: tuple[NewMerchant, list[dict[str, Any]]]
) -> None:
    """The page was dropped: `page=3&startingAfter=...` answered the cursor's page."""
    merchant, payouts = listed
    response = await api_client.get(
        f"{API}/payouts",
        params={"page": 3, "limit": 2, "startingAfter": payouts[-1]["id"]},
        headers=auth(merchant, ""),
    )
    assert_error(response, 400, "VALIDATION_ERROR", field="page")


async def test_a_range_that_ends_before_it_starts_is_refused(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    response = await api_client.get(
        f"{API}/payouts",
        params={"createdFrom": "2025-03-02", "createdTo": "2025-03-01T23:59:59Z"},
        headers=auth(merchant, ""),
    )
    assert_error(response, 400, "VALIDATION_ERROR", field="createdFrom")


async def test_created_to_a_payouts_own_created_at_includes_it(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """createdAt is shown to the millisecond and stored to the microsecond: a createdTo of a
    payout's own createdAt left it out."""
    merchant = await make_merchant()
    created_at = (await create_payout(api_client, merchant))["createdAt"]

    response = await api_client.get(
        f"{API}/payouts",
        params={"createdFrom": created_at, "createdTo": created_at},
        headers=auth(merchant, ""),
    )

    assert [p["createdAt"] for p in response.json()["data"]["payouts"]] == [created_at]


@pytest.mark.parametrize("name", ["createdFrom", "createdTo"])
@pytest.mark.parametrize("time", ["2026-12-05T00:00:00+05:00", "2026-12-05%2000:00+05:00"])
async def test_an_offset_whose_plus_came_as_a_space_is_told_how_to_send_it(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, name: str, time: str
) -> None:
    """`createdFrom=2026-12-05T00:00:00+05:00` written into a URL by hand: the query string
    reads its `+` as a space, and the answer was "unexpected extra characters", which sent a
    Karachi merchant looking everywhere but at the `+`. A time taken with a space for its `T`
    is told so too."""
    merchant = await make_merchant()
    answer = await api_client.get(f"{API}/payouts?{name}={time}", headers=auth(merchant, ""))

    error = assert_error(answer, 400, "VALIDATION_ERROR", field=name)
    assert "%2B" in error["details"][0]["message"], error


@pytest.mark.parametrize("name", ["createdFrom", "createdTo"])
async def test_the_time_filters_document_what_they_take(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, name: str
) -> None:
    """`format: date-time` (RFC 3339) refused a date alone, which the API takes (its own
    description says so): a client validating against the document could not send it."""
    document = (await api_client.get("/openapi.json")).json()
    parameters = document["paths"][f"{API}/payouts"]["get"]["parameters"]
    [schema] = [p["schema"]["anyOf"][0] for p in parameters if p["name"] == name]
    merchant = await make_merchant()

    assert "format" not in schema
    assert "2026-01-31" in schema["examples"]
    for example in schema["examples"]:
        answer = await api_client.get(
            f"{API}/payouts", params={name: example}, headers=auth(merchant, "")
        )
        assert answer.status_code == 200, (example, answer.text)
