"""The event log, the delivery log and the balance history page by cursor, as /payouts does:
`startingAfter` = the previous page's `nextCursor`. By page number alone, an item that arrived
between two pages pushed every page down one, and the next page repeated an item (a merchant
syncing its events by page saw one twice, or skipped one when an item went away)."""

from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from api_service.webhooks import service as webhook_service
from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import WebhookAttempt, WebhookDelivery
from contracts.webhooks import DeliveryStatus
from tests.conftest import MerchantFactory
from tests.support.api_helpers import API, assert_error, auth, create_payout
from tests.support.delivery_records import PUBLIC_URL, events_of, seed_delivery


@dataclass(frozen=True)
class Listing:
    path: str
    items: str  # the answer's key of the list


LISTINGS = [
    Listing("/events", "events"),
    Listing("/webhooks/deliveries", "deliveries"),
    Listing("/balance/history", "entries"),
]


async def add_payout(
    client: httpx.AsyncClient, sessions: SessionFactory, merchant: NewMerchant
) -> None:
    """One more of each: an event, its delivery, and the hold's ledger lines."""
    payout = await create_payout(client, merchant)
    (event,) = await events_of(sessions, payout["id"])
    await seed_delivery(sessions, event, DeliveryStatus.DELIVERED, [(200, None)], utcnow())


async def listed(
    client: httpx.AsyncClient, merchant: NewMerchant, listing: Listing, **query: Any
) -> tuple[list[Any], dict[str, Any]]:
    answer = await client.get(f"{API}{listing.path}", params=query, headers=auth(merchant, ""))
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    return [item["id"] for item in data[listing.items]], data["pagination"]


@pytest.fixture
async def merchant(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> NewMerchant:
    merchant = await make_merchant(webhook_url=PUBLIC_URL)
    for _ in range(3):
        await add_payout(api_client, sessions, merchant)
    return merchant


@pytest.mark.parametrize("listing", LISTINGS, ids=lambda listing: listing.path)
async def test_a_cursor_walks_every_item_once_while_new_ones_arrive(
    api_client: httpx.AsyncClient, sessions: SessionFactory, merchant: NewMerchant, listing: Listing
) -> None:
    before, _ = await listed(api_client, merchant, listing, limit=100)
    seen, pagination = await listed(api_client, merchant, listing, limit=2)
    await add_payout(api_client, sessions, merchant)  # arrives on top, between two pages

    while pagination["hasMore"]:
        cursor = pagination["nextCursor"]
        page, pagination = await listed(
            api_client, merchant, listing, limit=2, startingAfter=cursor
        )
        assert set(pagination) == {"limit", "hasMore", "nextCursor"}  # no count is run
        seen += page

    assert seen == before
    assert pagination["nextCursor"] is None
    # By page number, the second page now repeats what the first one showed.
    second_page, _ = await listed(api_client, merchant, listing, limit=2, page=2)
    assert set(second_page) & set(seen[:2])


@pytest.mark.parametrize("listing", LISTINGS, ids=lambda listing: listing.path)
async def test_a_page_answers_the_cursor_of_the_next(
    api_client: httpx.AsyncClient, merchant: NewMerchant, listing: Listing
) -> None:
    first, pagination = await listed(api_client, merchant, listing, limit=2, page=1)
    assert pagination["nextCursor"] == str(first[-1])
    rest, _ = await listed(api_client, merchant, listing, startingAfter=pagination["nextCursor"])
    every, _ = await listed(api_client, merchant, listing, limit=100)
    assert first + rest == every


@pytest.mark.parametrize("listing", LISTINGS, ids=lambda listing: listing.path)
async def test_a_cursor_naming_no_item_of_the_merchants_is_400_naming_starting_after(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    merchant: NewMerchant,
    listing: Listing,
) -> None:
    theirs, _ = await listed(api_client, merchant, listing, limit=1)
    stranger = await make_merchant()
    for cursor in (str(theirs[0]), "nonsense", "0", "00000000-0000-0000-0000-000000000000"):
        answer = await api_client.get(
            f"{API}{listing.path}", params={"startingAfter": cursor}, headers=auth(stranger, "")
        )
        assert_error(answer, 400, "VALIDATION_ERROR", "startingAfter")


@pytest.mark.parametrize("listing", LISTINGS, ids=lambda listing: listing.path)
async def test_a_page_with_a_cursor_is_refused_rather_than_one_of_them_dropped(
    api_client: httpx.AsyncClient, merchant: NewMerchant, listing: Listing
) -> None:
    first, _ = await listed(api_client, merchant, listing, limit=1)
    answer = await api_client.get(
        f"{API}{listing.path}",
        params={"page": 2, "startingAfter": str(first[0])},
        headers=auth(merchant, ""),
    )
    assert_error(answer, 400, "VALIDATION_ERROR", "page")


@pytest.mark.parametrize("by", ["page", "cursor"])
async def test_a_deliverys_attempts_agree_with_its_row(
    api_client: httpx.AsyncClient,
    sessions: SessionFactory,
    merchant: NewMerchant,
    monkeypatch: pytest.MonkeyPatch,
    by: str,
) -> None:
    """A delivery's row and its attempts are two reads: by cursor they were not one snapshot, and
    an attempt recorded between them was listed beside a row that did not count it (found by the
    review of the day's diff)."""
    newest_two, _ = await listed(api_client, merchant, LISTINGS[1], limit=2)
    newer, older = newest_two
    attempts_of = webhook_service.attempts_of

    async def attempts_of_after_another_attempt(session: Any, deliveries: Any) -> Any:
        async with transaction(sessions) as other:  # the webhook service, meanwhile
            other.add(
                WebhookAttempt(
                    delivery_id=older,
                    attempt_number=2,
                    url=PUBLIC_URL,
                    status_code=200,
                    latency_ms=40,
                    created_at=utcnow(),
                )
            )
            await other.execute(
                update(WebhookDelivery).where(WebhookDelivery.id == older).values(attempts=2)
            )
        return await attempts_of(session, deliveries)

    monkeypatch.setattr(webhook_service, "attempts_of", attempts_of_after_another_attempt)
    query = {"page": 2} if by == "page" else {"startingAfter": newer}
    answer = await api_client.get(
        f"{API}/webhooks/deliveries", params={"limit": 1, **query}, headers=auth(merchant, "")
    )

    assert answer.status_code == 200, answer.text
    (delivery,) = answer.json()["data"]["deliveries"]
    assert delivery["id"] == older
    assert delivery["attemptCount"] == len(delivery["attempts"]) == 1
