"""Identifiers the caller chooses are case-sensitive (migration 0016): a merchantReference, an IPN's
eventId and pspReference. Under the tables' default case-insensitive collation "CASE-x" and
"case-x" were one key: a 409 DUPLICATE_REFERENCE, a filter that found the other payout, a whole
batch refused, an IPN answered duplicate and never applied, a current reference taken as stale.

Idempotency keys are not among them: the contract makes a key a UUID, and a UUID in upper and in
lower case is one key (test_api_idempotency.py::test_key_is_normalized_so_case_does_not_matter)."""

import uuid
from typing import Any

import httpx

from contracts.db.engine import SessionFactory, transaction
from contracts.messages import ApplyPspOutcome
from contracts.settings import Settings
from contracts.topology import APPLY_PSP_OUTCOME_KEY
from processor_service.handlers import Context, apply_psp_outcome
from tests.conftest import MerchantFactory
from tests.support.api_helpers import (
    API,
    assert_error,
    auth,
    create_payout,
    outbox_for_payout,
    payout_body,
    send_ipn,
)

CONTEXT = Context(correlation_id=None, retry_delay_ms=1000)
# A wallet account ending 0004: PENDING at the PSP until an IPN says otherwise.
AWAITS_IPN = "03001230004"


def _unique(prefix: str) -> str:
    """`prefix` and a suffix of mixed case, fresh for each test."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}-Ab"


async def _listed(
    client: httpx.AsyncClient, merchant: Any, merchant_reference: str
) -> list[tuple[str, str]]:
    response = await client.get(
        f"{API}/payouts",
        params={"merchantReference": merchant_reference},
        headers=auth(merchant, ""),
    )
    assert response.status_code == 200, response.text
    return [(p["id"], p["merchantReference"]) for p in response.json()["data"]["payouts"]]


async def _apply_outcomes(sessions: SessionFactory, payout_id: str) -> list[str | None]:
    """Apply the payout's outcome commands as the processor would (no relay runs here)."""
    statuses: list[str | None] = []
    for row in await outbox_for_payout(sessions, payout_id):
        if row.routing_key != APPLY_PSP_OUTCOME_KEY:
            continue
        async with transaction(sessions) as session:
            command = ApplyPspOutcome.model_validate_json(row.body)
            statuses.append(await apply_psp_outcome(session, command, CONTEXT))
    return statuses


async def test_references_differing_only_in_case_are_two_payouts(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    upper = _unique("CASE-X")
    lower = upper.lower()

    first = await create_payout(api_client, merchant, merchantReference=upper)
    # Before the lower-case payout exists, its reference finds nothing.
    assert await _listed(api_client, merchant, lower) == []
    second = await create_payout(api_client, merchant, merchantReference=lower)

    assert first["id"] != second["id"]
    assert await _listed(api_client, merchant, upper) == [(first["id"], upper)]
    assert await _listed(api_client, merchant, lower) == [(second["id"], lower)]
    # The exact reference is still one payout.
    again = await api_client.post(
        f"{API}/payouts", json=payout_body(merchantReference=lower), headers=auth(merchant)
    )
    assert_error(again, 409, "DUPLICATE_REFERENCE")


async def test_a_batch_with_references_differing_only_in_case_creates_each(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    existing = await create_payout(api_client, merchant, merchantReference=_unique("E-X"))
    upper = _unique("B-X")
    references = [upper, upper.lower(), existing["merchantReference"].lower()]

    response = await api_client.post(
        f"{API}/payouts/batch",
        json={"payouts": [payout_body(merchantReference=r) for r in references]},
        headers=auth(merchant),
    )

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["summary"] == {"created": 3, "duplicate": 0, "invalid": 0}
    assert [(r["status"], r["payout"]["merchantReference"]) for r in data["results"]] == [
        ("created", reference) for reference in references
    ]


async def test_ipns_whose_event_ids_differ_only_in_case_are_both_applied(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    merchant = await make_merchant()
    first = await create_payout(api_client, merchant, accountNumber=AWAITS_IPN)
    second = await create_payout(api_client, merchant, accountNumber=AWAITS_IPN)
    event_id = _unique("EVT-abc")
    other_event_id = event_id.swapcase()

    answers = [
        await send_ipn(api_client, settings.psp_secret, first["id"], "FAILED", event_id),
        await send_ipn(api_client, settings.psp_secret, second["id"], "FAILED", other_event_id),
    ]

    assert [(r.status_code, r.json()["data"]) for r in answers] == [
        (200, {"eventId": event_id, "payoutId": first["id"], "duplicate": False}),
        (200, {"eventId": other_event_id, "payoutId": second["id"], "duplicate": False}),
    ]
    assert await _apply_outcomes(sessions, first["id"]) == ["FAILED"]
    assert await _apply_outcomes(sessions, second["id"]) == ["FAILED"]


async def test_a_psp_reference_differing_only_in_case_from_an_earlier_attempts_is_current(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    merchant = await make_merchant()
    payout = await create_payout(api_client, merchant, accountNumber=AWAITS_IPN)
    earlier = _unique("PSP-REF")
    failed = await send_ipn(
        api_client, settings.psp_secret, payout["id"], "FAILED", pspReference=earlier
    )
    assert failed.status_code == 200, failed.text
    assert await _apply_outcomes(sessions, payout["id"]) == ["FAILED"]
    reinitiated = await api_client.post(
        f"{API}/payouts/{payout['id']}/reinitiate", headers=auth(merchant)
    )
    assert reinitiated.status_code == 200, reinitiated.text

    current = await send_ipn(
        api_client, settings.psp_secret, payout["id"], "SUCCESS", pspReference=earlier.lower()
    )

    assert current.status_code == 200, current.text
    assert current.json()["data"]["duplicate"] is False
    # The earlier attempt's exact reference is still stale.
    stale = await send_ipn(
        api_client, settings.psp_secret, payout["id"], "SUCCESS", pspReference=earlier
    )
    assert_error(stale, 409, "STALE_PSP_REFERENCE", "pspReference")
