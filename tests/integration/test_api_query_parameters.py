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


UNKNOWN = "is not a query parameter of this request"
TWICE = "is given more than once"
EMPTY = "at least 1 character"
CONTROL = "must not contain control characters"
INVISIBLE = "an invisible character that changes how text reads"


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("/payouts?Status=FAILED", "Status", UNKNOWN),
        ("/payouts?created_from=2030-01-01", "created_from", UNKNOWN),
        ("/events?payout_id=00000000-0000-0000-0000-000000000000", "payout_id", UNKNOWN),
        ("/webhooks/deliveries?state=PARKED", "state", UNKNOWN),
        ("/balance?page=2", "page", UNKNOWN),
        ("/balance/history?=5", "query", "has a parameter with no name"),
        ("/payouts?status=PENDING&status=FAILED", "status", TWICE),
        ("/payouts?merchantReference=a&merchantReference=b", "merchantReference", TWICE),
        ("/payouts?limit=5&limit=5", "limit", TWICE),
        ("/payouts?merchantReference=", "merchantReference", EMPTY),
        ("/payouts?startingAfter=", "startingAfter", EMPTY),
        ("/events?payoutId=", "payoutId", EMPTY),
        ("/webhooks/deliveries?eventId=", "eventId", EMPTY),
        ("/webhooks/deliveries?payoutId=", "payoutId", EMPTY),
        # Trimmed before judged, as a body's text field is: spaces alone are empty.
        ("/payouts?merchantReference=%20", "merchantReference", EMPTY),
        ("/events?payoutId=%20%20", "payoutId", EMPTY),
        # A control character is refused as in a body, rather than matching nothing.
        ("/payouts?merchantReference=query%00-1", "merchantReference", CONTROL),
        ("/webhooks/deliveries?eventId=evt%1B", "eventId", CONTROL),
        # An information separator is a control character, not a space that trimming takes.
        ("/payouts?merchantReference=query-1%1F", "merchantReference", CONTROL),
        ("/payouts?merchantReference=query-1%E2%80%8B", "merchantReference", INVISIBLE),  # U+200B
    ],
)
async def test_a_parameter_unknown_given_twice_or_given_empty_is_refused_naming_it(
    api_client: httpx.AsyncClient, merchant: NewMerchant, query: str, field: str, message: str
) -> None:
    response = await api_client.get(f"{API}{query}", headers=auth(merchant, ""))
    assert_error(response, 400, "VALIDATION_ERROR", field=field)
    assert message in response.text


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


async def test_a_reference_filter_is_trimmed_as_the_reference_was_at_create(
    api_client: httpx.AsyncClient, merchant: NewMerchant
) -> None:
    """A payout created as `" query-1"` is `query-1`: looked up by the same string, it was not
    found (MariaDB ignored a trailing space, not a leading one)."""
    for spaced in (" query-1", "query-1 ", "\tquery-1\n"):
        response = await api_client.get(
            f"{API}/payouts", params={"merchantReference": spaced}, headers=auth(merchant, "")
        )
        assert response.status_code == 200, response.text
        found = [p["merchantReference"] for p in response.json()["data"]["payouts"]]
        assert found == ["query-1"], spaced


# Taken without an API key: a monitor's cache-buster must not make the service look dead, and
# the PSP signs the body, not the URL.
UNCHECKED = {f"{API}/health", f"{API}/ready", f"{API}/ipn/psp"}


async def test_every_operation_of_the_api_refuses_a_parameter_it_does_not_take(
    api_client: httpx.AsyncClient, merchant: NewMerchant, settings: Settings
) -> None:
    """The check sits in the API key's dependency: an operation added without it would go
    unchecked, and so would one that takes no key (those three are left alone on purpose)."""
    operations = [
        (method.upper(), path.replace("{", "").replace("}", ""))
        for path, item in create_app(settings).openapi()["paths"].items()
        for method in item
        if path not in UNCHECKED
    ]
    assert len(operations) > 20
    answers = {
        (method, path): (
            await api_client.request(
                method, f"{path}?unknownParameter=1", headers=auth(merchant, "")
            )
        ).status_code
        for method, path in operations
    }
    assert {operation for operation, status in answers.items() if status != 400} == set()


async def test_a_caller_without_a_valid_key_gets_its_401_whatever_its_query(
    api_client: httpx.AsyncClient,
) -> None:
    """The check ran before the key's: 400 told anyone without a key which parameters exist,
    and a bad key went uncounted."""
    for headers in ({}, {"X-API-KEY": "mpk_test_" + "u" * 43}):
        response = await api_client.get(f"{API}/payouts?Status=FAILED", headers=headers)
        assert response.status_code == 401, response.text


async def test_the_liveness_probe_takes_a_cache_buster(api_client: httpx.AsyncClient) -> None:
    response = await api_client.get(f"{API}/health?_=1733240000000")
    assert response.status_code == 200, response.text


async def test_in_production_a_sandbox_control_answers_404_whatever_its_query(
    production_client: httpx.AsyncClient, merchant: NewMerchant
) -> None:
    response = await production_client.get(
        f"{API}/sandbox/requests?nonsense=1", headers=auth(merchant, "")
    )
    assert response.status_code == 404, response.text
