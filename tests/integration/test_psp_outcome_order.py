"""Accepted PSP outcomes are applied in the order the API accepted them, by whichever command
of the payout the processor handles first. The handlers are called directly here, with no relay
running, so the order of the commands is the test's to choose."""

import httpx
from sqlalchemy import select

from contracts.db.engine import SessionFactory, transaction
from contracts.db.models import PayoutEvent
from contracts.messages import ApplyPspOutcome, ProcessPayout
from contracts.settings import Settings
from contracts.topology import APPLY_PSP_OUTCOME_KEY, PROCESS_PAYOUT_KEY
from processor_service.handlers import Context, apply_psp_outcome, process_payout
from tests.conftest import MerchantFactory
from tests.support.api_helpers import API, auth, outbox_for_payout, payout_body, send_ipn

CONTEXT = Context(correlation_id=None, retry_delay_ms=1000)


async def _payout(client: httpx.AsyncClient, make_merchant: MerchantFactory, suffix: str) -> str:
    merchant = await make_merchant()
    body = payout_body(accountNumber=f"123456789012{suffix}")
    response = await client.post(f"{API}/payouts", json=body, headers=auth(merchant))
    assert response.status_code == 201, response.text
    payout_id: str = response.json()["data"]["id"]
    return payout_id


async def _ipn(client: httpx.AsyncClient, settings: Settings, payout_id: str, status: str) -> None:
    response = await send_ipn(client, settings.psp_secret, payout_id, status)
    assert response.status_code == 200, response.text


async def _event_types(sessions: SessionFactory, payout_id: str) -> list[str]:
    async with sessions() as session:
        types = await session.scalars(
            select(PayoutEvent.type)
            .where(PayoutEvent.payout_id == payout_id)
            .order_by(PayoutEvent.created_at)
        )
        return [event_type.removeprefix("payout.") for event_type in types]


async def _commands(sessions: SessionFactory, payout_id: str, routing_key: str) -> list[bytes]:
    return [
        row.body
        for row in await outbox_for_payout(sessions, payout_id)
        if row.routing_key == routing_key
    ]


async def test_the_reversal_command_arriving_first_applies_success_then_reversal(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    payout_id = await _payout(api_client, make_merchant, "0004")
    await _ipn(api_client, settings, payout_id, "SUCCESS")
    await _ipn(api_client, settings, payout_id, "REVERSED")
    success, reversal = await _commands(sessions, payout_id, APPLY_PSP_OUTCOME_KEY)

    async with transaction(sessions) as session:
        status = await apply_psp_outcome(
            session, ApplyPspOutcome.model_validate_json(reversal), CONTEXT
        )
    async with transaction(sessions) as session:
        late = await apply_psp_outcome(
            session, ApplyPspOutcome.model_validate_json(success), CONTEXT
        )

    assert (status, late) == ("REVERSED", None)
    assert await _event_types(sessions, payout_id) == ["created", "succeeded", "reversed"]


async def test_an_outcome_the_psp_sent_wins_over_the_scenario(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    """0003 would fail at processing, but the PSP already said SUCCESS for this attempt."""
    payout_id = await _payout(api_client, make_merchant, "0003")
    await _ipn(api_client, settings, payout_id, "SUCCESS")
    [process] = await _commands(sessions, payout_id, PROCESS_PAYOUT_KEY)

    async with transaction(sessions) as session:
        status = await process_payout(session, ProcessPayout.model_validate_json(process), CONTEXT)

    assert status == "SUCCESS"
    assert await _event_types(sessions, payout_id) == ["created", "succeeded"]


async def test_an_outcome_command_of_an_earlier_attempt_changes_nothing(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    payout_id = await _payout(api_client, make_merchant, "0004")
    await _ipn(api_client, settings, payout_id, "SUCCESS")
    [command] = await _commands(sessions, payout_id, APPLY_PSP_OUTCOME_KEY)
    earlier = ApplyPspOutcome.model_validate_json(command).model_copy(update={"hold_cycle": 0})

    async with transaction(sessions) as session:
        assert await apply_psp_outcome(session, earlier, CONTEXT) is None

    assert await _event_types(sessions, payout_id) == ["created"]
