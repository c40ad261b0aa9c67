"""Query parameters: one the route does not take, one given twice, or a filter given empty is a
400 naming it. Each was ignored before, and the answer was a 200 listing something else than what
was asked for (a misspelled `?Status=FAILED` listed every payout)."""

import httpx
import pytest

from api_service.app import create_app
from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory
from contracts.settings import Settings
from tests.support.api_helpers import API, assert_error, auth, create_payout, new_merchant


@pytest.fixture(scope="module")
async def merchant(api_client: httpx.AsyncClient, sessions: SessionFactory) -> NewMerchant:
    merchant = await new_merchant(sessions)
    await create_payout(api_client, merchant, merchantReference="query-1")
    return merchant


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("/payouts?Status=FAILED", "Status"),
        ("/payouts?created_from=2030-01-01", "created_from"),
        ("/events?payout_id=00000000-0000-0000-0000-000000000000", "payout_id"),
        ("/webhooks/deliveries?state=PARKED", "state"),
        ("/balance?page=2", "page"),
    ],
)
async def test_a_parameter_the_route_does_not_take_is_refused_naming_it(
    api_client: httpx.AsyncClient, merchant: NewMerchant, query: str, field: str
) -> None:
    response = await api_client.get(f"{API}{query}", headers=auth(merchant, ""))
    assert_error(response, 400, "VALIDATION_ERROR", field=field)
    assert "is not a query parameter of this request" in response.text


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=PENDING&status=FAILED", "status"),
        ("merchantReference=a&merchantReference=b", "merchantReference"),
        ("limit=5&limit=5", "limit"),
    ],
)
async def test_a_parameter_given_twice_is_refused_naming_it(
    api_client: httpx.AsyncClient, merchant: NewMerchant, query: str, field: str
) -> None:
    response = await api_client.get(f"{API}/payouts?{query}", headers=auth(merchant, ""))
    assert_error(response, 400, "VALIDATION_ERROR", field=field)
    assert "is given more than once" in response.text


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("/payouts?merchantReference=", "merchantReference"),
        ("/payouts?startingAfter=", "startingAfter"),
        ("/events?payoutId=", "payoutId"),
        ("/webhooks/deliveries?eventId=", "eventId"),
        ("/webhooks/deliveries?payoutId=", "payoutId"),
    ],
)
async def test_a_filter_given_empty_is_refused_naming_it(
    api_client: httpx.AsyncClient, merchant: NewMerchant, query: str, field: str
) -> None:
    response = await api_client.get(f"{API}{query}", headers=auth(merchant, ""))
    assert_error(response, 400, "VALIDATION_ERROR", field=field)


async def test_the_parameters_a_route_takes_still_work_together(
    api_client: httpx.AsyncClient, merchant: NewMerchant
) -> None:
    response = await api_client.get(
        f"{API}/payouts",
        params={"page": 1, "limit": 5, "status": "PENDING", "merchantReference": "query-1"},
        headers=auth(merchant, ""),
    )
    assert response.status_code == 200, response.text
    assert [p["merchantReference"] for p in response.json()["data"]["payouts"]] == ["query-1"]


async def test_every_operation_of_the_api_refuses_a_parameter_it_does_not_take(
    api_client: httpx.AsyncClient, settings: Settings
) -> None:
    """The check sits on the API's router: an operation added beside it would go unchecked."""
    operations = [
        (method.upper(), path.replace("{", "").replace("}", ""))
        for path, item in create_app(settings).openapi()["paths"].items()
        for method in item
    ]
    assert len(operations) > 20
    answers = {
        (method, path): (await api_client.request(method, f"{path}?unknownParameter=1")).status_code
        for method, path in operations
    }
    assert {operation for operation, status in answers.items() if status != 400} == set()


async def test_in_production_a_sandbox_control_answers_404_whatever_its_query(
    production_client: httpx.AsyncClient, merchant: NewMerchant
) -> None:
    response = await production_client.get(
        f"{API}/sandbox/requests?nonsense=1", headers=auth(merchant, "")
    )
    assert response.status_code == 404, response.text
